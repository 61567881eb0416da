"""The GRU step (`gru_step`, written once) and the loop `NarmGRU` runs on CPU (`gru_sequence`):
padding skipped by phases, gradient written out.

Keras' GRU (`reset_after=True`, tanh/sigmoid) over a masked batch, as two while loops:
- Rows are sorted by their last valid step, longest first. Phase `p` of `phases` steps only
  the first `(phases - p) / phases` of the rows, from where the rows it dropped are done: with
  right padding, most padded steps are never computed (the masked-step semantics hold for any
  mask; other layouts just skip less).
- The backward loop is hand-written and carries only the serial part (the state's gradient
  through `h @ U`); the input and weight gradients are each one large matmul after it. Left to
  autodiff, each backward step also accumulated `dU` and copied whole loop buffers.

Kept because it pays for itself: in the same DIGINETICA-sized model (43,097 items,
batch 512, geometric prefix lengths of mean 4.5, 4 alternating rounds of
`benchmarks/train_speed.py --rounds=4 --lengths=geometric --settings=fit,fit_keras_gru`, measured
on a loaded machine, load 4-6), a step took 582 ms wall (median) with this loop against 645 ms
with `keras.layers.GRU`'s own (10% less; per-round ratios 0.83, 0.99, 1.03, 0.82), and 309
against 357 ms of CPU time (13% less).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

PHASES = 4  # row sets a batch is stepped in by default
# Below this many rows per replica a batch is stepped as one set (`phases_for`).
PHASED_BATCH = 128


def phases_for(batch_size: int) -> int:
    """The row sets a batch of `batch_size` rows (per replica) is stepped in: PHASES, or 1
    below PHASED_BATCH rows. Each phase adds a forward and a backward loop to the traced step (about
    3 s of tracing a model here); in batches of 64 rows the padded steps they skip saved no
    measurable step time (9.4-9.7 ms a step either way, 120 items, 16 units; 25-35 ms at 2,808
    items, 100 units, under XLA)."""
    return PHASES if batch_size >= PHASED_BATCH else 1


def gru_step(x_zr, x_h, state, recurrent_kernel, recurrent_bias):
    """One step of Keras' GRU (`reset_after=True`, sigmoid gates, tanh candidate):
    `z, r = sigmoid(x_zr + h U_zr + b_zr)`, `c = tanh(x_h + r (h U_h + b_h))`,
    `h' = z h + (1 - z) c`.

    Args:
        x_zr, x_h: the step's input projection `x W + b_input`, `[b, 2 units]` and `[b, units]`.
        state: `h`, `[b, units]`; recurrent_kernel `[units, 3 units]`; recurrent_bias
            `[3 units]` (gates in Keras' order z, r, h).
    Returns `(h' [b, units], (z, r, c, h U_h + b_h))`: the gates a backward pass needs.
    """
    units = recurrent_kernel.shape[0]
    inner = tf.matmul(state, recurrent_kernel) + recurrent_bias
    inner_zr, inner_h = tf.split(inner, [2 * units, units], axis=-1)
    z, r = tf.split(tf.sigmoid(x_zr + inner_zr), 2, axis=-1)
    candidate = tf.tanh(x_h + r * inner_h)
    return candidate + z * (state - candidate), (z, r, candidate, inner_h)


class PhasePlan(NamedTuple):
    """Which rows each phase steps, over which steps (rows sorted longest first)."""
    batch: int | tf.Tensor
    steps: int | tf.Tensor
    order: tf.Tensor        # [b]: sorted row -> caller's row
    inverse: tf.Tensor      # [b]: caller's row -> sorted row
    mask: tf.Tensor         # [b, t, 1] bool, sorted rows
    rows: list              # phase p steps rows [0, rows[p])
    starts: list            # ... over steps [starts[p], stops[p])
    stops: list


def phase_plan(mask, batch, steps, phases: int) -> PhasePlan:
    """Sorts rows by their last valid step and splits the steps into `phases` shrinking row
    sets: phase `p` stops where the rows it drops next are all done."""
    ends = tf.reduce_max(tf.where(mask, tf.range(1, steps + 1)[None, :], 0), axis=1)
    order = tf.argsort(ends, direction="DESCENDING", stable=True)
    ends = tf.gather(ends, order)
    rows = [batch * (phases - p) // phases for p in range(phases)]
    if isinstance(batch, int):
        rows = [r for i, r in enumerate(rows) if r > 0 and (i == 0 or r < rows[i - 1])] or [0]
    # The rows after rows[p + 1] are done by stops[p] (sorted: their longest is the first).
    stops = [tf.reduce_max(tf.pad(ends[rows[p + 1]:], [[0, 1]])) for p in range(len(rows) - 1)]
    stops.append(tf.convert_to_tensor(steps, tf.int32))
    starts = [tf.constant(0, tf.int32)] + stops[:-1]
    return PhasePlan(batch, steps, order, tf.math.invert_permutation(order),
                     tf.gather(mask, order)[..., None], rows, starts, stops)


def gru_sequence(inputs, mask, initial_state, kernel, recurrent_kernel, bias,
                 phases: int = PHASES, row_blocks: int = 1):
    """Keras' GRU outputs `(sequence [b, t, units], final_state [b, units])`.

    Args:
        inputs: `[b, t, d]` float32; `mask`: `[b, t]` bool (None: all valid);
        initial_state: `[b, units]`; kernel `[d, 3 units]`, recurrent_kernel
            `[units, 3 units]`, bias `[2, 3 units]` (input and recurrent rows), as
            `keras.layers.GRUCell(reset_after=True)` holds them.
        phases: row sets per batch (1 = every row at every step).
        row_blocks: independent blocks of rows per step within a phase.

    At a masked step a row keeps its state (its output repeats it), as in Keras.
    """
    batch = inputs.shape[0] if inputs.shape[0] is not None else tf.shape(inputs)[0]
    steps = inputs.shape[1] if inputs.shape[1] is not None else tf.shape(inputs)[1]
    if mask is None:
        mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
    plan = phase_plan(mask, batch, steps, phases)

    @tf.custom_gradient
    def run(unsorted_inputs, unsorted_state, kernel, recurrent_kernel, bias):
        # Sorted inside, so the gradients leave in the caller's row order, dense.
        inputs = tf.gather(unsorted_inputs, plan.order)
        initial_state = tf.gather(unsorted_state, plan.order)
        weights = (kernel, recurrent_kernel, bias)
        sequence, final_state, gates = _forward(plan, inputs, initial_state, weights, row_blocks)

        def gradient(d_sequence, d_final):
            return _backward(plan, inputs, initial_state, sequence, gates, weights, row_blocks,
                             d_sequence, d_final)

        outputs = (tf.gather(tf.transpose(sequence, [1, 0, 2]), plan.inverse),
                   tf.gather(final_state, plan.inverse))
        return outputs, gradient

    weights = (tf.convert_to_tensor(v, inputs.dtype) for v in (kernel, recurrent_kernel, bias))
    return run(inputs, initial_state, *weights)


def _blocks(count, row_blocks):
    bounds = [count * i // row_blocks for i in range(row_blocks + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _state_shape(count, width):
    return tf.TensorShape([count if isinstance(count, int) else None, width])


def _forward(plan, inputs, initial_state, weights, row_blocks):
    """Sorted rows -> `(sequence [t, b, units] time-major, final state [b, units], the gates
    of each phase)`: phase by phase, each a while loop of `gru_step` over its rows."""
    kernel, recurrent_kernel, bias = weights
    batch, steps, depth, units = plan.batch, plan.steps, inputs.shape[2], kernel.shape[-1] // 3
    projected = tf.reshape(tf.matmul(tf.reshape(inputs, [-1, depth]), kernel) + bias[0],
                           [batch, steps, 3 * units])
    sequence = tf.TensorArray(inputs.dtype, size=steps, element_shape=_state_shape(batch, units))
    state, saved = initial_state, []
    for p, count in enumerate(plan.rows):
        done, spans = state[count:], _blocks(count, row_blocks)

        def forward_step(t, states, sequence, *gates, spans=spans, done=done):
            x_zr, x_h = tf.split(projected[:, t], [2 * units, units], axis=-1)
            valid_t = plan.mask[:, t]
            results = []
            for (start, end), h in zip(spans, states, strict=True):
                h_next, step_gates = gru_step(x_zr[start:end], x_h[start:end], h,
                                              recurrent_kernel, bias[1])
                results.append((tf.where(valid_t[start:end], h_next, h), *step_gates))
            states = [result[0] for result in results]
            new_gates = [tf.concat([result[i] for result in results], axis=0) for i in range(1, 5)]
            return (t + 1, states, sequence.write(t, tf.concat(states + [done], axis=0)),
                    *[array.write(t, g) for array, g in zip(gates, new_gates, strict=True)])

        gates = [tf.TensorArray(inputs.dtype, size=steps, element_shape=_state_shape(count, units))
                 for _ in range(4)]
        _, states, sequence, *gates = tf.while_loop(
            lambda t, *_, stop=plan.stops[p]: t < stop, forward_step,
            (plan.starts[p], [state[start:end] for start, end in spans], sequence, *gates),
            maximum_iterations=steps)
        saved.append(gates)
        state = tf.concat(states + [done], axis=0)
    return sequence.stack(), state, saved


def _backward(plan, inputs, initial_state, sequence, saved, weights, row_blocks,
              d_sequence, d_final):
    """The gradients of `run`'s inputs (caller's row order): one backward while loop per phase
    carries the state's gradient; the input and weight gradients are matmuls after it."""
    kernel, recurrent_kernel, _ = weights
    batch, steps, depth = plan.batch, plan.steps, inputs.shape[2]
    units = kernel.shape[-1] // 3
    d_sequence = (tf.zeros_like(sequence) if d_sequence is None else tf.transpose(
        tf.gather(tf.convert_to_tensor(d_sequence), plan.order), [1, 0, 2]))
    d_state = (tf.zeros_like(sequence[0]) if d_final is None else
               tf.gather(tf.convert_to_tensor(d_final), plan.order))
    previous = tf.concat([initial_state[None], sequence[:-1]], axis=0)
    valid = tf.transpose(tf.cast(plan.mask, inputs.dtype), [1, 0, 2])
    arrays = [tf.TensorArray(inputs.dtype, size=steps,
                             element_shape=_state_shape(batch, 3 * units)) for _ in range(2)]
    for p in reversed(range(len(plan.rows))):
        count = plan.rows[p]
        spans, zeros = _blocks(count, row_blocks), tf.zeros([batch - count, 3 * units],
                                                            inputs.dtype)

        def backward_step(t, d_state, d_inputs, d_inners, spans=spans, gates=saved[p],
                          count=count, zeros=zeros):
            t = t - 1
            g_all = d_state + d_sequence[t]
            step_gates = [array.read(t) for array in gates]
            d_states, d_x, d_inner = [], [], []
            for start, end in spans:
                g = g_all[start:end]
                d_candidate, d_projection, inner = _step_gradient(
                    g * valid[t][start:end], previous[t][start:end],
                    [gate[start:end] for gate in step_gates])
                d_states.append(g - d_candidate + tf.matmul(inner, recurrent_kernel,
                                                            transpose_b=True))
                d_x.append(d_projection)
                d_inner.append(inner)
            return (t, tf.concat(d_states + [g_all[count:]], axis=0),
                    d_inputs.write(t, tf.concat(d_x + [zeros], axis=0)),
                    d_inners.write(t, tf.concat(d_inner + [zeros], axis=0)))

        _, d_state, *arrays = tf.while_loop(
            lambda t, *_, begin=plan.starts[p]: t > begin, backward_step,
            (plan.stops[p], d_state, *arrays), maximum_iterations=steps)
    d_projected = tf.reshape(tf.transpose(arrays[0].stack(), [1, 0, 2]), [-1, 3 * units])
    d_inner = tf.reshape(arrays[1].stack(), [-1, 3 * units])
    d_inputs = tf.reshape(tf.matmul(d_projected, kernel, transpose_b=True), [batch, steps, depth])
    d_kernel = tf.matmul(tf.reshape(inputs, [-1, depth]), d_projected, transpose_a=True)
    d_recurrent = tf.matmul(tf.reshape(previous, [-1, units]), d_inner, transpose_a=True)
    d_bias = tf.stack([tf.reduce_sum(d_projected, 0), tf.reduce_sum(d_inner, 0)])
    return (tf.gather(d_inputs, plan.inverse), tf.gather(d_state, plan.inverse), d_kernel,
            d_recurrent, d_bias)


def _step_gradient(g_valid, h_before, gates):
    """`gru_step`'s gradient for the output gradient `g_valid` of a valid step: `(the part
    through (1 - z) c, d(x W + b_input) [b, 3 units], d(h U + b_recurrent) [b, 3 units])`."""
    z, r, candidate, inner_h = gates
    d_candidate = g_valid * (1 - z)
    d_h = d_candidate * (1 - candidate * candidate)
    d_z = g_valid * (h_before - candidate) * z * (1 - z)
    d_r = d_h * inner_h * r * (1 - r)
    d_projection = tf.concat([d_z, d_r, d_h], axis=-1)
    return d_candidate, d_projection, tf.concat([d_z, d_r, d_h * r], axis=-1)
