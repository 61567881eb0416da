"""The rank of a target and Recall@K / MRR@K / NDCG@K over the full item set (docs/results.md).

rank = 1 + number of items (other than the target and the padding column 0) scoring strictly
higher than the target + number of items scoring exactly the same: ties go against the target
(GRU4Rec's "conservative" mode), so a constant model ranks every target last. A target whose
score is NaN or +-inf, or a row holding a NaN anywhere (padding column included), is a miss:
its rank is `MISS` (inf), beyond every K, so a diverged model scores 0, never 100%.
Recall@K = share with rank <= K; MRR@K = mean of 1/rank and NDCG@K (one relevant item) = mean
of 1/log2(1 + rank), both 0 when rank > K.

The rule is written once, in three parts every ranking path calls: `_at_least` (a tie counts
against the target), `_rows_with_nan` and `_rank_or_miss` (non-finite target or NaN row: `MISS`).
`target_ranks` applies it to a score matrix: the Keras metrics call it in-graph,
`narm_tf.evaluate` in its batched tf.function, NumPy callers (the baselines, POP) through
`ranks_numpy`. `blockwise_ranks_and_top_k` applies it to a bilinear model's scores (queries x
item table) one item block at a time, so a `[batch, N + 1]` score matrix never exists
(1M-item catalogues).
`top_k` is the one top-k of a score row (tf.math.top_k's order and ties, in two short passes
over wide rows) and `top_k_among` the one re-ranking of candidates: evaluation's top-K lists
(`top_k_items`, padding excluded, for coverage and popularity bias), the blockwise lists and
the serving graph (`narm_tf.serving.top_k`, `narm_tf.serving.reduced_precision`) all call them.
`metrics_by_kind` splits Recall / MRR / NDCG by kind of target: repeat (the label is among the
prefix's clicks) or new, and head / torso / tail by the label's training popularity.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

MISS = float("inf")  # Rank of a target that cannot be ranked (NaN or infinite scores).


def target_ranks(scores, labels):
    """Rank `[batch]` (float32, `MISS` = inf) of each label among items 1..N (ties and NaN
    count against it).

    scores: `[batch, N + 1]` (column 0 = padding); labels: item ids 1..N `[batch]` (or
    `[batch, 1]`). Any backend tensor or NumPy array; runs in a graph, under XLA and per replica.
    Counts every column scoring at least the target (the target itself included, so the count
    is already `1 + higher + equal`), then takes back the padding column if it counted: no
    `[batch, N]` slice of the scores is materialized. NaN rows: see `_rows_with_nan`. Counts
    are float32, exact up to 2^24 items.
    """
    scores = ops.convert_to_tensor(scores)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
    target = ops.take_along_axis(scores, labels, axis=1)  # [b, 1]
    at_least = ops.sum(_at_least(scores, target), axis=1)
    padding = _at_least(scores[:, 0], target[:, 0])
    return _rank_or_miss(at_least - padding, target[:, 0], _rows_with_nan(scores))


def _at_least(scores, target):
    """1.0 where a score is at least the target's, else 0.0 (float32; shapes broadcast): a
    tie counts against the target."""
    return ops.cast(scores >= target, "float32")


def _rank_or_miss(rank, target, has_nan):
    """`rank` `[batch]`, or `MISS` where the target's score `[batch]` is NaN or +-inf or its
    row holds a NaN (`has_nan` `[batch]`)."""
    miss = ops.logical_or(ops.logical_not(ops.isfinite(target)), has_nan)
    return ops.where(miss, MISS, rank)


def _rows_with_nan(scores):
    """Whether each row `[batch]` of scores `[batch, n]` (all columns or a block) holds a NaN.

    A row's sum is NaN if the row holds a NaN (or +inf beside -inf): one float reduction,
    a third of the cost of `any(isnan(scores))` under XLA on CPU, which runs only when some
    sum is NaN. (A max-reduction would be cheaper still, but XLA's CPU max drops NaNs.)
    """
    sum_is_nan = ops.isnan(ops.sum(scores, axis=1))
    return ops.cond(ops.any(sum_is_nan), lambda: ops.any(ops.isnan(scores), axis=1),
                    lambda: sum_is_nan)


def top_k_items(scores, k: int):
    """Item ids `[batch, min(k, N)]` (int32) of the k best scores, padding excluded; ties go
    to the lower id. scores `[batch, N + 1]`, a TensorFlow tensor or NumPy array (k > N needs
    the width N + 1 known when traced)."""
    import tensorflow as tf

    scores = tf.convert_to_tensor(scores)
    if scores.shape[1] is not None:
        k = min(k, scores.shape[1] - 1)
    return tf.cast(top_k(scores[:, 1:], k)[1], tf.int32) + 1


_BLOCKWISE_MIN_WIDTH = 4096  # narrower score rows use one TopKV2


def top_k(scores, k: int):
    """`tf.math.top_k(scores, k)`: values `[b, k]` and int64 indices, best first, a tie to the
    lower index; in two short passes over wide rows (the k blocks with the highest maxima hold
    the top k). On rows holding a NaN the order may differ from TopKV2's.

    Over 43,098 scores this is about 3x faster than one `TopKV2` at batch 1 (2x at batch
    1024), which stays for narrow rows and rows of unknown width.
    """
    import tensorflow as tf

    width = scores.shape[-1]
    if width is not None:
        k = min(k, width)
    block = _top_k_block(width, k)
    if block is None:
        values, indices = tf.math.top_k(scores, k, sorted=True)
        return values, tf.cast(indices, tf.int64)
    blocks, batch = width // block, tf.shape(scores)[0]
    body = blocks * block
    tiles = tf.reshape(scores if body == width else scores[:, :body], [batch, blocks, block])
    best = tf.math.top_k(tf.reduce_max(tiles, axis=2), k, sorted=False).indices
    best = tf.sort(best, axis=1)  # candidates in index order: ties break as in top_k
    candidates = tf.reshape(tf.gather(tiles, best, batch_dims=1), [batch, k * block])
    positions = tf.reshape(best[:, :, None] * block + tf.range(block)[None, None, :],
                           [batch, k * block])
    if body < width:  # the last `width - body` scores are candidates as they are
        candidates = tf.concat([candidates, scores[:, body:]], axis=1)
        tail = tf.broadcast_to(tf.range(body, width)[None, :], [batch, width - body])
        positions = tf.concat([positions, tail], axis=1)
    values, positions = top_k_among(candidates, positions, k)
    return values, tf.cast(positions, tf.int64)


def top_k_among(values, ids, k: int):
    """The k best of candidate `values` `[b, c]` with their `ids` `[b, c]`: `(values [b, k],
    ids [b, k])`, best first. A tie goes to the candidate listed first (list candidates in id
    order, or in an earlier top-k's order, for ties to the lower id)."""
    import tensorflow as tf

    values, order = tf.math.top_k(values, k, sorted=True)
    return values, tf.gather(ids, order, batch_dims=1)


def _top_k_block(width: int | None, k: int) -> int | None:
    """Block width for `top_k` over `width` scores: about sqrt(width / k), a divisor of
    `width` when one is near (no remainder to handle); None for one TopKV2 (a narrow row, a
    width unknown when traced, or fewer than k blocks)."""
    if width is None or width < _BLOCKWISE_MIN_WIDTH or k < 1:
        return None
    best = max(2, round((width / k) ** 0.5))
    near = [b for b in range(best // 2, 2 * best + 1) if b > 1 and width % b == 0]
    block = min(near, key=lambda b: width // b + k * b) if near else best
    return block if width // block >= k else None


def blockwise_ranks_and_top_k(query, table, labels, k: int = 20, block_size: int = 65_536):
    """`target_ranks` and `top_k_items` of the scores `query @ table^T`, item block by block.

    query: `[batch, D]` (`B c_t`); table: the item embedding `[N + 1, D]` (row 0 = padding,
    never ranked nor listed); labels: items 1..N `[batch]`. Returns ranks `[batch]` float32
    (same rule and parts: 1 + other items scoring at least the target; `MISS` for a
    non-finite target or a row holding a NaN) and item ids `[batch, min(k, N)]` int32 (ties:
    lower id). Memory: `[batch, block_size]` scores at a time; each block's `top_k` is merged
    into the lists so far (`top_k_among`). The target's score is its own dot product, each
    other item's comes from its block's product, so the target's column is left out of the
    count and counted as the 1. TensorFlow tensors; the number of blocks is static (the
    table's shape must be known).
    """
    import tensorflow as tf

    query, table = tf.convert_to_tensor(query), tf.convert_to_tensor(table)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    target = tf.reduce_sum(query * tf.gather(table, labels), axis=-1)          # [b]
    count = tf.ones(tf.shape(labels), tf.float32)  # the target itself
    has_nan = tf.zeros(tf.shape(labels), tf.bool)
    top_values = top_ids = None
    num_scores = table.shape[0]
    for start in range(0, num_scores, block_size):
        stop = min(start + block_size, num_scores)
        with tf.control_dependencies([count]):  # one block at a time: bounded memory
            scores = tf.matmul(query, table[start:stop], transpose_b=True)     # [b, block]
        ids = tf.range(start, stop)[None, :]
        other = (ids != labels[:, None]) & (ids != 0)
        count += tf.reduce_sum(tf.where(other, _at_least(scores, target[:, None]), 0.0), axis=1)
        has_nan |= _rows_with_nan(scores)
        if start == 0:  # the padding column is never listed
            scores, ids = scores[:, 1:], ids[:, 1:]
        values, index = top_k(scores, min(k, scores.shape[1]))
        found = tf.gather(ids[0], index)
        if top_values is not None:  # earlier (lower) ids first: ties go to them
            values, found = top_k_among(tf.concat([top_values, values], axis=1),
                                        tf.concat([top_ids, found], axis=1),
                                        min(k, top_values.shape[1] + values.shape[1]))
        top_values, top_ids = values, found
    return _rank_or_miss(count, target, has_nan), top_ids


def ranks_numpy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`target_ranks` on NumPy input: scores `[n, N + 1]`, labels 1..N `[n]` -> `[n]` float64."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (len(scores),):
        raise ValueError(f"scores must be [n, N + 1] and labels [n]; got scores "
                         f"{scores.shape} and labels {labels.shape}")
    if len(labels) == 0:
        return np.zeros(0, np.float64)
    bad = (labels < 1) | (labels >= scores.shape[1])
    if bad.any():
        raise ValueError(f"labels must be item ids 1..{scores.shape[1] - 1}; got "
                         f"{labels[bad][0]} at row {np.flatnonzero(bad)[0]}")
    return np.asarray(_compiled(target_ranks)(scores, labels), np.float64)


def top_k_numpy(scores: np.ndarray, k: int) -> np.ndarray:
    """`top_k_items` on NumPy input: scores `[n, N + 1]` -> item ids `[n, min(k, N)]` int32."""
    scores = np.asarray(scores)
    return np.asarray(_compiled(top_k_items)(scores, min(k, scores.shape[1] - 1)))


@functools.cache
def _compiled(function):
    """`function` as a tf.function: NumPy callers pay one trace, not eager per-op overhead."""
    import tensorflow as tf

    return tf.function(function, reduce_retracing=True)


def recall_mrr_from_ranks(ranks: np.ndarray, k: int = 20) -> tuple[float, float]:
    """(Recall@k, MRR@k) as fractions in [0, 1] from ranks `[n]` (`MISS` counts as a miss)."""
    ranks = np.asarray(ranks, np.float64)
    if ranks.size == 0:
        return 0.0, 0.0
    hit = ranks <= k
    return float(hit.mean()), float(np.where(hit, 1.0 / ranks, 0.0).mean())


def ndcg_from_ranks(ranks: np.ndarray, k: int = 20) -> float:
    """NDCG@k with one relevant item, a fraction: mean of 1/log2(1 + rank), 0 when rank > k."""
    ranks = np.asarray(ranks, np.float64)
    if ranks.size == 0:
        return 0.0
    return float(np.where(ranks <= k, 1.0 / np.log2(1.0 + ranks), 0.0).mean())


# ----------------------------------------------------------------------- by target kind

KINDS = ("all", "repeat", "new", "head", "torso", "tail")  # groups of `metrics_by_kind`
POPULARITY_CUTS = (1 / 3, 2 / 3)  # shares of training labels closing head, then torso


def repeat_targets(prefixes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each label `[n]` is among its prefix's clicks (a repeat target) `[n]` bool.

    prefixes: `[n, L]` right-padded item ids (0 = padding): the clicks the model sees, so a
    label clicked only before the 19 kept clicks counts as new.
    """
    prefixes, labels = np.asarray(prefixes), np.asarray(labels)
    return np.any(prefixes == labels.reshape(-1, 1), axis=1) & (labels > 0)


def popularity_groups(label_counts: np.ndarray) -> np.ndarray:
    """Group of each item `[N + 1]` (index = item id; 0 head, 1 torso, 2 tail, padding -1).

    label_counts: training-label counts `[N]` of items 1..N (`evaluate.label_counts`). Items
    sorted by count (ties: lower id first); an item is head while the labels of the items
    before it are under 1/3 of all labels, torso while under 2/3, else tail: head = the most
    popular items covering the first third of training labels (the item crossing the cut
    included), tail = those sharing the last third, and every never-seen item.
    """
    counts = np.asarray(label_counts, np.float64)
    order = np.lexsort((np.arange(len(counts)), -counts))  # most popular first
    before = np.empty(len(counts))
    before[order] = np.cumsum(counts[order]) - counts[order]
    cuts = np.array(POPULARITY_CUTS) * counts.sum()
    groups = np.searchsorted(cuts, before, side="right")  # before < cut_1 -> 0, ...
    groups[counts.sum() == 0] = 2  # no labels at all: every item is tail
    return np.concatenate([[-1], groups]).astype(np.int64)


def metrics_by_kind(ranks: np.ndarray, prefixes: np.ndarray, labels: np.ndarray,
                    label_counts: np.ndarray | None = None, k: int = 20) -> dict:
    """Recall@k, MRR@k and NDCG@k (fractions) over all targets and each kind of target.

    ranks `[n]` (`target_ranks`, `MISS` = inf), prefixes `[n, L]`, labels `[n]`, label_counts
    `[N]` training-label counts of items 1..N (None: the popularity groups are left out).
    Returns `{kind: {"count", "share", "recall", "mrr", "ndcg"}}` for `KINDS`: repeat (the
    label is among the prefix's clicks, `repeat_targets`) and new, head / torso / tail
    (`popularity_groups` of the label); share = count / n; an empty group's figures are None.
    """
    ranks, labels = np.asarray(ranks, np.float64), np.asarray(labels)
    if not len(ranks) == len(labels) == len(prefixes):
        raise ValueError(f"ranks, prefixes and labels must hold one row per example; got "
                         f"{len(ranks)}, {len(prefixes)} and {len(labels)}")
    repeat = repeat_targets(prefixes, labels)
    masks = {"all": np.ones(len(ranks), bool), "repeat": repeat, "new": ~repeat}
    if label_counts is not None:
        groups = popularity_groups(label_counts)
        if labels.size and labels.max() >= len(groups):
            raise ValueError(f"label_counts holds {len(groups) - 1} items but a label is "
                             f"{labels.max()}: pass training-label counts [N] of items 1..N")
        for index, kind in enumerate(KINDS[3:]):
            masks[kind] = groups[labels] == index
    return {kind: _group_figures(ranks[mask], len(ranks), k) for kind, mask in masks.items()}


def _group_figures(ranks: np.ndarray, total: int, k: int) -> dict:
    """count, share of all `total` examples, Recall / MRR / NDCG @k (None when empty)."""
    if not len(ranks):
        return {"count": 0, "share": 0.0, "recall": None, "mrr": None, "ndcg": None}
    recall, mrr = recall_mrr_from_ranks(ranks, k)
    return {"count": int(len(ranks)), "share": len(ranks) / total, "recall": recall,
            "mrr": mrr, "ndcg": ndcg_from_ranks(ranks, k)}


def format_by_kind(by_kind: dict, k: int = 20) -> str:
    """`metrics_by_kind` as a table: one row a kind, figures in percent."""
    lines = [f"{'target':<7} {'count':>8} {'share':>7} {'Recall@' + str(k):>9} "
             f"{'MRR@' + str(k):>7} {'NDCG@' + str(k):>8}"]
    for kind, row in by_kind.items():
        cells = [("-" if row[key] is None else f"{100 * row[key]:.2f}")
                 for key in ("recall", "mrr", "ndcg")]
        lines.append(f"{kind:<7} {row['count']:>8} {100 * row['share']:>6.2f}% {cells[0]:>9} "
                     f"{cells[1]:>7} {cells[2]:>8}")
    return "\n".join(lines)


class _RankMetric(keras.metrics.Metric):
    """Mean over examples of `self._value(ranks)` (each subclass defines it); `sum`/`count`
    states, which replicas sum-aggregate."""

    def __init__(self, k: int = 20, name: str | None = None, dtype=None):
        super().__init__(name=name or self.default_name.format(k=k), dtype=dtype)
        self.k = k
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = self._value(target_ranks(y_pred, y_true))
        if sample_weight is None:
            weights = ops.ones_like(values)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        self.total.assign_add(ops.cast(ops.sum(values * weights), self.total.dtype))
        self.count.assign_add(ops.cast(ops.sum(weights), self.count.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        return {"k": self.k, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="narm_tf")
class RecallAtK(_RankMetric):
    """Recall@K: share of examples whose target ranks <= K.

    y_true: item ids `[batch]` (or `[batch, 1]`); y_pred: scores `[batch, num_items + 1]`.
    Ties count against the target; column 0 (padding) never counts; NaN/inf scores are misses.

    Example: `model.compile(..., metrics=[RecallAtK(20, name="recall@20")])`.
    """

    default_name = "recall_at_{k}"

    def _value(self, ranks):
        return ops.cast(ranks <= self.k, "float32")


@keras.saving.register_keras_serializable(package="narm_tf")
class MrrAtK(_RankMetric):
    """MRR@K: mean of 1/rank, 0 when rank > K; same inputs as `RecallAtK`."""

    default_name = "mrr_at_{k}"

    def _value(self, ranks):
        return ops.where(ranks <= self.k, 1.0 / ranks, 0.0)
