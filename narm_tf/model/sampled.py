"""Sampled softmax training (`--loss=sampled`): eq. 11 over the target and a few shared
negatives instead of all N items, for catalogues where the full softmax costs too much.

Each training step draws `num_negatives` items, shared by the whole batch, from a popularity
proposal `q` (training-label counts ^ 0.75; item 0, padding, has count 0 and is never drawn),
with replacement. Scores are the bilinear decoder's (eq. 10, the same item embedding as the
input), corrected by `- log(num_negatives * q)` (logQ: the sampled softmax is then an unbiased
stand-in for the full one), and a negative equal to the row's target (an accidental hit) is
dropped. Validation and test stay full-ranking (`narm_tf.model.metrics`).

The item table's update is lazy Adam (TF Addons' `LazyAdam`): only the rows a step touches
(its clicks, targets and negatives) are read and written, with Adam's formula on their summed
gradient; the other variables take the compiled Adam. Dense Adam rewrites all N rows and both
moments every step, which at 1M items costs more than the rest of the step. Rows a step does
not touch keep their moments (dense Adam would decay them); at the first step both agree. The
table's moments are not checkpointed (a resumed run restarts them at 0). Under several
replicas the table takes the compiled (dense) Adam.

Why not `tf.random.fixed_unigram_candidate_sampler` and `tf.nn.sampled_softmax_loss`: the
train step is XLA-compiled (`narm_tf.model.narm.compile_narm`), and neither the sampler nor the
accidental-hit op (`ComputeAccidentalHits`) has an XLA kernel (TF 2.21). The proposal here is
drawn with Walker's alias method (two gathers, O(num_negatives) a step) and the loss is the
same formula as `tf.nn.sampled_softmax_loss(..., remove_accidental_hits=True)` with zero
biases, which `tests/test_sampled.py` checks on fixed candidates.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from narm_tf import config as config_lib

DISTORTION = 0.75  # q ~ count^0.75, word2vec's proposal.
_HIT_SCORE = -1e9  # An accidental hit's corrected score: exp() of it is 0.


def check_settings(config: dict) -> None:
    """ValueError naming the flags when `--loss=sampled` meets a setting it does not fit."""
    if config.get("loss", "full") != "sampled":
        return
    if config.get("decoder") != "bilinear":
        raise ValueError(f"--loss=sampled needs --decoder=bilinear (it scores negatives with "
                         f"the shared item embedding); got --decoder={config.get('decoder')}")
    if config.get("repeat"):
        raise ValueError("--loss=sampled does not support --repeat (the repeat-aware decoder "
                         "scores the session's own items outside the item embedding)")
    if config.get("train_metrics"):
        raise ValueError("--loss=sampled computes no full scores while training: drop "
                         "--train_metrics (validation still reports Recall@20 and MRR@20)")


def proposal(label_counts: np.ndarray, distortion: float = DISTORTION) -> np.ndarray:
    """Counts `[N + 1]` (index 0 = padding, forced to 0) -> probabilities `[N + 1]` float64,
    `count^distortion` normalized."""
    counts = np.asarray(label_counts, np.float64).copy()
    if counts.ndim != 1 or len(counts) < 2 or (counts < 0).any():
        raise ValueError(f"label counts must be [N + 1] non-negative; got shape {counts.shape}")
    counts[0] = 0.0
    weights = counts ** distortion
    if weights.sum() <= 0:
        raise ValueError("label counts are all 0: no item to draw negatives from")
    return weights / weights.sum()


def alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of `probabilities [n]`: (accept [n] float32, alias [n] int32).

    Draw: column `i` uniform in 0..n-1 and `u` uniform in [0, 1); the item is `i` if
    `u < accept[i]`, else `alias[i]`. (Vose's construction; exact up to float rounding.)
    """
    n = len(probabilities)
    scaled = np.asarray(probabilities, np.float64) * n
    accept = np.ones(n, np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = list(np.flatnonzero(scaled < 1.0))
    large = list(np.flatnonzero(scaled >= 1.0))
    while small and large:
        low, high = small.pop(), large.pop()
        accept[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    return accept.astype(np.float32), alias.astype(np.int32)


def sampled_softmax_loss(query, embeddings, labels, candidates, log_expected_true,
                         log_expected_sampled):
    """Per-example sampled softmax cross-entropy `[batch]` (eq. 11 over target + negatives).

    Args:
        query: `B c_t`, `[batch, D]`; embeddings: the item table `[N + 1, D]`.
        labels: target items `[batch]`; candidates: shared negatives `[S]`.
        log_expected_true: `log(S q(label))` `[batch]`; log_expected_sampled: `[S]`.
    Scores `emb_i . query - log(S q(i))`; a candidate equal to the row's label is dropped.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    true = tf.reduce_sum(query * tf.gather(embeddings, labels), -1) - log_expected_true  # [b]
    sampled = tf.matmul(query, tf.gather(embeddings, candidates), transpose_b=True)     # [b, S]
    sampled = sampled - log_expected_sampled[None, :]
    hits = tf.equal(labels[:, None], tf.cast(candidates, tf.int32)[None, :])
    sampled = tf.where(hits, tf.cast(_HIT_SCORE, sampled.dtype), sampled)
    logits = tf.concat([true[:, None], sampled], axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - true


class SampledSoftmax:
    """The sampled-softmax train step of a bilinear NARM model (`NarmModel.sampled_softmax`).

    Example:
    ```python
    model = build_narm(num_items); compile_narm(model)
    attach(model, label_counts, num_negatives=1024)   # counts [N + 1], index 0 = padding
    model.fit(...)   # trains on the sampled loss; validation stays full-ranking
    ```
    """

    def __init__(self, model: keras.Model, label_counts: np.ndarray, num_negatives: int,
                 seed: int = 0):
        from narm_tf.model.narm import BILINEAR_DECODER, ITEM_EMBEDDING

        if num_negatives < 1:
            raise ValueError(f"--num_negatives must be >= 1, got {num_negatives}")
        try:
            decoder = model.get_layer(BILINEAR_DECODER)
        except ValueError:
            raise ValueError("--loss=sampled needs a model with the bilinear decoder "
                             "(--decoder=bilinear)") from None
        self.embedding = model.get_layer(ITEM_EMBEDDING)
        if len(label_counts) != self.embedding.input_dim:
            raise ValueError(f"label counts hold {len(label_counts)} entries for a model of "
                             f"{self.embedding.input_dim} items (N + 1, padding first)")
        # Input -> B c_t [batch, D], on the model's own layers (shared weights, not saved twice).
        self.query_model = keras.Model(model.inputs, decoder.output)
        q = proposal(label_counts)
        self.accept, self.alias = alias_table(q)
        self.num_negatives = num_negatives
        log_q = np.log(np.maximum(q, q[q > 0].min()))  # floor: a label never drawn stays finite
        self.log_expected = (np.log(num_negatives) + log_q).astype(np.float32)
        self.seed = int(seed)
        self.lazy = tf.distribute.get_strategy().num_replicas_in_sync == 1
        if self.lazy:
            table = self.embedding.embeddings
            self.moments = (tf.Variable(tf.zeros(table.shape, table.dtype), trainable=False),
                            tf.Variable(tf.zeros(table.shape, table.dtype), trainable=False))

    def draw(self, step):
        """Shared negatives `[S]` int32 for training step `step` (reproducible per step)."""
        n = len(self.accept)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        u = tf.random.stateless_uniform([2, self.num_negatives], seed, alg="philox")
        column = tf.minimum(tf.cast(u[0] * n, tf.int32), n - 1)
        keep = u[1] < tf.gather(self.accept, column)
        return tf.where(keep, column, tf.gather(self.alias, column))

    def train_step(self, model, data):
        """One Adam step on the mean sampled loss; updates the loss tracker, returns logs."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels = tf.reshape(tf.cast(y, tf.int32), [-1])
        step = tf.identity(model.optimizer.iterations)
        candidates = self.draw(step)
        log_expected = tf.constant(self.log_expected)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            query = self.query_model(x, training=True)
            losses = sampled_softmax_loss(
                query, tf.cast(self.embedding.embeddings, query.dtype), labels, candidates,
                tf.gather(log_expected, labels), tf.gather(log_expected, candidates))
            loss = _weighted_mean(losses, sample_weight)
            if model.losses:
                loss = loss + tf.add_n(model.losses)
            scaled = model.optimizer.scale_loss(loss / replicas)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        table = self.embedding.embeddings
        position = next(i for i, v in enumerate(variables) if v is table)
        if self.lazy and isinstance(gradients[position], tf.IndexedSlices):
            optimizer = model.optimizer
            lazy_adam_rows(table.value, *self.moments, gradients.pop(position), step + 1,
                           optimizer.learning_rate, optimizer.beta_1, optimizer.beta_2,
                           optimizer.epsilon)
            variables = variables[:position] + variables[position + 1:]
        model.optimizer.apply(gradients, variables)
        model._loss_tracker.update_state(loss, sample_weight=tf.shape(labels)[0])
        # Builds the compiled metrics on an empty batch (Keras reads them after `fit`).
        empty = tf.zeros([0, self.embedding.input_dim], query.dtype)
        return model.compute_metrics(x, y[:0], empty)


def attach(model: keras.Model, label_counts: np.ndarray,
           num_negatives: int = config_lib.TrainingConfig().num_negatives,
           seed: int = 0) -> keras.Model:
    """Makes `model.fit` train `model` (a compiled `NarmModel`) with the sampled softmax;
    returns it. label_counts: training-label counts `[N + 1]` (index 0 ignored)."""
    model.sampled_softmax = SampledSoftmax(model, label_counts, num_negatives, seed)
    model.train_metrics = False  # no full scores to compute them on
    return model


def lazy_adam_rows(table, first_moment, second_moment, gradient, step, learning_rate,
                   beta_1=0.9, beta_2=0.999, epsilon=1e-7) -> None:
    """Adam (Keras' formula) on the rows of `table` `[N + 1, D]` that `gradient` (IndexedSlices,
    indices may repeat: their values are summed) touches; the moments are variables shaped as
    the table. `step` counts from 1. XLA-compatible: sort + segment sums, no `tf.unique`; a
    repeated row is written several times with the same value."""
    indices = tf.cast(gradient.indices, tf.int32)
    order = tf.argsort(indices)
    rows = tf.gather(indices, order)
    first = tf.concat([[True], rows[1:] != rows[:-1]], axis=0)
    segment = tf.cumsum(tf.cast(first, tf.int32)) - 1
    summed = tf.math.unsorted_segment_sum(tf.gather(gradient.values, order), segment,
                                          tf.shape(rows)[0])
    grad = tf.gather(summed, segment)                                   # [n, D], per position
    dtype = grad.dtype
    beta_1, beta_2 = tf.cast(beta_1, dtype), tf.cast(beta_2, dtype)
    step = tf.cast(step, dtype)
    m = beta_1 * tf.gather(first_moment, rows) + (1 - beta_1) * grad
    v = beta_2 * tf.gather(second_moment, rows) + (1 - beta_2) * tf.square(grad)
    alpha = (tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
             / (1 - tf.pow(beta_1, step)))
    new = tf.gather(table, rows) - alpha * m / (tf.sqrt(v) + tf.cast(epsilon, dtype))
    first_moment.scatter_update(tf.IndexedSlices(m, rows))
    second_moment.scatter_update(tf.IndexedSlices(v, rows))
    table.scatter_update(tf.IndexedSlices(new, rows))


def _weighted_mean(losses, sample_weight):
    if sample_weight is None:
        return tf.reduce_mean(losses)
    weights = tf.reshape(tf.cast(sample_weight, losses.dtype), [-1])
    return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))
