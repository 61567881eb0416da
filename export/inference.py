"""NARM's inference pass in few, plain TF ops, on the Keras model's own variables (for serving).

The Keras graph of the model costs about 30 ops per GRU step in TF Serving's executor (masking,
per-step weight splits, tiles, squeezes); at batch 1 those ops, not arithmetic, set the latency.
`NarmInference` computes the same outputs (eq. 1-10, to float32 round-off) in about 11 ops per
step: one input projection for all steps, one fused matmul per step, and the final state gathered
at each row's last click instead of masking every step (rows are right-padded, never empty).
The export test checks it against the Keras model for every variant, decoder and attention.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from narm_tf.layers import PADDING_SCORE, attention_share


class UnsupportedModel(ValueError):
    """The model has a layer setting `NarmInference` does not reproduce."""


class NarmInference:
    """`__call__(item_ids [b, T] int32, right-padded, >= 1 item per row)` ->
    `(scores [b, N + 1] logits with column 0 at PADDING_SCORE, attention_weights [b, T],
    attention_share [b, T])` (`narm_tf.layers.attention_share`; zeros for `global`).

    Holds the `tf.Variable`s of a `narm_tf.model.build_narm` model (no copies: a SavedModel
    holding this object restores the trained weights).
    """

    def __init__(self, model: keras.Model):
        names = {layer.name for layer in model.layers}
        gru = model.get_layer("gru")
        cell = gru.cell
        expected = {"reset_after": True, "use_bias": True, "go_backwards": False,
                    "activation": keras.activations.tanh,
                    "recurrent_activation": keras.activations.sigmoid}
        found = {"reset_after": cell.reset_after, "use_bias": cell.use_bias,
                 "go_backwards": gru.go_backwards, "activation": cell.activation,
                 "recurrent_activation": cell.recurrent_activation}
        if found != expected:
            raise UnsupportedModel(f"GRU settings {found}, serving supports {expected}")
        for layer in model.layers:
            if layer.compute_dtype != "float32":
                raise UnsupportedModel(f"layer {layer.name} computes in {layer.compute_dtype}")
        self.units = cell.units
        self.embeddings = model.get_layer("item_embedding").embeddings.value
        self.kernel = cell.kernel.value                      # [D, 3H]: z, r, h
        self.recurrent_kernel = cell.recurrent_kernel.value  # [H, 3H]
        self.bias = cell.bias.value                          # [2, 3H]: input, recurrent
        self.attention = None
        self.normalize = None
        if "attention" in names:
            attention = model.get_layer("attention")
            self.attention = (attention.a1.value, attention.a2.value, attention.v.value)
            self.normalize = attention.normalize
        session = model.get_layer("session_representation")
        self.variant = ("hybrid" if isinstance(session, keras.layers.Concatenate)
                        else "local" if self.attention is not None else "global")
        if "bilinear_decoder" in names:
            self.decoder = "bilinear"
            self.decoder_kernel = model.get_layer("bilinear_decoder").kernel.value
        else:
            self.decoder = "dense"
            dense = model.get_layer("dense_decoder")
            self.decoder_kernel, self.decoder_bias = dense.kernel.value, dense.bias.value
        num_scores = self.embeddings.shape[0]
        self.padding_bias = tf.constant([PADDING_SCORE] + [0.0] * (num_scores - 1), tf.float32)

    def __call__(self, item_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        units = self.units
        max_len = item_ids.shape[1]
        batch = tf.shape(item_ids)[0]
        valid = item_ids > 0
        lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        # One dense read of the table: a gather on the variable itself (ResourceGather) would
        # switch it to copy-on-read, and every later read would copy all N x D floats.
        embeddings = tf.convert_to_tensor(self.embeddings)
        # Input projection of every step at once, time-major: [T, b, 3H].
        embedded = tf.gather(embeddings, tf.transpose(item_ids))
        projected = tf.reshape(
            tf.matmul(tf.reshape(embedded, [-1, embedded.shape[-1]]), self.kernel)
            + self.bias[0], [max_len, batch, 3 * units])
        steps_zr, steps_h = tf.split(projected, [2 * units, units], axis=2)
        steps_zr, steps_h = tf.unstack(steps_zr), tf.unstack(steps_h)
        state = tf.zeros([batch, units], tf.float32)
        states = []
        for t in range(max_len):
            inner = tf.matmul(state, self.recurrent_kernel) + self.bias[1]
            inner_zr, inner_h = tf.split(inner, [2 * units, units], axis=1)
            z, r = tf.split(tf.sigmoid(steps_zr[t] + inner_zr), 2, axis=1)
            candidate = tf.tanh(steps_h[t] + r * inner_h)
            state = candidate + z * (state - candidate)  # z h + (1 - z) candidate
            states.append(state)
        states = tf.stack(states, axis=1)                                   # [b, T, H]
        final = tf.gather(states, tf.maximum(lengths - 1, 0), batch_dims=1)  # [b, H]
        mask = tf.cast(valid, tf.float32)
        weights = share = tf.zeros_like(mask)
        if self.variant == "global":
            session = final
        else:
            a1, a2, v = self.attention
            keys = tf.reshape(tf.matmul(tf.reshape(states, [-1, units]), a2),
                              [batch, max_len, a2.shape[1]])
            alpha = tf.squeeze(tf.matmul(tf.sigmoid(keys + tf.matmul(final, a1)[:, None, :]),
                                         v), -1)                           # [b, T]
            if self.normalize == "softmax":
                alpha = tf.nn.softmax(tf.where(valid, alpha, PADDING_SCORE), axis=-1)
            weights = alpha * mask
            share = attention_share(weights, states, valid)
            local = tf.squeeze(tf.matmul(weights[:, None, :], states), 1)  # [b, H]
            session = local if self.variant == "local" else tf.concat([final, local], 1)
        if self.decoder == "bilinear":
            query = tf.matmul(session, self.decoder_kernel)
            scores = tf.matmul(query, embeddings, transpose_b=True)
        else:
            scores = tf.matmul(session, self.decoder_kernel) + self.decoder_bias
        return scores + self.padding_bias, weights, share
