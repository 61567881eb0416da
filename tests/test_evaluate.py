"""narm_tf.evaluate: popularity ranks, per-length table, summaries."""

import numpy as np

from narm_tf import evaluate, metrics
from narm_tf.preprocessing import Prefixes


def _prefixes(labels, lengths):
    n = len(labels)
    return Prefixes(np.ones((n, 19), np.int32), np.asarray(labels, np.int64),
                    np.asarray(lengths, np.int64), np.arange(n, dtype=np.int64))


def test_popularity_ranks_equal_numpy_ranks_with_ties_in_the_targets_favour():
    counts = np.array([5, 9, 5, 1, 9, 0])  # items 1..6
    test = _prefixes([1, 2, 3, 4, 5, 6], [1] * 6)
    results = evaluate.evaluate_popularity(counts, test, k=2)
    scores = np.tile(np.concatenate([[-1], counts]), (6, 1)).astype(float)
    np.testing.assert_array_equal(results.ranks, metrics.ranks_numpy(scores, test.labels))
    np.testing.assert_array_equal(results.ranks, [3, 1, 3, 5, 1, 6])
    assert results.recall == 2 / 6
    assert np.isclose(results.mrr, 2 / 6)


def test_by_length_buckets_1_to_18_and_19_plus():
    results = evaluate.Results(np.array([1, 30, 2, 4, 25]), np.array([1, 1, 19, 40, 3]), k=20)
    rows = {row["length"]: row for row in evaluate.by_length(results)}
    assert len(rows) == 19
    assert rows["1"] == {"length": "1", "count": 2, "hits": 1, "recall": 50.0, "mrr": 50.0}
    assert rows["19+"]["count"] == 2 and rows["19+"]["hits"] == 2
    assert rows["19+"]["mrr"] == round(100 * (1 / 2 + 1 / 4) / 2, 2)
    assert rows["3"]["hits"] == 0 and rows["3"]["recall"] == 0.0
    assert rows["2"]["count"] == 0 and rows["2"]["recall"] is None
    table = evaluate.format_by_length(evaluate.by_length(results))
    assert table.splitlines()[-1].split() == ["19+", "2", "2", "100.00", "37.50"]


def test_summary_is_percent_with_two_decimals_and_count():
    results = evaluate.Results(np.array([1, 3, 21]), np.zeros(3, np.int64), k=20)
    assert evaluate.summary(results) == {"recall@20": 66.67, "mrr@20": 44.44, "count": 3}
