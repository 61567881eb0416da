"""NARM's inference pass in few, plain TF ops, on the Keras model's own variables (for serving).

The Keras graph of the model costs about 30 ops per GRU step in TF Serving's executor (masking,
per-step weight splits, tiles, squeezes); at batch 1 those ops, not arithmetic, set the latency.
`NarmInference` computes the same outputs (eq. 1-10, to float32 round-off) without writing the
model again: the GRU step is the one training calls (`narm_tf.model.gru.gru_step`), in about 11
ops per step (one input projection for all steps, and the final state gathered at each row's
last click instead of masking every step: rows are right-padded, never empty); the variants'
wiring is `narm_tf.model.layers.session_representation`, which `build_narm` calls too; the
attention and decoder layers are the model's own, called on tensors; the scores are
`bilinear_scores` or `with_padding_score`, what the model's output layers call. Only the table
is read its own way (once, densely; the product without the training pass's padding column).
The export test checks it against the Keras model for every variant, decoder and attention.

It finds the model's parts by declaration: the settings `build_narm` records in the model
(`NarmModel.narm`) and the layer names of `narm_tf.model.narm`. A model without them, or with a
setting this pass does not reproduce (such as `repeat` or `covisit`), raises `UnsupportedModel`
(serving then runs the Keras graph).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from narm_tf.model import narm as narm_model
from narm_tf.model.gru import gru_step
from narm_tf.model.layers import (
    NarmAttention,
    attention_share,
    bilinear_scores,
    session_representation,
    with_padding_score,
)


class UnsupportedModel(ValueError):
    """The model does not declare its NARM parts, or has a setting `NarmInference` does not
    reproduce."""


class NarmInference:
    """`__call__(item_ids [b, T] int32, right-padded, >= 1 item per row)` ->
    `(scores [b, N + 1] logits with column 0 at PADDING_SCORE, attention_weights [b, T],
    attention_share [b, T])` (`narm_tf.model.layers.attention_share`; zeros for `global`).

    Holds the `tf.Variable`s of a `narm_tf.model.narm.build_narm` model (no copies: a SavedModel
    holding this object restores the trained weights).
    """

    def __init__(self, model: keras.Model):
        settings = declared_settings(model)
        gru = _layer(model, narm_model.GRU, keras.layers.GRU)
        _check_gru(gru)
        for layer in model.layers:
            if layer.compute_dtype != "float32":
                raise UnsupportedModel(f"layer {layer.name} computes in {layer.compute_dtype}")
        cell = gru.cell
        self.variant, self.decoder = settings["variant"], settings["decoder"]
        self.embeddings = _layer(model, narm_model.ITEM_EMBEDDING).embeddings.value
        self.kernel = cell.kernel.value                      # [D, 3H]: z, r, h
        self.recurrent_kernel = cell.recurrent_kernel.value  # [H, 3H]
        self.bias = cell.bias.value                          # [2, 3H]: input, recurrent
        self.attention = (None if self.variant == "global"
                          else _layer(model, narm_model.ATTENTION, NarmAttention))
        decoder = (narm_model.BILINEAR_DECODER if self.decoder == "bilinear"
                   else narm_model.DENSE_DECODER)
        self.decoder_layer = _layer(model, decoder, keras.layers.Dense)

    def __call__(self, item_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        # One dense read of the table: a gather on the variable itself (ResourceGather) would
        # switch it to copy-on-read, and every later read would copy all N x D floats.
        embeddings = tf.convert_to_tensor(self.embeddings)
        session, weights, share = self.encode(item_ids, embeddings)
        if self.decoder == "bilinear":  # the model's ItemEmbedding decode mode
            return bilinear_scores(self.query(session), embeddings), weights, share
        # The model's PaddingScoreMask over the dense decoder's W c_t + b.
        return with_padding_score(self.decoder_layer(session)), weights, share

    def encode(self, item_ids: tf.Tensor, table: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor,
                                                                      tf.Tensor]:
        """`(session representation c_t [b, C], attention weights [b, T], attention share
        [b, T])` of `item_ids [b, T]`, the input embeddings read from `table [N + 1, D]`."""
        valid = item_ids > 0
        lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        embedded = tf.cast(tf.gather(table, tf.transpose(item_ids)), tf.float32)  # [T, b, D]
        states = self._gru_states(embedded)                                       # [b, T, H]
        final = tf.gather(states, tf.maximum(lengths - 1, 0), batch_dims=1)        # [b, H]
        session, weights = session_representation(
            self.variant, final, lambda: self.attention(states, final, mask=valid))
        if weights is None:  # `global`: no attention
            weights = tf.zeros_like(tf.cast(valid, tf.float32))
            return session, weights, weights
        return session, weights, attention_share(weights, states, valid)

    def query(self, session: tf.Tensor) -> tf.Tensor:
        """The bilinear decoder's query `c_t B` `[b, D]` (the model's decoder layer): item i
        scores `emb_i . query`."""
        return self.decoder_layer(session)

    def saved_variables(self, model_variables: list) -> list:
        """The variables an export of this pass saves (the model's own, here)."""
        return model_variables

    def _gru_states(self, embedded):
        """Time-major embeddings `[T, b, D]` -> every step's state `[b, T, H]` (from zeros)."""
        units, max_len = self.recurrent_kernel.shape[0], embedded.shape[0]
        batch = tf.shape(embedded)[1]
        # Input projection of every step at once, time-major: [T, b, 3H].
        projected = tf.reshape(
            tf.matmul(tf.reshape(embedded, [-1, embedded.shape[-1]]), self.kernel)
            + self.bias[0], [max_len, batch, 3 * units])
        steps_zr, steps_h = tf.split(projected, [2 * units, units], axis=2)
        steps_zr, steps_h = tf.unstack(steps_zr), tf.unstack(steps_h)
        state = tf.zeros([batch, units], tf.float32)
        states = []
        for t in range(max_len):
            state, _ = gru_step(steps_zr[t], steps_h[t], state, self.recurrent_kernel,
                                self.bias[1])
            states.append(state)
        return tf.stack(states, axis=1)


def declared_settings(model: keras.Model) -> dict:
    """The `{"variant", "decoder", "attention"}` a `build_narm` model records (`NarmModel`)."""
    settings = getattr(model, "narm", None)
    if not isinstance(settings, dict) or not {"variant", "decoder"} <= set(settings):
        raise UnsupportedModel(
            f"model {model.name!r} declares no NARM settings (NarmModel's `narm`, "
            "set by build_narm)")
    if settings["variant"] not in narm_model.VARIANTS:
        raise UnsupportedModel(f"variant {settings['variant']!r} not in {narm_model.VARIANTS}")
    if settings["decoder"] not in narm_model.DECODERS:
        raise UnsupportedModel(f"decoder {settings['decoder']!r} not in {narm_model.DECODERS}")
    if settings.get("repeat"):
        raise UnsupportedModel("the repeat/explore decoder (build_narm(repeat=True)) is served "
                               "through the Keras graph")
    if settings.get("covisit"):
        raise UnsupportedModel("the co-visitation prior (narm_tf.model.covisit) is served "
                               "through the Keras graph")
    return settings


def _layer(model: keras.Model, name: str, kind=keras.layers.Layer):
    """The model's layer `name` (a `narm_tf.model.narm` constant), or `UnsupportedModel`."""
    try:
        layer = model.get_layer(name)
    except ValueError as error:
        raise UnsupportedModel(f"model {model.name!r} has no layer {name!r}") from error
    if not isinstance(layer, kind):
        raise UnsupportedModel(f"layer {name!r} is a {type(layer).__name__}, not {kind.__name__}")
    return layer


def _check_gru(gru) -> None:
    cell = gru.cell
    expected = {"reset_after": True, "use_bias": True, "go_backwards": False,
                "activation": keras.activations.tanh,
                "recurrent_activation": keras.activations.sigmoid}
    found = {"reset_after": cell.reset_after, "use_bias": cell.use_bias,
             "go_backwards": gru.go_backwards, "activation": cell.activation,
             "recurrent_activation": cell.recurrent_activation}
    if found != expected:
        raise UnsupportedModel(f"GRU settings {found}, serving supports {expected}")
