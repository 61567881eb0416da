"""The embedded default click log: deterministic, in the raw YOOCHOOSE format, learnable."""

import re

import numpy as np

from narm_tf import metrics, preprocessing, synthetic

LINE = re.compile(r"^\d+,\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z,\d+,0$")


def test_deterministic_and_seeded(tmp_path):
    a = synthetic.write_synthetic_clicks(str(tmp_path / "a.dat"), num_sessions=300, seed=3)
    b = synthetic.write_synthetic_clicks(str(tmp_path / "b.dat"), num_sessions=300, seed=3)
    c = synthetic.write_synthetic_clicks(str(tmp_path / "c.dat"), num_sessions=300, seed=4)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()


def test_raw_yoochoose_format_that_the_reader_parses(tmp_path):
    path = synthetic.write_synthetic_clicks(str(tmp_path), num_sessions=200, num_days=4)
    assert path == str(tmp_path / "yoochoose-clicks.dat")
    lines = open(path).read().splitlines()
    assert all(LINE.match(line) for line in lines)
    clicks = preprocessing.read_yoochoose_clicks(path)
    assert len(clicks) == len(lines)
    assert clicks["session_id"].nunique() == 200
    days = (clicks["date"].max() - clicks["date"].min()) / preprocessing.SECONDS_PER_DAY
    assert 3 < days < 4.1
    # Every session's clicks are in time order in the file (as in the real YOOCHOOSE file).
    assert (clicks.groupby("session_id")["time"].diff().dropna() > 0).all()


def _markov_and_popularity_recall(path):
    result = preprocessing.preprocess(preprocessing.read_yoochoose_clicks(path), 1, 1)
    train, test = result.train, result.test
    n = len(result.vocabulary) + 1
    last = lambda p: p.prefixes[np.arange(len(p)), np.minimum(p.lengths, 19) - 1]  # noqa: E731
    transitions = np.zeros((n, n))
    np.add.at(transitions, (last(train), train.labels), 1)
    popularity = np.bincount(train.labels, minlength=n).astype(float)
    markov = transitions[last(test)] + 1e-6 * popularity  # popularity breaks ties
    recall_pop, _ = metrics.recall_mrr_from_ranks(
        metrics.ranks_numpy(np.tile(popularity, (len(test), 1)), test.labels))
    recall_markov, _ = metrics.recall_mrr_from_ranks(metrics.ranks_numpy(markov, test.labels))
    return result, recall_markov, recall_pop


def test_default_log_is_learnable_well_above_popularity(tmp_path):
    path = synthetic.write_synthetic_clicks(str(tmp_path))
    result, recall_markov, recall_pop = _markov_and_popularity_recall(path)
    stats = result.statistics
    assert 4000 < stats["train_sessions"] and 500 < stats["test_sessions"]
    assert 500 <= stats["vocabulary_size"] <= 800
    assert recall_pop < 0.25
    assert recall_markov > recall_pop + 0.5  # measured: 0.87 vs 0.13


def test_repeat_clicks_and_skewed_popularity(tmp_path):
    path = synthetic.write_synthetic_clicks(str(tmp_path), num_sessions=1000)
    clicks = preprocessing.read_yoochoose_clicks(path)
    repeats = clicks.duplicated(["session_id", "item_id"]).groupby(clicks["session_id"]).any()
    assert repeats.mean() > 0.2
    counts = np.sort(clicks["item_id"].value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.25 * counts.sum()
