"""The GRU loop `NarmGRU` runs on CPU: padding skipped by phases, gradient written out.

Keras' GRU (`reset_after=True`, tanh/sigmoid) over a masked batch, as two while loops:
- Rows are sorted by their last valid step, longest first. Phase `p` of `phases` steps only
  the first `(phases - p) / phases` of the rows, from where the rows it dropped are done: with
  right padding, most padded steps are never computed (the masked-step semantics hold for any
  mask; other layouts just skip less).
- The backward loop is hand-written and carries only the serial part (the state's gradient
  through `h @ U`); the input and weight gradients are each one large matmul after it. Left to
  autodiff, each backward step also accumulated `dU` and copied whole loop buffers.
"""

from __future__ import annotations

import tensorflow as tf


def gru_sequence(inputs, mask, initial_state, kernel, recurrent_kernel, bias,
                 phases: int = 4, row_blocks: int = 1):
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
    depth, units = inputs.shape[2], kernel.shape[-1] // 3
    if mask is None:
        mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
    # A row is done after its last valid step; sorting puts the longest first.
    ends = tf.reduce_max(tf.where(mask, tf.range(1, steps + 1)[None, :], 0), axis=1)
    order = tf.argsort(ends, direction="DESCENDING", stable=True)
    inverse = tf.math.invert_permutation(order)
    ends = tf.gather(ends, order)
    mask = tf.gather(mask, order)
    rows = [batch * (phases - p) // phases for p in range(phases)]
    if isinstance(batch, int):
        rows = [r for i, r in enumerate(rows) if r > 0 and (i == 0 or r < rows[i - 1])] or [0]
    # Phase p steps rows [0, rows[p]) over [starts[p], stops[p]): the rows after rows[p + 1]
    # are done by stops[p] (sorted, so their longest is the first of them).
    stops = [tf.reduce_max(tf.pad(ends[rows[p + 1]:], [[0, 1]])) for p in range(len(rows) - 1)]
    stops.append(tf.convert_to_tensor(steps, tf.int32))
    starts = [tf.constant(0, tf.int32)] + stops[:-1]
    valid = tf.cast(mask, inputs.dtype)[..., None]
    kernel, recurrent_kernel, bias = (tf.convert_to_tensor(v, inputs.dtype)
                                      for v in (kernel, recurrent_kernel, bias))

    def blocks(count):
        bounds = [count * i // row_blocks for i in range(row_blocks + 1)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def state_shape(count, width):
        return tf.TensorShape([count if isinstance(count, int) else None, width])

    @tf.custom_gradient
    def run(unsorted_inputs, unsorted_state, kernel, recurrent_kernel, bias):
        # Sorted inside, so the gradients leave in the caller's row order, dense.
        inputs, initial_state = tf.gather(unsorted_inputs, order), tf.gather(unsorted_state, order)
        input_bias, recurrent_bias = bias[0], bias[1]
        projected = tf.reshape(tf.matmul(tf.reshape(inputs, [-1, depth]), kernel) + input_bias,
                               [batch, steps, 3 * units])
        sequence = tf.TensorArray(inputs.dtype, size=steps, element_shape=state_shape(batch, units))
        state, saved = initial_state, []
        for p, count in enumerate(rows):
            done, spans, stop = state[count:], blocks(count), stops[p]

            def forward_step(t, states, sequence, *gates, spans=spans, done=done):
                x_t, valid_t = projected[:, t], valid[:, t]
                results = []
                for (start, end), h in zip(spans, states, strict=True):
                    inner = tf.matmul(h, recurrent_kernel) + recurrent_bias
                    x_z, x_r, x_h = tf.split(x_t[start:end], 3, axis=-1)
                    inner_z, inner_r, inner_h = tf.split(inner, 3, axis=-1)
                    z = tf.sigmoid(x_z + inner_z)
                    r = tf.sigmoid(x_r + inner_r)
                    candidate = tf.tanh(x_h + r * inner_h)
                    h_next = h + valid_t[start:end] * (1 - z) * (candidate - h)
                    results.append((h_next, z, r, candidate, inner_h))
                states = [result[0] for result in results]
                new_gates = [tf.concat([result[i] for result in results], axis=0)
                             for i in range(1, 5)]
                return (t + 1, states, sequence.write(t, tf.concat(states + [done], axis=0)),
                        *[array.write(t, g) for array, g in zip(gates, new_gates, strict=True)])

            gates = [tf.TensorArray(inputs.dtype, size=steps,
                                    element_shape=state_shape(count, units)) for _ in range(4)]
            _, states, sequence, *gates = tf.while_loop(
                lambda t, *_, stop=stop: t < stop, forward_step,
                (starts[p], [state[start:end] for start, end in spans], sequence, *gates),
                maximum_iterations=steps)
            saved.append(gates)
            state = tf.concat(states + [done], axis=0)
        sequence = sequence.stack()     # time-major
        final_state = state

        def gradient(d_sequence, d_final):
            d_sequence = (tf.zeros_like(sequence) if d_sequence is None else tf.transpose(
                tf.gather(tf.convert_to_tensor(d_sequence), order), [1, 0, 2]))
            d_state = (tf.zeros_like(final_state) if d_final is None else
                       tf.gather(tf.convert_to_tensor(d_final), order))
            previous = tf.concat([initial_state[None], sequence[:-1]], axis=0)
            valid_time_major = tf.transpose(valid, [1, 0, 2])
            arrays = [tf.TensorArray(inputs.dtype, size=steps,
                                     element_shape=state_shape(batch, 3 * units))
                      for _ in range(2)]
            for p in reversed(range(len(rows))):
                count = rows[p]
                zeros = tf.zeros([batch - count, 3 * units], inputs.dtype)
                spans, begin = blocks(count), starts[p]

                def backward_step(t, d_state, d_inputs, d_inners, spans=spans, gates=saved[p],
                                  count=count, zeros=zeros):
                    t = t - 1
                    g_all = d_state + d_sequence[t]
                    z_t, r_t, candidate_t, inner_h_t = (array.read(t) for array in gates)
                    h_before, valid_t = previous[t], valid_time_major[t]
                    d_states, d_x, d_inner = [], [], []
                    for start, end in spans:
                        g = g_all[start:end]
                        z, r = z_t[start:end], r_t[start:end]
                        candidate, inner_h = candidate_t[start:end], inner_h_t[start:end]
                        g_valid = g * valid_t[start:end]
                        d_candidate = g_valid * (1 - z)
                        d_h = d_candidate * (1 - candidate * candidate)
                        d_z = g_valid * (h_before[start:end] - candidate) * z * (1 - z)
                        d_r = d_h * inner_h * r * (1 - r)
                        inner = tf.concat([d_z, d_r, d_h * r], axis=-1)
                        d_states.append(g - d_candidate + tf.matmul(inner, recurrent_kernel,
                                                                    transpose_b=True))
                        d_x.append(tf.concat([d_z, d_r, d_h], axis=-1))
                        d_inner.append(inner)
                    return (t, tf.concat(d_states + [g_all[count:]], axis=0),
                            d_inputs.write(t, tf.concat(d_x + [zeros], axis=0)),
                            d_inners.write(t, tf.concat(d_inner + [zeros], axis=0)))

                _, d_state, *arrays = tf.while_loop(
                    lambda t, *_, begin=begin: t > begin, backward_step,
                    (stops[p], d_state, *arrays),
                    maximum_iterations=steps)
            d_projected = tf.reshape(tf.transpose(arrays[0].stack(), [1, 0, 2]),
                                     [-1, 3 * units])
            d_inner = tf.reshape(arrays[1].stack(), [-1, 3 * units])
            d_inputs = tf.reshape(tf.matmul(d_projected, kernel, transpose_b=True),
                                  [batch, steps, depth])
            d_kernel = tf.matmul(tf.reshape(inputs, [-1, depth]), d_projected, transpose_a=True)
            d_recurrent = tf.matmul(tf.reshape(previous, [-1, units]), d_inner, transpose_a=True)
            d_bias = tf.stack([tf.reduce_sum(d_projected, 0), tf.reduce_sum(d_inner, 0)])
            return (tf.gather(d_inputs, inverse), tf.gather(d_state, inverse), d_kernel,
                    d_recurrent, d_bias)

        outputs = (tf.gather(tf.transpose(sequence, [1, 0, 2]), inverse),
                   tf.gather(final_state, inverse))
        return outputs, gradient

    return run(inputs, initial_state, kernel, recurrent_kernel, bias)
