"""NARM layers: the shared item embedding with its bilinear decoder (eq. 10), attention (eq. 6-8).

Batches are right-padded with item 0 (padding, never a valid item). Shapes: `[batch, max_len]`
item ids, `[batch, max_len, hidden]` GRU states, `[batch, num_items + 1]` scores (column 0 is
padding and always scores `PADDING_SCORE`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Finite, so softmax and cross-entropy stay finite; far below any real logit.
PADDING_SCORE = -1e9
_PADDING_SCORE_FLOAT16 = -3e4


def padding_score_bias(num_scores: int, dtype: str = "float32"):
    """Constant row `[num_scores]`: `PADDING_SCORE` at index 0, zeros elsewhere.

    The padding column's score: one more column of the product in `ItemEmbedding`'s decode
    mode, an add (which fuses into the following softmax) in `PaddingScoreMask`.
    """
    value = _PADDING_SCORE_FLOAT16 if dtype in ("float16",) else PADDING_SCORE
    bias = np.zeros((num_scores,), dtype=dtype)
    bias[0] = value
    return ops.convert_to_tensor(bias, dtype=dtype)


@keras.saving.register_keras_serializable(package="narm_tf")
class ItemEmbedding(keras.layers.Embedding):
    """Item embedding whose `decode` mode scores every item with the same matrix (eq. 10).

    `mode="embed"` (default): item ids `[batch, max_len]` -> embeddings `[batch, max_len, D]`,
    with a padding mask when `mask_zero=True`.
    `mode="decode"`: queries `[batch, D]` (already `B c_t`) -> scores `[batch, input_dim]`,
    `S_i = emb_i^T (B c_t)`, with the padding column 0 set to `PADDING_SCORE`.

    One layer (one variable) serves both ends of the model, so the model saves as `.keras`
    (a separate decoder layer holding a reference to the embedding layer does not).

    Example:
    ```python
    embedding = ItemEmbedding(num_items + 1, 50, mask_zero=True, name="item_embedding")
    embedded = embedding(item_ids)                 # [batch, max_len, 50]
    scores = embedding(query, mode="decode")       # [batch, num_items + 1]
    ```
    """

    def call(self, inputs, mode: str = "embed"):
        if mode == "embed":
            return super().call(inputs)
        if mode != "decode":
            raise ValueError(f"ItemEmbedding mode must be 'embed' or 'decode', got {mode!r}")
        # The padding score rides in the product as one more column, `[q, 1] [E', b]^T` with
        # row 0 of `E'` zeroed and `b = (PADDING_SCORE, 0, ..., 0)`: a separate add of `b`
        # would be one more full pass over the `[batch, N + 1]` scores.
        query = ops.cast(inputs, self.compute_dtype)
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        bias = ops.expand_dims(padding_score_bias(self.input_dim, self.compute_dtype), -1)
        is_padding = ops.expand_dims(ops.arange(self.input_dim) == 0, -1)
        table = ops.concatenate(
            [ops.where(is_padding, ops.zeros_like(embeddings), embeddings), bias], axis=-1)
        query = ops.concatenate([query, ops.ones_like(query[..., :1])], axis=-1)
        return ops.matmul(query, ops.transpose(table))

    def compute_mask(self, inputs, mask=None):
        # Decode-mode inputs are float queries: the scores carry no mask.
        if "int" not in str(keras.backend.standardize_dtype(inputs.dtype)):
            return None
        return super().compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape, mode: str = "embed"):
        if mode == "decode":
            return (*input_shape[:-1], self.input_dim)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode: str = "embed"):
        if mode == "decode":
            shape = self.compute_output_shape(inputs.shape, mode="decode")
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package="narm_tf")
class PaddingScoreMask(keras.layers.Layer):
    """Scores `[batch, num_items + 1]` -> the same with column 0 (padding) at `PADDING_SCORE`."""

    def call(self, scores):
        return scores + padding_score_bias(scores.shape[-1], self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="narm_tf")
class PhiloxDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` drawing its random bits with Philox (same inputs, outputs, mask).

    Under XLA on CPU, TF's default stateless algorithm (`auto_select`, used by Keras' dropout)
    compiles to a generator about 100x slower than Philox: on the `[512, 19, 50]` embedding
    dropout it cost more than the whole decoder. Other backends, or `noise_shape`, use Keras'.
    """

    def call(self, inputs, training=False):
        if (not training or self.rate == 0 or self.noise_shape is not None
                or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = self.seed_generator.next()
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        noise = tf.random.stateless_uniform(tf.shape(inputs), seed=seed, alg="philox")
        kept = inputs / ops.cast(1.0 - self.rate, inputs.dtype)
        return tf.where(noise >= self.rate, kept, tf.zeros_like(inputs))


@keras.saving.register_keras_serializable(package="narm_tf")
class NarmAttention(keras.layers.Layer):
    """Attention (eq. 6-8): `alpha_tj = v^T sigmoid(A1 h_t + A2 h_j)`, `c_l = sum_j alpha_tj h_j`.

    Call: `attention(hidden_states, final_state, mask=None)` with hidden states
    `[batch, max_len, H]`, the final state `h_t` `[batch, H]` and a boolean mask
    `[batch, max_len]` (taken from the hidden states' Keras mask when not given; all valid
    when neither is).
    Returns `(c_l [batch, H], attention_weights [batch, max_len])`; weights are 0 at padding.

    Args:
        units: size of the latent space of `A1`, `A2` and `v` (default: H, as the authors' code).
        normalize: `None` (the paper: raw alpha, as the authors' code) or `"softmax"` (a softmax
            over the valid positions).

    `A1`, `A2` and `v` have no bias, as in the authors' code.
    """

    def __init__(self, units: int | None = None, normalize: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if normalize not in (None, "softmax"):
            raise ValueError(f"normalize must be None or 'softmax', got {normalize!r}")
        self.units = units
        self.normalize = normalize

    def build(self, hidden_states_shape, final_state_shape=None):
        hidden = hidden_states_shape[-1]
        units = self.units or hidden
        self.a1 = self.add_weight(shape=(hidden, units), initializer="glorot_uniform", name="a1")
        self.a2 = self.add_weight(shape=(hidden, units), initializer="glorot_uniform", name="a2")
        self.v = self.add_weight(shape=(units, 1), initializer="glorot_uniform", name="v")

    def call(self, hidden_states, final_state, mask=None, hidden_states_mask=None):
        # Keras fills `hidden_states_mask` from the GRU output's mask (a layer with several
        # tensor arguments gets `<argument>_mask`, not `mask`); `mask` is for explicit calls.
        mask = hidden_states_mask if mask is None else mask
        if mask is None:
            mask = ops.ones(ops.shape(hidden_states)[:2], dtype="bool")
        mask = ops.cast(mask, hidden_states.dtype)
        query = ops.expand_dims(ops.matmul(final_state, self.a1), 1)       # [b, 1, u]
        keys = ops.matmul(hidden_states, self.a2)                          # [b, T, u]
        alpha = ops.squeeze(ops.matmul(ops.sigmoid(query + keys), self.v), -1)  # [b, T]
        if self.normalize == "softmax":
            alpha = ops.softmax(ops.where(mask > 0, alpha, PADDING_SCORE), axis=-1)
        alpha = alpha * mask
        local = ops.sum(ops.expand_dims(alpha, -1) * hidden_states, axis=1)  # [b, H]
        return local, alpha

    def compute_mask(self, hidden_states, mask=None):
        return None

    def compute_output_shape(self, hidden_states_shape, final_state_shape=None):
        batch, max_len, hidden = hidden_states_shape
        return (batch, hidden), (batch, max_len)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="narm_tf")
class NarmGRU(keras.layers.GRU):
    """`keras.layers.GRU` (same variables, outputs and saved weights) that, on CPU, steps the
    batch as `row_blocks` independent blocks of rows in one loop.

    A GRU step's matmuls are small (`[512, 100] x [100, 300]`), so under XLA on CPU each runs on
    one core, and the 19 steps are a serial chain, forward and backward. Blocks of rows are
    independent chains: XLA's executor runs their matmuls side by side. On GPU (where Keras
    picks cuDNN) and for settings this loop does not cover (dropout, `reset_after=False`, no
    bias, unrolled, backwards, stateful, another backend) it is `keras.layers.GRU`.

    Args:
        row_blocks: blocks of rows per step (default 2, one per core of the reference machine;
            1 = Keras' own loop).
    """

    def __init__(self, units, row_blocks: int = 2, **kwargs):
        super().__init__(units, **kwargs)
        if row_blocks < 1:
            raise ValueError(f"row_blocks must be >= 1, got {row_blocks}")
        self.row_blocks = row_blocks

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._steps_row_blocks():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        import tensorflow as tf

        # Keras' own loop (`keras.layers.RNN.inner_loop` runs it): the same while loop,
        # time-major stacking and outputs.
        from keras.src.backend import rnn

        cell = self.cell
        if isinstance(initial_state, (list, tuple)):
            initial_state = initial_state[0]
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None:
            mask = tf.ones(tf.shape(sequences)[:2], tf.bool)
        # Static bounds when the batch size is known (XLA: static shapes; no empty blocks).
        batch = sequences.shape[0] if sequences.shape[0] is not None else tf.shape(sequences)[0]
        bounds = [batch * i // self.row_blocks for i in range(self.row_blocks + 1)]
        blocks = [(start, end) for start, end in zip(bounds[:-1], bounds[1:], strict=True)
                  if not isinstance(start, int) or end > start]
        # The mask rides along as the last input feature; steps select on it themselves (the
        # loop's own masking expects one state for the whole batch).
        inputs = tf.concat([sequences, tf.cast(mask, sequences.dtype)[..., None]], axis=-1)
        kernel, recurrent_kernel = cell.kernel, cell.recurrent_kernel
        input_bias, recurrent_bias = tf.unstack(cell.bias, 2, axis=0)

        def step(step_inputs, states):
            new_states = []
            for (start, end), h_tm1 in zip(blocks, states, strict=True):
                x = step_inputs[start:end, :-1]
                valid = step_inputs[start:end, -1:] > 0.5
                x_z, x_r, x_h = tf.split(tf.matmul(x, kernel) + input_bias, 3, axis=-1)
                inner = tf.matmul(h_tm1, recurrent_kernel) + recurrent_bias
                inner_z, inner_r, inner_h = tf.split(inner, 3, axis=-1)
                z = cell.recurrent_activation(x_z + inner_z)
                r = cell.recurrent_activation(x_r + inner_r)
                hh = cell.activation(x_h + r * inner_h)
                h = z * h_tm1 + (1 - z) * hh
                new_states.append(tf.where(valid, h, h_tm1))
            return tf.concat(new_states, axis=0), new_states

        states = [initial_state[start:end] for start, end in blocks]
        last_output, outputs, new_states = rnn(
            step, inputs, states, input_length=sequences.shape[1],
            return_all_outputs=self.return_sequences)
        return last_output, outputs, [tf.concat(new_states, axis=0)]

    def _steps_row_blocks(self) -> bool:
        cell = self.cell
        if not (self.row_blocks > 1 and keras.backend.backend() == "tensorflow"
                and cell.reset_after and cell.use_bias and not cell.dropout
                and not cell.recurrent_dropout and not self.unroll and not self.go_backwards
                and not self.stateful):
            return False
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")

    def get_config(self):
        return {**super().get_config(), "row_blocks": self.row_blocks}
