"""Recall@K and MRR@K over the full item set (SPEC section 3).

rank = 1 + number of items scoring strictly higher than the target (ties favour the target);
the padding index 0 never counts. Recall@K = share with rank <= K; MRR@K = mean of 1/rank,
0 when rank > K.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def ranks_numpy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of each target among items 1..N; scores `[n, N + 1]` (0 = padding), labels `[n]`."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64)
    target = scores[np.arange(len(labels)), labels]
    higher = scores[:, 1:] > target[:, None]
    return 1 + higher.sum(axis=1)


def recall_mrr_from_ranks(ranks: np.ndarray, k: int = 20) -> tuple[float, float]:
    """(Recall@k, MRR@k) as fractions in [0, 1] from ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return 0.0, 0.0
    hit = ranks <= k
    return float(hit.mean()), float(np.where(hit, 1.0 / ranks, 0.0).mean())


def _ranks(y_true, y_pred):
    """Rank `[batch]` (float) of each target among items 1..N; y_pred `[batch, N + 1]`.

    Counts every column scoring strictly higher, then takes back the padding column if it did:
    no `[batch, N]` slice of the scores is materialized.
    """
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1, 1))
    y_pred = ops.convert_to_tensor(y_pred)
    target = ops.take_along_axis(y_pred, labels, axis=1)                 # [b, 1]
    higher = ops.sum(ops.cast(y_pred > target, "float32"), axis=1)
    padding_higher = ops.cast(y_pred[:, 0] > target[:, 0], "float32")
    return 1.0 + higher - padding_higher


class _RankMetric(keras.metrics.Metric):
    """Mean over examples of `self._value(ranks)` (each subclass defines it); `sum`/`count`
    states, which replicas sum-aggregate."""

    def __init__(self, k: int = 20, name: str | None = None, dtype=None):
        super().__init__(name=name or self.default_name.format(k=k), dtype=dtype)
        self.k = k
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = self._value(_ranks(y_true, y_pred))
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
    """Recall@K (SPEC section 3): share of examples whose target ranks <= K.

    y_true: item ids `[batch]` (or `[batch, 1]`); y_pred: scores `[batch, num_items + 1]`.
    Ties count in the target's favour; column 0 (padding) never counts.

    Example: `model.compile(..., metrics=[RecallAtK(20, name="recall@20")])`.
    """

    default_name = "recall_at_{k}"

    def _value(self, ranks):
        return ops.cast(ranks <= self.k, "float32")


@keras.saving.register_keras_serializable(package="narm_tf")
class MrrAtK(_RankMetric):
    """MRR@K (SPEC section 3): mean of 1/rank, 0 when rank > K; same inputs as `RecallAtK`."""

    default_name = "mrr_at_{k}"

    def _value(self, ranks):
        return ops.where(ranks <= self.k, 1.0 / ranks, 0.0)
