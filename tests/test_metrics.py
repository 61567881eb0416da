"""Tests for narm_tf.model.metrics: the rank rule against hand-derived ranks, every path.
The Keras metrics summed over two replicas (unequal shares of a batch) are checked in
test_train, against the same model's ranks on one device."""

import keras
import numpy as np
import pytest

from narm_tf.model.metrics import (
    MISS,
    MrrAtK,
    RecallAtK,
    format_by_kind,
    metrics_by_kind,
    ndcg_from_ranks,
    popularity_groups,
    ranks_numpy,
    recall_mrr_from_ranks,
    repeat_targets,
    top_k_numpy,
)

# Scores `[rows, N + 1]` with ties; N = 6, column 0 is padding (9: above every item).
TIED = np.array([
    [9, 3, 1, 3, 3, 0, 2],  # label 1 (3): ties with items 3 and 4 -> rank 3
    [9, 3, 1, 3, 3, 0, 2],  # label 2 (1): items 1, 3, 4, 6 higher -> rank 5
    [9, 3, 1, 3, 3, 0, 2],  # label 5 (0): every other item higher -> rank 6
    [9, 3, 1, 3, 3, 0, 2],  # label 6 (2): items 1, 3, 4 higher -> rank 4
    [1, 1, 1, 1, 1, 1, 1],  # label 3, all equal: ties with the 5 others -> rank 6
    [0, 5, 5, 5, 4, 4, 4],  # label 2: ties with items 1 and 3 -> rank 3
], "float32")
TIED_LABELS = np.array([1, 2, 5, 6, 3, 2])
TIED_RANKS = [3, 5, 6, 4, 6, 3]  # derived by hand in the comments above


def _keras_values(scores, labels, k, batch_size=4, sample_weight=None):
    recall, mrr = RecallAtK(k), MrrAtK(k)
    for start in range(0, len(labels), batch_size):
        part = slice(start, start + batch_size)
        weight = None if sample_weight is None else sample_weight[part]
        recall.update_state(labels[part], scores[part], sample_weight=weight)
        mrr.update_state(labels[part], scores[part], sample_weight=weight)
    return float(recall.result()), float(mrr.result())


def test_ties_count_against_the_target_numpy():
    np.testing.assert_array_equal(ranks_numpy(TIED, TIED_LABELS), TIED_RANKS)
    np.testing.assert_array_equal(ranks_numpy(TIED.astype("float64"), TIED_LABELS), TIED_RANKS)


@pytest.mark.parametrize("k, want", [
    (1, (0.0, 0.0)),
    (3, (2 / 6, (1 / 3 + 1 / 3) / 6)),  # ranks 3 and 3
    (5, (4 / 6, (1 / 3 + 1 / 5 + 1 / 4 + 1 / 3) / 6)),  # ranks 3, 5, 4, 3
    (6, (1.0, (1 / 3 + 1 / 5 + 1 / 6 + 1 / 4 + 1 / 6 + 1 / 3) / 6)),
])
def test_ties_count_against_the_target_keras(k, want):
    np.testing.assert_allclose(_keras_values(TIED, TIED_LABELS, k), want, rtol=1e-6)


@pytest.mark.parametrize("tied", [0, 1, 2, 5])
def test_a_target_tied_with_k_items_ranks_k_plus_1(tied):
    scores = np.zeros((1, 11), "float32")  # N = 10; label 1, two items above it
    scores[0, 1:2 + tied] = 1.0  # the target and `tied` others
    scores[0, 9:] = 2.0
    assert ranks_numpy(scores, [1]).tolist() == [tied + 3]
    recall_at, _ = _keras_values(scores, np.array([1]), k=tied + 3)
    recall_below, _ = _keras_values(scores, np.array([1]), k=tied + 2)
    assert (recall_at, recall_below) == (1.0, 0.0)


# N = 30 items (more than K = 20) and one label per row. Misses: rank `MISS` (inf).
NAN, INF = float("nan"), float("inf")
_ROWS = {  # name: (label, {column: score}, expected rank), every other score 0
    "target nan": (4, {4: NAN}, MISS),
    "target +inf": (4, {4: INF}, MISS),
    "target -inf": (4, {4: -INF}, MISS),
    "nan elsewhere": (4, {4: 5.0, 17: NAN}, MISS),
    "nan in padding only": (4, {0: NAN, 4: 5.0}, MISS),
    "all nan": (4, {c: NAN for c in range(31)}, MISS),
    "all equal": (4, {}, 30),  # ties with the 29 others: a miss at K = 20
    "+inf elsewhere": (4, {4: 5.0, 9: INF}, 1 + 1),  # not a miss: item 9 ranks above
    "+inf and -inf elsewhere": (4, {4: 5.0, 9: INF, 12: -INF}, 2),  # sums to NaN, no NaN
    "-inf padding": (4, {0: -INF, 4: 5.0}, 1),  # the baselines' padding score
    "padding higher": (4, {0: 9.0, 4: 5.0}, 1),
    "padding equal": (4, {0: 5.0, 4: 5.0}, 1),
    "padding +inf": (4, {0: INF, 4: 5.0}, 1),
}


def _nonfinite_rows(dtype="float32"):
    scores = np.zeros((len(_ROWS), 31), dtype)
    for row, (_, cells, _) in enumerate(_ROWS.values()):
        for column, value in cells.items():
            scores[row, column] = value
    labels = np.array([label for label, _, _ in _ROWS.values()])
    return scores, labels, np.array([rank for _, _, rank in _ROWS.values()])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_and_infinite_scores_are_misses_numpy(dtype):
    scores, labels, want = _nonfinite_rows(dtype)
    got = ranks_numpy(scores, labels)
    for name, rank, expected in zip(_ROWS, got, want, strict=True):
        assert rank == expected, name


def test_nan_and_infinite_scores_are_misses_keras_eager_and_xla():
    scores, labels, _ = _nonfinite_rows()
    # Hits: the two "... elsewhere" rows without NaN (rank 2), "-inf padding" and the three
    # "padding ..." rows (rank 1).
    want = (6 / len(labels), (2 * 1 / 2 + 4) / len(labels))
    np.testing.assert_allclose(_keras_values(scores, labels, k=20), want, rtol=1e-6)
    model = keras.Sequential([keras.Input((31,)), keras.layers.Identity()])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[RecallAtK(20, name="recall"), MrrAtK(20, name="mrr")],
                  jit_compile=True)
    assert model.jit_compile  # the metric compiles under XLA, as in training
    values = model.evaluate(scores, labels.astype("float32"), batch_size=5, return_dict=True,
                            verbose=0)
    np.testing.assert_allclose([values["recall"], values["mrr"]], want, rtol=1e-6)


def test_a_diverged_model_scores_zero_not_one():
    """All-NaN or constant scores used to give Recall@20 = MRR@20 = 1 (ties counted for the
    target)."""
    labels = np.array([1, 2, 3, 4])
    for scores in (np.full((4, 31), np.nan), np.full((4, 31), 0.5)):
        assert recall_mrr_from_ranks(ranks_numpy(scores, labels), 20) == (0.0, 0.0)
        assert _keras_values(scores.astype("float32"), labels, 20) == (0.0, 0.0)


def test_ranks_numpy_rejects_labels_outside_the_items():
    with pytest.raises(ValueError, match=r"item ids 1\.\.6; got 7 at row 1"):
        ranks_numpy(TIED[:2], [1, 7])
    with pytest.raises(ValueError, match="item ids 1"):
        ranks_numpy(TIED[:1], [0])


def test_top_k_items_skip_padding_and_break_ties_by_lower_id():
    np.testing.assert_array_equal(top_k_numpy(TIED[:1], 3), [[1, 3, 4]])
    np.testing.assert_array_equal(top_k_numpy(TIED[5:], 4), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(top_k_numpy(TIED[:1], 20), [[1, 3, 4, 6, 2, 5]])  # k > N


def test_ndcg_from_ranks_by_hand():
    # 1/log2(2) = 1, 1/log2(4) = 1/2, rank 21 and misses give 0.
    assert ndcg_from_ranks(np.array([1, 3, 21, MISS]), 20) == 0.375
    assert ndcg_from_ranks(np.array([7.0]), 20) == pytest.approx(1 / 3)
    assert ndcg_from_ranks(np.zeros(0), 20) == 0.0


# Training-label counts of items 1..6: 6, 3, 3, 2, 1, 0 (15 labels, cuts at 5 and 10). By
# count (ties: lower id first) 1, 2, 3, 4, 5, 6 with labels before them 0, 6, 9, 12, 14, 15:
# head = {1} (0 < 5), torso = {2, 3} (6 and 9 < 10), tail = {4, 5, 6}.
KIND_COUNTS = np.array([6, 3, 3, 2, 1, 0])
KIND_PREFIXES = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 4], [2, 0, 0], [6, 1, 0]])
KIND_LABELS = np.array([2, 1, 4, 6, 3])  # repeat, new, repeat, new, new
KIND_RANKS = np.array([1, 2, 4, MISS, 3])  # K = 3: hits 1, 2, 3; rank 4 and MISS miss


def test_popularity_groups_cut_training_labels_in_thirds():
    np.testing.assert_array_equal(popularity_groups(KIND_COUNTS), [-1, 0, 1, 1, 2, 2, 2])
    # A tie at the cut: items 1 and 2 (3 labels each of 6, cut 2) -> the lower id first.
    np.testing.assert_array_equal(popularity_groups(np.array([3, 3])), [-1, 0, 1])
    np.testing.assert_array_equal(popularity_groups(np.zeros(3)), [-1, 2, 2, 2])


def test_repeat_targets_look_at_the_prefix_clicks_only():
    np.testing.assert_array_equal(repeat_targets(KIND_PREFIXES, KIND_LABELS),
                                  [True, False, True, False, False])


def test_metrics_by_kind_by_hand():
    got = metrics_by_kind(KIND_RANKS, KIND_PREFIXES, KIND_LABELS, KIND_COUNTS, k=3)
    g3 = 1 / np.log2(3)  # NDCG of rank 2; rank 1 -> 1, rank 3 -> 1/2
    want = {  # kind: (count, recall, mrr, ndcg)
        "all": (5, 3 / 5, (1 + 1 / 2 + 1 / 3) / 5, (1 + g3 + 1 / 2) / 5),
        "repeat": (2, 1 / 2, 1 / 2, 1 / 2),  # ranks 1, 4
        "new": (3, 2 / 3, (1 / 2 + 1 / 3) / 3, (g3 + 1 / 2) / 3),  # ranks 2, MISS, 3
        "head": (1, 1.0, 1 / 2, g3),  # label 1: rank 2
        "torso": (2, 1.0, (1 + 1 / 3) / 2, (1 + 1 / 2) / 2),  # labels 2, 3: ranks 1, 3
        "tail": (2, 0.0, 0.0, 0.0),  # labels 4, 6: ranks 4, MISS
    }
    assert list(got) == list(want)
    for kind, (count, recall, mrr, ndcg) in want.items():
        assert got[kind] == {"count": count, "share": pytest.approx(count / 5),
                             "recall": pytest.approx(recall), "mrr": pytest.approx(mrr),
                             "ndcg": pytest.approx(ndcg)}, kind
    alone = metrics_by_kind(KIND_RANKS[:1], KIND_PREFIXES[:1], KIND_LABELS[:1], k=3)
    assert set(alone) == {"all", "repeat", "new"}  # no counts: no popularity groups
    assert alone["new"] == {"count": 0, "share": 0.0, "recall": None, "mrr": None,
                            "ndcg": None}
    assert format_by_kind(alone, k=3).splitlines()[-1].split() == ["new", "0", "0.00%", "-",
                                                                   "-", "-"]
    with pytest.raises(ValueError, match="label_counts holds 3 items but a label is 6"):
        metrics_by_kind(KIND_RANKS, KIND_PREFIXES, KIND_LABELS, KIND_COUNTS[:3])


def test_sample_weight_and_reset():
    weight = np.array([1, 1, 0, 0, 0, 1], "float32")  # ranks 3, 5, 3 count
    np.testing.assert_allclose(_keras_values(TIED, TIED_LABELS, 5, sample_weight=weight),
                               [1.0, (1 / 3 + 1 / 5 + 1 / 3) / 3], rtol=1e-6)
    metric = RecallAtK(5)
    metric.update_state(TIED_LABELS, TIED)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_names_and_config_round_trip():
    assert RecallAtK(20).name == "recall_at_20"
    assert MrrAtK(10, name="mrr@10").name == "mrr@10"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(MrrAtK(7)))
    assert isinstance(clone, MrrAtK) and clone.k == 7


# ------------------------------------------------------------------------- blockwise ranks


def _blockwise(query, table, labels, k, block_size):
    from narm_tf.model.metrics import blockwise_ranks_and_top_k

    ranks, top = blockwise_ranks_and_top_k(query, table, labels, k, block_size)
    return np.asarray(ranks), np.asarray(top)


def test_blockwise_ranks_by_hand_with_ties():
    # D = 1, query 1: item i scores table[i]. Items 1..6 score 3, 1, 3, 3, 0, 2 (padding 9).
    table = np.array([[9], [3], [1], [3], [3], [0], [2]], "float32")
    query = np.ones((4, 1), "float32")
    labels = np.array([1, 2, 5, 6])
    for block_size in (1, 2, 3, 7):
        ranks, top = _blockwise(query, table, labels, 3, block_size)
        np.testing.assert_array_equal(ranks, [3, 5, 6, 4])  # as TIED rows 0-3
        np.testing.assert_array_equal(top[0], [1, 3, 4])  # three 3s: lower ids first


@pytest.mark.parametrize("block_size", [1, 4, 7, 16, 64])
def test_blockwise_ranks_and_top_k_equal_unblocked_on_integer_scores(block_size):
    rng = np.random.default_rng(block_size)
    num_items, dim, batch = 40, 3, 32
    table = rng.integers(-2, 3, size=(num_items + 1, dim)).astype("float32")  # many ties
    query = rng.integers(-2, 3, size=(batch, dim)).astype("float32")
    query[5, 1] = np.nan  # a row of NaN scores: a miss
    table[7] = [np.inf, 0, 0]  # +-inf (or NaN) scores for item 7
    labels = rng.integers(1, num_items + 1, size=batch)
    labels[6] = 7  # a target that may be infinite
    with np.errstate(invalid="ignore"):
        scores = query @ table.T  # exact: small integers (and inf/NaN)
    scores[:, 0] = -1e9  # the model's padding score
    ranks, top = _blockwise(query, table, labels, 5, block_size)
    np.testing.assert_array_equal(ranks, ranks_numpy(scores, labels))
    finite = np.isfinite(scores).all(axis=1)
    np.testing.assert_array_equal(top[finite], top_k_numpy(scores, 5)[finite])
    assert ranks[5] == MISS


# ------------------------------------------------- top-k: one definition, every path


@pytest.mark.parametrize("width", [4096, 5003, 43098])  # divisible, prime (remainder), DIGINETICA
@pytest.mark.parametrize("k", [20, 39])
def test_top_k_equals_tf_top_k_on_wide_rows(width, k):
    """The two-pass top-k (serving, evaluation): same values, indices and tie order as TopKV2."""
    import tensorflow as tf

    from narm_tf.model.metrics import top_k

    rng = np.random.default_rng(width + k)
    scores = rng.standard_normal((3, width)).astype(np.float32)
    scores[1, 100:200] = 5.0  # a run of ties at the top
    scores[2] = np.round(scores[2])  # ties everywhere
    values, indices = top_k(tf.constant(scores), k)
    expected_values, expected_indices = tf.math.top_k(scores, k)
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
    assert indices.dtype == tf.int64


def test_top_k_items_of_a_wide_catalogue_skip_padding_and_break_ties_by_lower_id():
    """Evaluation's lists over 5,000 items (the two-pass top-k): NumPy's stable order."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal((4, 5001)), 1).astype(np.float32)  # many ties
    scores[:, 0] = 100.0  # padding above every item: never listed
    scores[1, 4990:] = 7.0  # a tied run at the end: lower ids first
    want = np.argsort(-scores[:, 1:], axis=1, kind="stable")[:, :20] + 1
    np.testing.assert_array_equal(top_k_numpy(scores, 20), want)


def test_blockwise_ranks_and_top_k_with_wide_blocks_equal_unblocked():
    """Blocks wide enough for the two-pass top-k inside each block, merged across blocks."""
    rng = np.random.default_rng(7)
    num_items, dim, batch = 9000, 3, 8
    table = rng.integers(-3, 4, size=(num_items + 1, dim)).astype("float32")  # many ties
    query = rng.integers(-2, 3, size=(batch, dim)).astype("float32")
    labels = rng.integers(1, num_items + 1, size=batch)
    scores = query @ table.T
    scores[:, 0] = -1e9
    ranks, top = _blockwise(query, table, labels, 20, 4500)  # blocks 0-4499, 4500-8999, 9000
    np.testing.assert_array_equal(ranks, ranks_numpy(scores, labels))
    np.testing.assert_array_equal(top, top_k_numpy(scores, 20))
