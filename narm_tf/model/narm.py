"""NARM as a Keras functional model (paper section 3; its settings: docs/training.md).

item_ids [batch, max_len] -> item_embedding -> embedding_dropout -> gru -> (c_g = h_t,
attention c_l) -> session_representation [c_g; c_l] -> representation_dropout -> decoder -> scores
[batch, num_items + 1] (logits; column 0 is padding and never scores).

Inputs are right-padded with 0 and hold at least one item per row: the layout cuDNN's GRU needs on
GPU. Their width is free (at most the builders' 19): padding never changes the outputs, so a
batch of short prefixes may be cut short and the GRU then runs fewer steps. On CPU, left padding
gives the same outputs (the masked GRU skips padded steps and attention ignores them), but it is
not supported.
"""

from __future__ import annotations

import threading

import keras
import tensorflow as tf
from keras import ops

from narm_tf import config as config_lib
from narm_tf.model import covisit as _registers_covisit  # noqa: F401  (registers CoVisitPrior)
from narm_tf.model.gru import PHASES
from narm_tf.model.layers import (
    ItemEmbedding,
    NarmAttention,
    NarmGRU,
    PaddingScoreMask,
    PhiloxDropout,
    RepeatExplore,
    attention_share,
    session_representation,
)
from narm_tf.model.metrics import MrrAtK, RecallAtK

# The settings' choices and defaults: narm_tf.config, the one place they are set.
VARIANTS = config_lib.SETTINGS["variant"].choices
DECODERS = config_lib.SETTINGS["decoder"].choices
ATTENTIONS = config_lib.SETTINGS["attention"].choices
_MODEL = config_lib.ModelConfig()
_TRAINING, _RUNTIME = config_lib.TrainingConfig(), config_lib.RuntimeConfig()

# The layers' names: what serving (`narm_tf.serving.inference`) and `attention_model` look up.
ITEM_EMBEDDING = "item_embedding"
GRU = "gru"
ATTENTION = "attention"
SESSION_REPRESENTATION = "session_representation"
BILINEAR_DECODER = "bilinear_decoder"
DENSE_DECODER = "dense_decoder"
SCORES = "scores"
REPEAT_EXPLORE = "repeat_explore"


def build_narm(
    num_items: int,
    embedding_dim: int = _MODEL.embedding_dim,
    hidden_units: int = _MODEL.hidden_units,
    variant: str = _MODEL.variant,
    decoder: str = _MODEL.decoder,
    attention: str = _MODEL.attention,
    max_len: int | None = None,
    embedding_dropout: float = _MODEL.embedding_dropout,
    representation_dropout: float = _MODEL.representation_dropout,
    repeat: bool = _MODEL.repeat,
    repeat_explore: str = _MODEL.repeat_explore,
    gru_phases: int = PHASES,
) -> keras.Model:
    """NARM (eq. 1-10): item ids `[batch, max_len]` -> scores `[batch, num_items + 1]` (logits).

    Args:
        num_items: N, items are 1..N (0 is padding).
        embedding_dim: D, the item embedding size.
        hidden_units: H, the GRU size.
        variant: `global` (c = c_g, eq. 5), `local` (c = c_l, eq. 6) or `hybrid` (eq. 9).
        decoder: `bilinear` (eq. 10, scores with the input embedding) or `dense` (fully connected).
        attention: `unnormalized` (the paper) or `softmax` (masked softmax over alpha).
        max_len: the input width; None (default): any width, as batches cut to their longest
            prefix are (`narm_tf.data.dataset.make_dataset(length_buckets=...)`).
        embedding_dropout: dropout between the embedding and the GRU.
        representation_dropout: dropout on the session representation before the decoder.
        repeat: beyond the paper, RepeatNet's repeat/explore gate (`layers.RepeatExplore`): the
            scores become `log(p_r P_repeat + (1 - p_r) P_decoder)`, log-probabilities that
            also reach the session's own items through attention over its clicks.
        repeat_explore: with `repeat`, what the explore mode recommends: `all` (the catalogue)
            or `new` (only items not in the session, RepeatNet's).
        gru_phases: the row sets `NarmGRU` steps a batch in (speed only: the outputs and
            weights are the same; `narm_tf.model.gru.phases_for` picks it for a batch size).
    """
    _check_choice("variant", variant, VARIANTS)
    _check_choice("decoder", decoder, DECODERS)
    _check_choice("attention", attention, ATTENTIONS)
    item_ids = keras.Input(shape=(max_len,), dtype="int32", name="item_ids")
    # float32 under any mixed-precision policy: the lookup and the [batch, N + 1] scores.
    item_embedding = ItemEmbedding(num_items + 1, embedding_dim, mask_zero=True,
                                   name=ITEM_EMBEDDING, dtype="float32")
    embedded = item_embedding(item_ids)
    embedded = PhiloxDropout(embedding_dropout, name="embedding_dropout")(embedded)
    # Default activations, reset_after=True, not unrolled: cuDNN-eligible on GPU. (Unrolling
    # the 19 steps measured no faster under XLA on CPU.) On CPU, NarmGRU skips most padded
    # steps and writes its gradient out (narm_tf.model.gru).
    hidden_states, final_state = NarmGRU(
        hidden_units, phases=gru_phases, return_sequences=True, return_state=True,
        name=GRU)(embedded)
    normalize = "softmax" if attention == "softmax" else None
    session, _ = session_representation(
        variant, final_state, join=_session_layer,
        attend=lambda: NarmAttention(normalize=normalize, name=ATTENTION)(hidden_states,
                                                                           final_state))
    session = PhiloxDropout(representation_dropout, name="representation_dropout")(session)
    # The decoder's logits are the scores; with `repeat`, its explore distribution.
    output_name = "explore_scores" if repeat else SCORES
    if decoder == "bilinear":
        query = keras.layers.Dense(embedding_dim, use_bias=False, name=BILINEAR_DECODER)(session)
        scores = item_embedding(query, mode="decode")
        scores = keras.layers.Identity(name=output_name, dtype="float32")(scores)
    else:
        scores = keras.layers.Dense(num_items + 1, name=DENSE_DECODER)(session)
        scores = PaddingScoreMask(name=output_name, dtype="float32")(scores)
    if repeat:
        scores, _ = RepeatExplore(explore=repeat_explore, name=REPEAT_EXPLORE, dtype="float32")(
            scores, item_ids, hidden_states, session)
        scores = keras.layers.Identity(name=SCORES, dtype="float32")(scores)
    settings = {"variant": variant, "decoder": decoder, "attention": attention}
    if repeat:
        settings["repeat"] = True
        if repeat_explore != "all":
            settings["repeat_explore"] = repeat_explore
    name = f"narm_{variant}_{decoder}" + ("_repeat" if repeat else "")
    return NarmModel(item_ids, scores, name=name, narm=settings)


def _session_layer(parts):
    """The layer `session_representation` over c_t's parts (`layers.session_representation`)."""
    if len(parts) == 1:
        return keras.layers.Identity(name=SESSION_REPRESENTATION)(parts[0])
    return keras.layers.Concatenate(name=SESSION_REPRESENTATION)(parts)


# Per thread: MirroredStrategy traces each replica's step in its own thread.
_in_train_step = threading.local()


@keras.saving.register_keras_serializable(package="narm_tf")
class NarmModel(keras.Model):
    """The functional NARM model, declaring its settings (`narm`: `{"variant", "decoder",
    "attention"}` of `build_narm`, None for a model built otherwise), whose training steps may
    skip the compiled metrics.

    With `train_metrics = False` (what `compile_narm` sets by default) a `fit` step updates the
    loss only: Recall@K and MRR@K over the full item set are one more pass over the
    `[batch, N + 1]` scores, which at DIGINETICA size cost about 7% of a step on CPU.
    Evaluation (`evaluate`, `fit`'s validation) always computes them. The attribute is not
    saved: a loaded model computes training metrics, as any Keras model, until
    `compile_narm` sets it.
    """

    train_metrics = True
    sampled_softmax = None  # `sampled.attach` sets it: fit then trains on the sampled loss.

    def __init__(self, *args, narm: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.narm = narm

    def get_config(self):
        """The functional config and `narm`: the build_narm `variant`, `decoder` and `attention`
        the model was built with, saved in `.keras` files (what serving reproduces)."""
        return {**super().get_config(), "narm": self.narm}

    def train_step(self, data):
        _in_train_step.active = True
        try:
            if self.sampled_softmax is not None:  # --loss=sampled (narm_tf.model.sampled)
                return self.sampled_softmax.train_step(self, data)
            return super().train_step(data)
        finally:
            _in_train_step.active = False

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if getattr(_in_train_step, "active", False) and not self.train_metrics:
            # An empty slice builds the metrics (Keras reads them at the end of `fit`) but
            # costs nothing and leaves them at zero; only the loss is reported.
            empty = None if sample_weight is None else sample_weight[:0]
            logs = super().compute_metrics(x, y[:0], y_pred[:0], sample_weight=empty)
            return {"loss": logs["loss"]}
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def attention_model(model: keras.Model) -> keras.Model:
    """Same input -> {"scores": [batch, num_items + 1], "attention_weights": [batch, max_len],
    "attention_share": [batch, max_len]}: the raw alpha of eq. 7 and each click's share of the
    local representation (`layers.attention_share`), what export and Figure 6 show.

    Shares the weights of `model`. The `global` variant has no attention: both are zeros.
    """
    item_ids = model.inputs[0]
    try:
        weights = model.get_layer(ATTENTION).output[1]
    except ValueError:
        zeros = ops.zeros_like(ops.cast(item_ids, "float32"))
        weights, share = zeros, zeros
    else:
        hidden_states = model.get_layer(GRU).output[0]
        share = attention_share(weights, hidden_states, ops.not_equal(item_ids, 0))
    return keras.Model(item_ids, {"scores": model.outputs[0], "attention_weights": weights,
                                  "attention_share": share},
                       name=f"{model.name}_with_attention")


def compile_narm(
    model: keras.Model,
    learning_rate: float = _TRAINING.learning_rate,
    k: int = config_lib.K,
    jit_compile: bool | None = None,
    train_metrics: bool = _RUNTIME.train_metrics,
    steps_per_execution: int = _RUNTIME.steps_per_execution,
) -> keras.Model:
    """Adam + cross-entropy on logits (eq. 11, `cross_entropy`), metrics `recall@k` and
    `mrr@k`; returns `model`.

    `train_metrics=False` (default): `fit` reports the metrics on validation data only, not
    on each training batch (`NarmModel`); a model built elsewhere computes them either way.
    `steps_per_execution=16` (default): `fit` and `evaluate` run 16 batches per call into the
    compiled step, so Keras' per-batch work in Python (callbacks, logs) does not stall the
    cores between batches: 2-10% of a DIGINETICA-sized step on CPU when run per batch.
    Callbacks then see every 16th batch. Under a multi-replica strategy it is 1: Keras'
    multi-batch loop over a distributed dataset fails there (TF 2.21, Keras 3.15: "You must
    feed a value for placeholder tensor ... while/cond").

    `jit_compile=None` resolves to XLA (the fastest correct setting measured by
    `benchmarks/train_speed.py` on CPU), except under a multi-replica strategy on CPU devices,
    where XLA cannot reach the other replicas' variables. Call it inside the strategy's scope.
    """
    if jit_compile is None:
        jit_compile = xla_supported()
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        steps_per_execution = 1
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=cross_entropy,
        metrics=[RecallAtK(k, name=config_lib.metric_name("recall", k)),
                 MrrAtK(k, name=config_lib.metric_name("mrr", k))],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    if isinstance(model, NarmModel):
        model.train_metrics = train_metrics
    return model


@keras.saving.register_keras_serializable(package="narm_tf")
def cross_entropy(y_true, y_pred):
    """Eq. 11 per example: `logsumexp(scores) - scores[label]`, labels `[batch]` (or
    `[batch, 1]`), scores `[batch, N + 1]` logits.

    The same value and gradient as Keras' sparse categorical cross-entropy from logits, with
    the gradient written out, `(softmax(scores) - onehot(label)) * dy`: one fused pass over the
    scores. Left to autodiff, XLA on CPU scatters the target's gradient into a zeroed
    `[batch, N + 1]` buffer first (two more passes).
    """
    labels = tf.reshape(tf.cast(y_true, tf.int32), (-1, 1))
    return _cross_entropy(labels, tf.cast(y_pred, tf.float32))


@tf.custom_gradient
def _cross_entropy(labels, logits):
    log_normalizer = tf.reduce_logsumexp(logits, axis=-1, keepdims=True)
    target = tf.gather(logits, labels, batch_dims=1)
    loss = (log_normalizer - target)[:, 0]

    def gradient(dy):
        is_target = tf.range(tf.shape(logits)[-1])[None, :] == labels
        softmax = tf.exp(logits - log_normalizer)
        return None, (softmax - tf.cast(is_target, logits.dtype)) * dy[:, None]

    return loss, gradient


def xla_supported(strategy=None) -> bool:
    """Whether XLA can compile the train step under `strategy` (default: the current one)."""
    strategy = strategy or tf.distribute.get_strategy()
    on_cpu = not tf.config.list_logical_devices("GPU")
    return not (on_cpu and strategy.num_replicas_in_sync > 1)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# `calibrate_repeat`'s grid: inverse temperatures of the explore logits and of the repeat
# attention's energies. 1, 1 is the model as trained. A repeat scale near 0 gives P_repeat by
# click counts, its ties broken by the attention; 0 itself is left out: items clicked equally
# often would tie exactly, and the rank rule counts ties against the target.
EXPLORE_SCALES = (1.0, 0.8, 0.67, 0.5, 0.33)
REPEAT_SCALES = (1.0, 0.5, 0.25, 0.1, 0.03)


def calibrate_repeat(model: keras.Model, prefixes, labels, batch_size: int = 1024,
                     explore_scales=EXPLORE_SCALES, repeat_scales=REPEAT_SCALES) -> dict:
    """Temperature scaling (Guo et al., ICML 2017) of a compiled `repeat` model's two
    distributions on held-out examples (prefixes `[n, T]`, labels `[n]`): sets the
    `RepeatExplore` layer's `explore_scale` and `repeat_scale` to the grid point of least mean
    cross-entropy (the first on ties) and returns it with its loss and metrics.

    Why: the mixture ranks a session's items against new ones by `p_r P_repeat(i)` against
    `(1 - p_r) P_explore(j)`, so an over-confident component (trained to fit the training
    sessions) pushes the other's items down; a single softmax's ranking would not change.
    """
    if not model.compiled:
        raise ValueError("calibrate_repeat needs a compiled model (compile_narm)")
    # Batched once for the whole grid (evaluating arrays would convert them at every point).
    examples = tf.data.Dataset.from_tensor_slices((prefixes, labels)).batch(batch_size).cache()
    best = None
    for explore_scale in explore_scales:
        for repeat_scale in repeat_scales:
            set_repeat_scales(model, explore_scale, repeat_scale)
            measured = model.evaluate(examples, verbose=0, return_dict=True)
            if best is None or measured["loss"] < best["loss"]:
                best = {"explore_scale": explore_scale, "repeat_scale": repeat_scale,
                        **{key: float(value) for key, value in measured.items()}}
    set_repeat_scales(model, best["explore_scale"], best["repeat_scale"])
    return best


def set_repeat_scales(model: keras.Model, explore_scale: float, repeat_scale: float) -> None:
    """Sets a `repeat` model's two inverse temperatures (see `calibrate_repeat`)."""
    layer = model.get_layer(REPEAT_EXPLORE)
    layer.explore_scale.assign(explore_scale)
    layer.repeat_scale.assign(repeat_scale)
