"""Recall@K and MRR@K over the full item set (SPEC section 3).

rank = 1 + number of items scoring strictly higher than the target (ties favour the target);
the padding index 0 never counts. Recall@K = share with rank <= K; MRR@K = mean of 1/rank,
0 when rank > K.
"""

from __future__ import annotations

import numpy as np


def ranks_numpy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of each target among items 1..N. scores: [n, N + 1] (column 0 = padding), labels: [n]."""
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
