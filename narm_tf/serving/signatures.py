"""The serving graph (`ServingModule`): raw ids -> compacted vocabulary indices -> the model's
scores -> top-k raw ids, as the four signatures of `narm_tf.serving.contract`."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from narm_tf.data.examples import MAX_LEN
from narm_tf.model.metrics import top_k
from narm_tf.serving import contract
from narm_tf.serving.inference import NarmInference, UnsupportedModel
from narm_tf.serving.top_k import top_k_excluding


def compact_sessions(indices: tf.Tensor, max_len: int = MAX_LEN) -> tf.Tensor:
    """Vocabulary indices `[batch, L]` (0 = padding or unknown, anywhere) -> `[batch, max_len]`.

    Keeps the known clicks in order, at most the most recent `max_len`, right-padded with 0:
    the model's input format, whatever the padding of the request.
    """
    known = indices > 0
    from_end = tf.cumsum(tf.cast(known, tf.int32), axis=1, reverse=True)  # 1 at the last click
    length = tf.minimum(tf.reduce_sum(tf.cast(known, tf.int32), axis=1, keepdims=True), max_len)
    keep = known & (from_end <= max_len)
    column = tf.where(keep, length - from_end, max_len)  # dropped clicks go to a spare column
    row = tf.broadcast_to(tf.range(tf.shape(indices)[0])[:, None], tf.shape(indices))
    compact = tf.scatter_nd(tf.stack([row, column], axis=-1), tf.where(keep, indices, 0),
                            tf.stack([tf.shape(indices)[0], max_len + 1]))
    return compact[:, :max_len]


def check_flags(exclude_seen: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """`exclude_seen`, after a check that it holds one flag per session (`[batch]`); a request
    with another shape fails with an error naming both sizes (no silent broadcast)."""
    valid = tf.equal(tf.rank(exclude_seen), 1) & tf.equal(tf.size(exclude_seen), batch)
    check = tf.debugging.Assert(valid, [
        "exclude_seen must hold one flag per session (shape [batch]): got shape",
        tf.shape(exclude_seen), "for a batch of", batch, "sessions (rows of item_ids)"])
    with tf.control_dependencies([check]):
        return tf.identity(exclude_seen)


def scoring_model(model: keras.Model) -> keras.Model:
    """Same input -> `{"scores" [b, N + 1], "attention_weights" [b, max_len],
    "attention_share" [b, max_len]}` on the weights of `model`
    (`narm_tf.model.narm.attention_model`): the Keras graph serving falls back to."""
    from narm_tf.model.narm import attention_model

    return attention_model(model)


@contextlib.contextmanager
def unrolled_rnns(model: keras.Model):
    """Traces the model's recurrent layers unrolled (same maths, fixed `max_len` steps): for a
    model served through the Keras graph (one `NarmInference` does not reproduce).

    A symbolic loop costs a dozen control-flow ops per step in TF Serving's executor; the 19
    unrolled steps are plain ops that Grappler can fuse.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.RNN)]
    saved = [layer.unroll for layer in layers]
    for layer in layers:
        layer.unroll = True
    try:
        yield
    finally:
        for layer, unroll in zip(layers, saved, strict=True):
            layer.unroll = unroll


class ServingModule(tf.Module):
    """The serving graph: raw ids -> compacted indices -> model -> top-k raw ids.

    The model runs as `NarmInference` (the lean pass) when it reproduces it, else as its Keras
    graph (`scoring_model`, RNNs unrolled), with a warning naming why.
    """

    def __init__(self, model: keras.Model, vocabulary: np.ndarray, popularity: np.ndarray,
                 vocabulary_file: str, k: int, exclude_seen: bool, max_len: int,
                 inference: NarmInference | None = None):
        super().__init__(name="narm_serving")
        num_items = len(vocabulary)
        self._k = min(k, num_items)
        self._exclude_seen = exclude_seen
        self._max_len = max_len
        scoring = scoring_model(model)
        object.__setattr__(self, "_scoring_model", scoring)  # called, not tracked
        if inference is None:  # the lean float32 pass, else the Keras graph
            try:
                inference = NarmInference(model)
            except UnsupportedModel as error:
                logging.warning("serving through the Keras graph (slower): %s", error)
        object.__setattr__(self, "inference", inference)
        # The TF1 loader (TF Serving) restores only tf.Variables the module itself holds.
        model_variables = [v.value for v in scoring.variables]
        self._variables = (model_variables if inference is None
                           else inference.saved_variables(model_variables))
        self._vocabulary_asset = tf.saved_model.Asset(vocabulary_file)
        self._signatures = contract.signatures_of(vocabulary)
        # Tables over one asset are told apart (their shared_name) by `vocab_size` set or not.
        self._string_to_index = self._table(tf.string, "key", None, 0)
        self._line_to_string = self._table(tf.string, "value", None, "")
        if contract.SIGNATURE_INT64 in self._signatures:  # an integer catalogue
            self._int64_to_index = self._table(tf.int64, "key", num_items, 0)
            self._line_to_int64 = self._table(tf.int64, "value", num_items, 0)
        order = np.argsort(-np.asarray(popularity, np.float64), kind="stable")[: self._k]
        total = max(float(np.sum(popularity)), 1.0)
        self._popular_indices = tf.constant(order + 1, tf.int64)
        self._popular_scores = tf.constant(np.asarray(popularity)[order] / total, tf.float32)

    def _table(self, raw_dtype, raw_role: str, vocab_size, default) -> tf.lookup.StaticHashTable:
        """Raw id -> vocabulary index (line number + 1), or line number -> raw id (the asset)."""
        whole, line = tf.lookup.TextFileIndex.WHOLE_LINE, tf.lookup.TextFileIndex.LINE_NUMBER
        if raw_role == "key":
            init = tf.lookup.TextFileInitializer(self._vocabulary_asset, raw_dtype, whole,
                                                 tf.int64, line, vocab_size=vocab_size,
                                                 value_index_offset=1)
        else:
            init = tf.lookup.TextFileInitializer(self._vocabulary_asset, tf.int64, line,
                                                 raw_dtype, whole, vocab_size=vocab_size)
        return tf.lookup.StaticHashTable(init, default_value=default)

    def to_indices(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Raw ids `[batch, L]` -> vocabulary indices, 0 for padding and unknown ids."""
        if item_ids.dtype == tf.string:
            return self._string_to_index.lookup(item_ids)
        indices = self._int64_to_index.lookup(item_ids)
        return tf.where(tf.equal(item_ids, 0), tf.zeros_like(indices), indices)

    def to_raw(self, indices: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """Vocabulary indices -> raw ids; index 0 -> padding (`""` or 0)."""
        table = self._line_to_string if dtype == tf.string else self._line_to_int64
        return table.lookup(indices - 1)

    def recommend(self, item_ids: tf.Tensor, exclude_seen: tf.Tensor | None) -> dict:
        """Raw sessions `[batch, L]` -> the signature outputs (`export/export_saved_model.py`)."""
        indices = self.to_indices(item_ids)                                  # [b, L]
        session = compact_sessions(indices, self._max_len)                   # [b, max_len]
        has_items = session[:, 0] > 0
        placeholder = tf.one_hot(0, self._max_len, dtype=tf.int64)  # item 1: scored, then replaced
        model_input = tf.where(has_items[:, None], session, placeholder[None, :])
        if exclude_seen is not None:
            exclude_seen = check_flags(exclude_seen, tf.shape(item_ids)[0])
        top_logits, top_indices, scores, attention, share = self._ranked(
            tf.cast(model_input, tf.int32), indices, session, exclude_seen)
        returned = (top_indices > 0) & (top_logits > -np.inf)  # not padding, not excluded
        top_indices = tf.where(returned, top_indices, 0)
        scores = tf.where(returned, scores, 0.0)
        top_indices = tf.where(has_items[:, None], top_indices, self._popular_indices[None, :])
        scores = tf.where(has_items[:, None], scores, self._popular_scores[None, :])
        outputs = (self.to_raw(top_indices, item_ids.dtype), scores,
                   tf.where(has_items[:, None], attention, 0.0),
                   tf.where(has_items[:, None], share, 0.0),
                   self.to_raw(session, item_ids.dtype))
        return dict(zip(contract.OUTPUTS, outputs, strict=True))

    def _ranked(self, model_input, indices, session, exclude_seen):
        """`(top logits [b, k], their indices [b, k], their softmax probabilities [b, k],
        attention weights [b, max_len], attention share [b, max_len])`."""
        if hasattr(self.inference, "ranked"):  # scores only a candidate set
            excluding = self._excluding(session, exclude_seen)
            return self.inference.ranked(model_input, indices, excluding, self._k)
        logits, attention, share = self._score(model_input)  # column 0: padding
        top_logits, top_indices = self._top_k(logits, indices, session, exclude_seen)
        # One fused softmax pass over [b, N+1], then k gathers (not exp/sum/div as three ops).
        scores = tf.gather(tf.nn.softmax(logits), top_indices, batch_dims=1)
        return top_logits, top_indices, scores, attention, share

    def _excluding(self, session, exclude_seen):
        """`[b]` bool: the rows whose known items are left out, or None (no row)."""
        if exclude_seen is None and not self._exclude_seen:
            return None
        return tf.ones_like(session[:, 0], tf.bool) if exclude_seen is None else exclude_seen

    def _score(self, model_input):
        """`(logits [b, N + 1], attention weights [b, max_len], attention share
        [b, max_len])`, float32."""
        if self.inference is not None:
            return self.inference(model_input)
        outputs = self._scoring_model(model_input, training=False)
        return tuple(tf.cast(outputs[name], tf.float32)
                     for name in ("scores", "attention_weights", "attention_share"))

    def _top_k(self, logits, indices, session, exclude_seen):
        """Top k of `logits`, without the known items of the rows that exclude them."""
        excluding = self._excluding(session, exclude_seen)
        if excluding is None:
            return top_k(logits, self._k)
        return top_k_excluding(logits, indices, session, excluding, self._k, self._max_len)

    def signatures(self) -> dict:
        """The serving signatures as concrete functions: the four of `contract.SIGNATURES`, or
        the two string ones for a catalogue of string ids (`contract.signatures_of`)."""
        def ids_spec(dtype):
            return tf.TensorSpec([None, None], dtype, name=contract.ITEM_IDS)

        flag_spec = tf.TensorSpec([None], tf.bool, name=contract.EXCLUDE_SEEN)

        @tf.function(input_signature=[ids_spec(tf.string)])
        def string_ids(item_ids):
            return self.recommend(item_ids, None)

        @tf.function(input_signature=[ids_spec(tf.int64)])
        def int64_ids(item_ids):
            return self.recommend(item_ids, None)

        @tf.function(input_signature=[ids_spec(tf.string), flag_spec])
        def string_ids_with_options(item_ids, exclude_seen):
            return self.recommend(item_ids, exclude_seen)

        @tf.function(input_signature=[ids_spec(tf.int64), flag_spec])
        def int64_ids_with_options(item_ids, exclude_seen):
            return self.recommend(item_ids, exclude_seen)

        functions = (string_ids, int64_ids, string_ids_with_options, int64_ids_with_options)
        with unrolled_rnns(self._scoring_model):
            return {name: fn.get_concrete_function()
                    for name, fn in zip(contract.SIGNATURES, functions, strict=True)
                    if name in self._signatures}
