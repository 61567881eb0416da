"""narm_tf.evaluate: ranks of a real Keras model and of POP, beyond-accuracy metrics, tables."""

import keras
import numpy as np
import pytest

from narm_tf import evaluate
from narm_tf.data.examples import Prefixes
from narm_tf.model.metrics import MISS

NUM_ITEMS = 25
NAN, INF = float("nan"), float("inf")


def _prefixes(labels, lengths, first_items=None, clicks=None):
    """Prefixes of 19 clicks: all item 1 (with `first_items` first), or the given `clicks`
    right-padded with 0."""
    n = len(labels)
    prefixes = np.ones((n, 19), np.int32)
    if first_items is not None:
        prefixes[:, 0] = first_items
    if clicks is not None:
        prefixes[:] = 0
        for row, items in enumerate(clicks):
            prefixes[row, :len(items)] = items
    return Prefixes(prefixes, np.asarray(labels, np.int64), np.asarray(lengths, np.int64),
                    np.arange(n, dtype=np.int64))


def _score_table():
    """Scores `[8, N + 1]` per first click of a prefix (rows 0 and 8+ unused)."""
    table = np.zeros((8, NUM_ITEMS + 1), "float32")
    table[1] = -np.arange(NUM_ITEMS + 1)  # item i scores -i (padding 0 is above all: ignored)
    table[2, 10] = NAN
    table[3, 5] = INF
    table[4, 5] = -INF
    # table[5]: all equal
    table[6, [2, 4, 9]] = 1.0  # three tied items above the rest
    table[7, [0, 25, 24, 1]] = [100.0, 5.0, 4.0, 3.0]
    return table


def _lookup_model():
    """A real Keras model whose logits `[b, N + 1]` are the table row of each first click."""
    item_ids = keras.Input((19,), dtype="int32")
    rows = keras.layers.Embedding(8, NUM_ITEMS + 1, name="scores")(item_ids)
    model = keras.Model(item_ids, keras.layers.Lambda(lambda x: x[:, 0])(rows))
    model.get_layer("scores").set_weights([_score_table()])
    return model


def test_evaluate_model_nan_infinite_and_all_equal_rows_are_misses():
    test = _prefixes([3, 3, 5, 5, 7, 4], [1] * 6, first_items=[1, 2, 3, 4, 5, 6])
    results = evaluate.evaluate_model(_lookup_model(), test, k=20, batch_size=4)
    # 1: items 1, 2 above item 3; 2: NaN in the row; 3: +inf target; 4: -inf target;
    # 5: all equal, 24 ties -> rank 25 > 20; 6: item 4 tied with items 2 and 9.
    np.testing.assert_array_equal(results.ranks, [3, MISS, MISS, MISS, 25, 3])
    assert results.recall == 2 / 6


def _finite_results(popularity=None):
    test = _prefixes([3, 4, 9, 24, 1], [1, 2, 3, 4, 5], first_items=[1, 6, 6, 7, 1])
    return evaluate.evaluate_model(_lookup_model(), test, k=3, batch_size=2,
                                   popularity=popularity)


def _popularity():
    counts = np.zeros(NUM_ITEMS, np.int64)  # items 1..25; min 0, max 10
    counts[2 - 1], counts[25 - 1], counts[3 - 1] = 10, 5, 0
    return counts


def test_evaluate_model_top_k_lists_coverage_and_popularity_bias():
    results = _finite_results(_popularity())
    np.testing.assert_array_equal(results.ranks, [3, 3, 3, 2, 1])
    # Top-3 lists: first click 1 -> items 1, 2, 3 (twice); 6 -> 2, 4, 9 (ties: lower id,
    # twice); 7 -> 25, 24, 1 (padding's 100 never listed).
    want = np.zeros(NUM_ITEMS + 1, np.int64)
    want[[1, 2, 3, 4, 9, 24, 25]] = [3, 4, 2, 2, 2, 1, 1]
    np.testing.assert_array_equal(results.recommended, want)
    assert results.coverage == 7 / 25
    # Normalized popularity: item 2 -> 1, item 25 -> 0.5, others 0; 15 recommendations.
    assert results.popularity_bias == pytest.approx((4 * 1.0 + 1 * 0.5) / 15)
    summary = evaluate.summary(results)
    assert summary.pop("by_kind")["all"] == {"count": 5, "share": 100.0, "recall@3": 100.0,
                                             "mrr@3": 50.0, "ndcg@3": 62.62}
    assert summary == {
        "recall@3": 100.0, "mrr@3": 50.0,  # (3 * 1/3 + 1/2 + 1) / 5
        "ndcg@3": 62.62,  # (3 * 1/log2(4) + 1/log2(3) + 1) / 5 = 0.626186
        "coverage@3": 28.0, "popularity_bias@3": 0.3, "count": 5}


def test_without_popularity_the_bias_is_omitted_and_a_wrong_length_is_an_error():
    summary = evaluate.summary(_finite_results())
    assert "popularity_bias@3" not in summary and summary["coverage@3"] == 28.0
    assert list(summary["by_kind"]) == ["all", "repeat", "new"]  # no popularity groups
    with pytest.raises(ValueError, match="popularity holds 24 counts but the scores rank 25"):
        _finite_results(np.ones(NUM_ITEMS - 1))


def test_popularity_ranks_count_ties_against_the_target():
    counts = np.array([5, 9, 5, 1, 9, 0])  # items 1..6
    test = _prefixes([1, 2, 3, 4, 5, 6], [1] * 6)
    results = evaluate.evaluate_popularity(counts, test, k=2, batch_size=2)
    # Item 1 (5) ties with item 3 below items 2 and 5 (9): rank 4; item 2 ties with 5: rank 2.
    np.testing.assert_array_equal(results.ranks, [4, 2, 4, 5, 2, 6])
    assert results.recall == 2 / 6
    assert np.isclose(results.mrr, (1 / 2 + 1 / 2) / 6)


def _kind_test():
    """Six prefixes (clicks, label) whose first click picks the lookup model's score row:
    row 1 ranks item i at i; row 6 ties items 2, 4, 9 at rank 3; row 7 ranks 25, 24, 1 first."""
    clicks = [[1, 2], [1, 5], [1], [7, 3], [6, 4], [7]]  # items < 8: rows of the table
    labels = [2, 5, 3, 25, 4, 1]  # repeat, repeat, new, new, repeat, new
    return _prefixes(labels, [len(c) for c in clicks], clicks=clicks)


def _kind_popularity():
    """Items 1..25: item 2 (6 labels) is head, item 4 (3) torso, item 25 (3) and all others
    tail (cuts at 4 and 8 of 12 labels; ties: lower id first)."""
    counts = np.zeros(NUM_ITEMS, np.int64)
    counts[2 - 1], counts[4 - 1], counts[25 - 1] = 6, 3, 3
    return counts


def test_evaluate_model_figures_by_kind_of_target_by_hand():
    results = evaluate.evaluate_model(_lookup_model(), _kind_test(), k=3, batch_size=4,
                                      popularity=_kind_popularity())
    np.testing.assert_array_equal(results.ranks, [2, 5, 3, 1, 3, 3])
    by_kind = evaluate.summary(results)["by_kind"]
    assert list(by_kind) == ["all", "repeat", "new", "head", "torso", "tail"]
    # repeat: ranks 2, 5, 3 (5 > k a miss); new: 3, 1, 3.
    assert by_kind["repeat"] == {"count": 3, "share": 50.0, "recall@3": 66.67,
                                 "mrr@3": 27.78,   # (1/2 + 0 + 1/3) / 3
                                 "ndcg@3": 37.7}   # (1/log2(3) + 0 + 1/log2(4)) / 3
    assert by_kind["new"] == {"count": 3, "share": 50.0, "recall@3": 100.0,
                              "mrr@3": 55.56, "ndcg@3": 66.67}  # (1/3 + 1 + 1/3) / 3, (.5+1+.5)/3
    # head: label 2 (rank 2); torso: label 4 (rank 3); tail: labels 5, 3, 25, 1.
    assert by_kind["head"] == {"count": 1, "share": 16.67, "recall@3": 100.0, "mrr@3": 50.0,
                               "ndcg@3": 63.09}
    assert by_kind["torso"]["count"] == 1 and by_kind["torso"]["mrr@3"] == 33.33
    assert by_kind["tail"] == {"count": 4, "share": 66.67, "recall@3": 75.0, "mrr@3": 41.67,
                               "ndcg@3": 50.0}
    assert by_kind["all"]["count"] == 6 and by_kind["all"]["recall@3"] == 83.33
    assert results.by_kind["repeat"]["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 3)  # fractions


def test_popularity_figures_by_kind_and_an_empty_group_is_none():
    counts = np.array([5, 9, 5, 1, 9, 0])  # 29 labels: head 2, 5; torso 1; tail 3, 4, 6
    results = evaluate.evaluate_popularity(counts, _prefixes([1, 2, 3, 4, 5, 6], [1] * 6), k=2)
    by_kind = results.by_kind  # ranks 4, 2, 4, 5, 2, 6; every prefix's clicks are item 1
    assert (by_kind["repeat"]["count"], by_kind["repeat"]["recall"]) == (1, 0.0)
    assert (by_kind["new"]["count"], by_kind["new"]["recall"]) == (5, 2 / 5)
    assert [by_kind[kind]["count"] for kind in ("head", "torso", "tail")] == [2, 1, 3]
    assert by_kind["head"]["recall"] == 1.0 and by_kind["tail"]["recall"] == 0.0
    no_repeat = evaluate.summary(evaluate.evaluate_popularity(counts, _prefixes([2, 3], [1, 1])))
    assert no_repeat["by_kind"]["repeat"] == {"count": 0, "share": 0.0, "recall@20": None,
                                              "mrr@20": None, "ndcg@20": None}
    assert no_repeat["by_kind"]["new"]["share"] == 100.0


def test_a_trainings_metrics_json_and_the_command_report_the_test_split_by_kind(
        warm_start_runs):
    """A real (tiny) run's metrics.json: every test prefix is a repeat or a new target (as
    counted from the split itself) and head, torso or tail, for NARM and POP; the evaluate
    command prints the same groups between the overall line and the per-length table."""
    from narm_tf.data import dataset as data
    from narm_tf.model.metrics import repeat_targets
    from narm_tf.training import run_dir

    model_dir = warm_start_runs["warm"]
    metrics = run_dir.read_json(model_dir, run_dir.METRICS)
    config = run_dir.read_json(model_dir, run_dir.CONFIG)
    test = data.Dataset(config["dataset"], config["data_dir"]).split("test")
    repeats = int(repeat_targets(test.prefixes, test.labels).sum())
    assert 0 < repeats < len(test)
    for key in ("test", "popularity_baseline"):
        figures = metrics[key]
        kinds = figures["by_kind"]
        assert (kinds["repeat"]["count"], kinds["new"]["count"]) == (repeats, len(test) - repeats)
        assert kinds["repeat"]["count"] + kinds["new"]["count"] == figures["count"] == len(test)
        assert sum(kinds[kind]["count"] for kind in ("head", "torso", "tail")) == len(test)
        assert kinds["repeat"]["share"] + kinds["new"]["share"] == pytest.approx(100, abs=0.01)
        assert {key: kinds["all"][key] for key in ("recall@20", "mrr@20", "ndcg@20")} == {
            key: figures[key] for key in ("recall@20", "mrr@20", "ndcg@20")}

    results, rows = evaluate.evaluate_model_dir(model_dir)
    lines = evaluate.format_report(results, rows).splitlines()
    assert lines[0].startswith("NARM ") and lines[-1].startswith("   19+")
    repeat_row = next(line.split() for line in lines if line.startswith("repeat "))
    assert repeat_row[1] == str(repeats)
    assert float(repeat_row[3]) == pytest.approx(
        metrics["test"]["by_kind"]["repeat"]["recall@20"], abs=0.02)
    assert lines.index(next(line for line in lines if line.startswith("target "))) < \
        lines.index(next(line for line in lines if line.split()[:1] == ["length"]))


def test_popularity_top_k_coverage_and_bias_by_hand():
    counts = np.array([5, 9, 5, 1, 9, 0])
    results = evaluate.evaluate_popularity(counts, _prefixes([1, 2, 4], [1] * 3), k=3)
    # Every list: items 2, 5 (9), then 1 (5, lower id than 3); normalized (count - 0) / 9.
    np.testing.assert_array_equal(results.recommended, [0, 3, 3, 0, 0, 3, 0])
    assert results.coverage == 3 / 6
    assert results.popularity_bias == pytest.approx((1 + 1 + 5 / 9) / 3)


def test_normalized_popularity_and_label_counts():
    np.testing.assert_allclose(evaluate.normalized_popularity([2, 4, 10, 2]), [0, 0.25, 1, 0])
    np.testing.assert_array_equal(evaluate.normalized_popularity([3, 3]), [0, 0])
    train, validation = _prefixes([1, 3, 3], [1] * 3), _prefixes([4, 1], [1] * 2)
    np.testing.assert_array_equal(evaluate.label_counts(5, train, validation), [2, 0, 2, 1, 0])


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
    # NDCG: (1/log2(2) + 1/log2(4) + 0) / 3 = 0.5; no lists, no coverage or popularity bias.
    assert evaluate.summary(results) == {"recall@20": 66.67, "mrr@20": 44.44, "ndcg@20": 50.0,
                                         "count": 3}
    assert "NDCG@20  50.00%" in evaluate.format_summary("NARM", results)


def test_misses_count_in_by_length_as_misses():
    results = evaluate.Results(np.array([MISS, 1.0]), np.array([2, 2]), k=20)
    row = evaluate.by_length(results)[1]
    assert (row["count"], row["hits"], row["mrr"]) == (2, 1, 50.0)


def test_blockwise_evaluation_equals_full_scores_evaluation():
    """A bilinear NARM ranked per item block (a small `max_scores`) gives the ranks
    and top-k lists of the full `[batch, N + 1]` scores."""
    from narm_tf.model.narm import build_narm

    keras.utils.set_random_seed(1)
    model = build_narm(60, embedding_dim=8, hidden_units=8)
    rng = np.random.default_rng(0)
    test = _prefixes(rng.integers(1, 61, 40), np.ones(40), first_items=rng.integers(1, 61, 40))
    assert evaluate._bilinear_query_model(model) is not None
    full = evaluate.evaluate_model(model, test, k=5, batch_size=16)
    blocked = evaluate.evaluate_model(model, test, k=5, batch_size=16, max_scores=16 * 7)
    np.testing.assert_array_equal(blocked.ranks, full.ranks)
    np.testing.assert_array_equal(blocked.recommended, full.recommended)
    assert 0 < full.recommended.sum() == 40 * 5
