"""NARM layers: the shared item embedding with its bilinear decoder (eq. 10), attention (eq. 6-8)
and each click's share of the attended representation (`attention_share`).

Each equation is written once, as a function of tensors (`bilinear_scores`, `with_padding_score`,
`attend`, `attention_share`; the GRU step is `narm_tf.model.gru.gru_step`) that the layers here and
serving's lean pass (`narm_tf.serving.inference`) both call; so is the variants' wiring of the
session representation (`session_representation`), which `narm_tf.model.narm.build_narm` calls.

Batches are right-padded with item 0 (padding, never a valid item). Shapes: `[batch, max_len]`
item ids, `[batch, max_len, hidden]` GRU states, `[batch, num_items + 1]` scores (column 0 is
padding and always scores `PADDING_SCORE`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from keras.backend import standardize_dtype

from narm_tf.model.gru import PHASES, gru_sequence

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


def with_padding_score(scores):
    """Scores `[batch, N + 1]` -> the same with column 0 (padding) at `PADDING_SCORE`."""
    return scores + padding_score_bias(scores.shape[-1], standardize_dtype(scores.dtype))


def bilinear_scores(query, embeddings, padding_in_product: bool = False):
    """Eq. 10, `S_i = emb_i^T (B c_t)`: queries `[batch, D]` (already `B c_t`) and the item
    table `[N + 1, D]` -> scores `[batch, N + 1]`, column 0 at `PADDING_SCORE`.

    `padding_in_product=True` (training): the padding score rides in the product as one more
    column, `[q, 1] [E', b]^T` with row 0 of `E'` zeroed and `b = (PADDING_SCORE, 0, ...)`, so
    XLA makes one pass over the scores, not two. False (serving, no XLA): a separate add, as
    the augmented table would be a copy of the whole table on every request.
    """
    if not padding_in_product:
        return with_padding_score(tf.matmul(query, embeddings, transpose_b=True))
    num_scores = embeddings.shape[0]
    bias = tf.expand_dims(padding_score_bias(num_scores, standardize_dtype(query.dtype)), -1)
    is_padding = tf.expand_dims(tf.range(num_scores) == 0, -1)
    table = tf.concat([tf.where(is_padding, tf.zeros_like(embeddings), embeddings), bias], -1)
    query = tf.concat([query, tf.ones_like(query[..., :1])], axis=-1)
    return tf.matmul(query, table, transpose_b=True)


def attend(hidden_states, final_state, weights, mask, normalize: str | None = None):
    """Attention (eq. 6-8): `alpha_tj = v^T sigmoid(A1 h_t + A2 h_j)`, `c_l = sum_j alpha_tj h_j`.

    Args:
        hidden_states: `h_j`, `[batch, max_len, H]`; final_state: `h_t`, `[batch, H]`.
        weights: `(A1 [H, units], A2 [H, units], v [units, 1])`.
        mask: `[batch, max_len]` bool, true at clicks.
        normalize: None (raw alpha, the paper) or `"softmax"` (over the valid positions).
    Returns `(c_l [batch, H], alpha [batch, max_len])`, alpha 0 at padding.
    """
    a1, a2, v = weights
    hidden, units = hidden_states.shape[-1], a2.shape[-1]
    max_len = hidden_states.shape[1]
    if max_len is None:
        max_len = tf.shape(hidden_states)[1]
    mask = tf.cast(mask, "bool")
    keys = tf.reshape(tf.matmul(tf.reshape(hidden_states, [-1, hidden]), a2),
                      [-1, max_len, units])                                       # [b, T, u]
    query = tf.matmul(final_state, a1)[:, None, :]                                # [b, 1, u]
    alpha = tf.squeeze(tf.matmul(tf.sigmoid(keys + query), v), -1)                # [b, T]
    if normalize == "softmax":
        alpha = tf.nn.softmax(tf.where(mask, alpha, PADDING_SCORE), axis=-1)
    alpha = alpha * tf.cast(mask, alpha.dtype)
    return tf.squeeze(tf.matmul(alpha[:, None, :], hidden_states), 1), alpha     # [b, H]


def session_representation(variant: str, final_state, attend, join=None):
    """`(c_t, alpha)` of a NARM variant: `global` c_t = h_t (eq. 5; no attention, alpha None),
    `local` c_t = c_l (eq. 6), `hybrid` c_t = [h_t; c_l] (eq. 9).

    The one wiring of the variants: `build_narm` calls it on Keras tensors with its named
    layers, serving's lean pass on tensors with the same model's layers.

    Args:
        variant: `global`, `local` or `hybrid`; final_state: h_t `[batch, H]`.
        attend: `() -> (c_l [batch, H], alpha [batch, max_len])`, called only by the variants
            that attend.
        join: `parts -> c_t` from its one or two parts in order (`build_narm`: the layer named
            `session_representation`); default: the part itself, or the parts concatenated.
    """
    join = join or (lambda parts: parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1))
    if variant == "global":
        return join([final_state]), None
    local, alpha = attend()
    return join([local] if variant == "local" else [final_state, local]), alpha


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
        return bilinear_scores(ops.cast(inputs, self.compute_dtype),
                               ops.cast(self.embeddings, self.compute_dtype),
                               padding_in_product=True)

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
        return with_padding_score(scores)

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
        return attend(hidden_states, final_state, (self.a1, self.a2, self.v), mask,
                      self.normalize)

    def compute_mask(self, hidden_states, mask=None):
        return None

    def compute_output_shape(self, hidden_states_shape, final_state_shape=None):
        batch, max_len, hidden = hidden_states_shape
        return (batch, hidden), (batch, max_len)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "normalize": self.normalize}


def attention_share(alpha, hidden_states, mask=None):
    """Each click's share of the local representation `c_l = sum_j alpha_j h_j` (eq. 8):
    `share_j = |alpha_j| ||h_j|| / sum_i |alpha_i| ||h_i||` over valid clicks, `[batch, max_len]`.

    Raw alpha (eq. 7) has a per-session offset and is often negative, so it does not read as
    importance; the shares are >= 0 and sum to 1 over a session's clicks. 0 at padding; a row
    whose alpha is all 0 (the `global` variant, an empty session) is all 0.

    Args:
        alpha: attention weights `[batch, max_len]` (`NarmAttention`'s second output).
        hidden_states: GRU states `h_j`, `[batch, max_len, H]`.
        mask: `[batch, max_len]`, true at clicks (default: every position).

    Example:
    ```python
    local, alpha = attention(hidden_states, final_state, mask=mask)
    share = attention_share(alpha, hidden_states, mask)   # [batch, max_len], rows sum to 1
    ```
    """
    norms = ops.sqrt(ops.sum(ops.square(hidden_states), axis=-1))        # [b, T]
    contribution = ops.abs(alpha) * ops.cast(norms, alpha.dtype)
    if mask is not None:
        contribution = ops.where(ops.cast(mask, "bool"), contribution,
                                 ops.zeros_like(contribution))
    total = ops.sum(contribution, axis=-1, keepdims=True)
    return ops.divide_no_nan(contribution, total)


@keras.saving.register_keras_serializable(package="narm_tf")
class NarmGRU(keras.layers.GRU):
    """`keras.layers.GRU` (same variables, outputs, gradients and saved weights) that, on CPU,
    skips padded steps and writes its gradient out (`narm_tf.model.gru.gru_sequence`).

    Rows are sorted by length and stepped in `phases` shrinking sets, so on right-padded
    batches most padded steps are never computed; the backward loop carries only the serial
    part, and the weight gradients are single large matmuls. On GPU (where Keras picks cuDNN)
    and for settings this loop does not cover (dropout, `reset_after=False`, no bias, other
    activations, unrolled, backwards, stateful, not float32, another backend) it is
    `keras.layers.GRU`.

    Args:
        phases: row sets per batch (default `gru.PHASES`, 4; 1 = every row at every step).
        row_blocks: independent blocks of rows per step (default 1).
    """

    def __init__(self, units, phases: int = PHASES, row_blocks: int = 1, **kwargs):
        super().__init__(units, **kwargs)
        if phases < 1:
            raise ValueError(f"phases must be >= 1, got {phases}")
        if row_blocks < 1:
            raise ValueError(f"row_blocks must be >= 1, got {row_blocks}")
        self.phases = phases
        self.row_blocks = row_blocks

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._runs_own_loop(sequences):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if isinstance(initial_state, (list, tuple)):
            initial_state = initial_state[0]
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        sequence, final_state = gru_sequence(
            sequences, mask, initial_state, cell.kernel, cell.recurrent_kernel, cell.bias,
            phases=self.phases, row_blocks=self.row_blocks)
        # As Keras' loop returns them: last output, all outputs, states.
        return final_state, sequence, [final_state]

    def _runs_own_loop(self, sequences) -> bool:
        cell = self.cell
        if not (keras.backend.backend() == "tensorflow" and cell.reset_after and cell.use_bias
                and not cell.dropout and not cell.recurrent_dropout and not self.unroll
                and not self.go_backwards and not self.stateful
                and cell.activation is keras.activations.tanh
                and cell.recurrent_activation is keras.activations.sigmoid
                and sequences.dtype == "float32" and sequences.shape.rank == 3
                and sequences.shape[-1] is not None):
            return False
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")

    def get_config(self):
        return {**super().get_config(), "phases": self.phases, "row_blocks": self.row_blocks}


# Floor of the repeat distribution before its log: 0 off the session's items, and log(0) would
# give -inf scores and NaN gradients. exp(-69) is far below any item's explore probability
# that could reach a top-20 list.
REPEAT_FLOOR = 1e-30


# `RepeatExplore(explore=...)`: what the explore mode may recommend.
EXPLORE_ALL = "all"  # the whole catalogue (the decoder's softmax as it stands)
EXPLORE_NEW = "new"  # only items not in the session (RepeatNet's explore decoder)
EXPLORE_MODES = (EXPLORE_ALL, EXPLORE_NEW)


def repeat_explore(explore_scores, item_ids, hidden_states, session, weights,
                   explore=EXPLORE_ALL, explore_scale=1.0, repeat_scale=1.0):
    """RepeatNet's repeat/explore mixture (Ren et al., AAAI 2019), an extension beyond the paper:
    `log(p_r P_repeat + (1 - p_r) P_explore)`.

    `P_repeat(i) = sum_{j: x_j = i} softmax_j(v^T tanh(W h_j + U c_t))` over the session's
    clicks (a click repeated sums). `p_r = sigmoid(w^T c_t + b)`, the repeat gate.
    `P_explore = softmax(explore_scores)` over the catalogue (`explore="all"`), or over the
    items not in the session (`"new"`, RepeatNet's: then a session item's probability is
    `p_r P_repeat(i)` alone, and a session without clicks explores only, its `p_r` 0).
    `explore_scale` and `repeat_scale` multiply the explore logits and the attention energies
    (inverse temperatures, 1 = as trained; repeat_scale 0 = P_repeat by click counts), set by
    `narm_tf.model.narm.calibrate_repeat` on held-out data.

    Args:
        explore_scores: decoder logits `[batch, N + 1]`, column 0 at `PADDING_SCORE`.
        item_ids: `[batch, T]`, 0 = padding; hidden_states: `h_j` `[batch, T, H]`;
        session: `c_t` `[batch, C]`.
        weights: `(W [H, u], U [C, u], v [u, 1], w [C, 1], b [1])`.
        explore: `EXPLORE_ALL` or `EXPLORE_NEW`; explore_scale, repeat_scale: scalars >= 0.
    Returns `(scores [batch, N + 1] log-probabilities, column 0 at about PADDING_SCORE,
    p_repeat [batch, 1])`.
    """
    _, _, _, gate_kernel, gate_bias = weights
    explore_scores = tf.cast(explore_scores, tf.float32) * explore_scale
    repeat, in_session = _repeat_distribution(explore_scores, item_ids, hidden_states, session,
                                              weights, repeat_scale, explore == EXPLORE_NEW)
    gate_logit = tf.matmul(session, gate_kernel) + gate_bias                      # [b, 1]
    log_repeat = tf.math.log_sigmoid(gate_logit) + tf.math.log(repeat + REPEAT_FLOOR)
    if explore == EXPLORE_NEW:
        has_clicks = tf.reduce_any(item_ids > 0, axis=-1, keepdims=True)          # [b, 1]
        new_scores = tf.where(in_session, PADDING_SCORE, explore_scores)
        log_explore = (tf.where(has_clicks, tf.math.log_sigmoid(-gate_logit), 0.0)
                       + tf.nn.log_softmax(new_scores, axis=-1))
        scores = tf.where(in_session, log_repeat, log_explore)
        gate = tf.sigmoid(gate_logit) * tf.cast(has_clicks, tf.float32)
        return with_padding_score(scores), gate
    log_explore = tf.math.log_sigmoid(-gate_logit) + tf.nn.log_softmax(explore_scores, axis=-1)
    scores = tf.reduce_logsumexp(tf.stack([log_repeat, log_explore]), axis=0)
    return with_padding_score(scores), tf.sigmoid(gate_logit)


def _repeat_distribution(explore_scores, item_ids, hidden_states, session, weights,
                         repeat_scale=1.0, with_items=False):
    """`P_repeat` `[batch, N + 1]` (attention over the clicks, a repeated click summed) and,
    `with_items`, which items the session holds `[batch, N + 1]` (bool, padding column False;
    else None: one `[batch, N + 1]` scatter fewer)."""
    w_h, u_c, v, _, _ = weights
    hidden, units = hidden_states.shape[-1], w_h.shape[-1]
    max_len = hidden_states.shape[1]
    if max_len is None:
        max_len = tf.shape(hidden_states)[1]
    mask = item_ids > 0
    keys = tf.reshape(tf.matmul(tf.reshape(hidden_states, [-1, hidden]), w_h),
                      [-1, max_len, units])                                       # [b, T, u]
    energy = tf.squeeze(tf.matmul(tf.tanh(keys + tf.matmul(session, u_c)[:, None, :]), v), -1)
    energy = energy * repeat_scale
    attention = tf.nn.softmax(tf.where(mask, energy, PADDING_SCORE), axis=-1)     # [b, T]
    attention = attention * tf.cast(mask, attention.dtype)
    rows = tf.broadcast_to(tf.range(tf.shape(item_ids)[0])[:, None], tf.shape(item_ids))
    indices = tf.reshape(tf.stack([rows, tf.cast(item_ids, tf.int32)], axis=-1), [-1, 2])
    zeros = tf.zeros_like(explore_scores)
    repeat = tf.tensor_scatter_nd_add(zeros, indices, tf.reshape(attention, [-1]))
    if not with_items:
        return repeat, None
    return repeat, session_items(item_ids, explore_scores)


def session_items(item_ids, like):
    """Which items each session holds: bool `[batch, N + 1]` shaped as `like` (scores), from
    `item_ids [batch, T]` (0 = padding; the padding column stays False)."""
    item_ids = tf.cast(item_ids, tf.int32)
    rows = tf.broadcast_to(tf.range(tf.shape(item_ids)[0])[:, None], tf.shape(item_ids))
    indices = tf.reshape(tf.stack([rows, item_ids], axis=-1), [-1, 2])
    clicks = tf.tensor_scatter_nd_add(tf.zeros_like(like, tf.float32), indices,
                                      tf.reshape(tf.cast(item_ids > 0, tf.float32), [-1]))
    return clicks > 0


@keras.saving.register_keras_serializable(package="narm_tf")
class RepeatExplore(keras.layers.Layer):
    """Repeat-aware decoder (RepeatNet's repeat/explore gate; `repeat_explore`), beyond the paper.

    Call: `layer(explore_scores [batch, N + 1], item_ids [batch, T], hidden_states
    [batch, T, H], session [batch, C])` -> `(scores [batch, N + 1], p_repeat [batch, 1])`:
    the scores are log-probabilities, so they are logits to the softmax cross-entropy and the
    ranking metrics (column 0, padding, still at about `PADDING_SCORE`).

    Args:
        units: size of the repeat attention's latent space (default: H).
        explore: what explore mode recommends: `"all"` the catalogue, `"new"` only items not in
            the session (RepeatNet's).
    """

    def __init__(self, units: int | None = None, explore: str = EXPLORE_ALL, **kwargs):
        super().__init__(**kwargs)
        if explore not in EXPLORE_MODES:
            raise ValueError(f"explore must be one of {EXPLORE_MODES}, got {explore!r}")
        self.units = units
        self.explore = explore

    def build(self, explore_scores_shape, item_ids_shape=None, hidden_states_shape=None,
              session_shape=None):
        hidden, context = hidden_states_shape[-1], session_shape[-1]
        units = self.units or hidden
        self.w_h = self.add_weight(shape=(hidden, units), initializer="glorot_uniform",
                                   name="repeat_key")
        self.u_c = self.add_weight(shape=(context, units), initializer="glorot_uniform",
                                   name="repeat_query")
        self.v = self.add_weight(shape=(units, 1), initializer="glorot_uniform", name="repeat_v")
        self.gate_kernel = self.add_weight(shape=(context, 1), initializer="glorot_uniform",
                                           name="gate_kernel")
        self.gate_bias = self.add_weight(shape=(1,), initializer="zeros", name="gate_bias")
        # Inverse temperatures, not trained: set on held-out data (model.calibrate_repeat).
        self.explore_scale = self.add_weight(shape=(), initializer="ones", trainable=False,
                                             name="explore_scale")
        self.repeat_scale = self.add_weight(shape=(), initializer="ones", trainable=False,
                                            name="repeat_scale")

    def call(self, explore_scores, item_ids, hidden_states, session):
        weights = (self.w_h, self.u_c, self.v, self.gate_kernel, self.gate_bias)
        return repeat_explore(explore_scores, item_ids, hidden_states,
                              ops.cast(session, "float32"), weights, self.explore,
                              self.explore_scale, self.repeat_scale)

    def load_own_variables(self, store):
        """Also loads a layer saved before the scales existed (its 5 trained weights; the
        scales stay 1: the model as it was)."""
        if len(store.keys()) == len(self._trainable_variables):
            for i, variable in enumerate(self._trainable_variables):
                variable.assign(store[str(i)])
            self.explore_scale.assign(1.0)
            self.repeat_scale.assign(1.0)
            return
        super().load_own_variables(store)

    def compute_mask(self, explore_scores, mask=None):
        return None

    def compute_output_shape(self, explore_scores_shape, item_ids_shape=None,
                             hidden_states_shape=None, session_shape=None):
        return tuple(explore_scores_shape), (explore_scores_shape[0], 1)

    def compute_output_spec(self, explore_scores, item_ids, hidden_states, session):
        return (keras.KerasTensor(explore_scores.shape, dtype="float32"),
                keras.KerasTensor((explore_scores.shape[0], 1), dtype="float32"))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "explore": self.explore}
