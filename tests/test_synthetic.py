"""The embedded default click log: deterministic, in the raw YOOCHOOSE format, learnable."""

import re

import numpy as np
import pytest

from narm_tf import synthetic
from narm_tf.data.clicks import SECONDS_PER_DAY, read_yoochoose_clicks
from narm_tf.data.rules import preprocess
from narm_tf.model import metrics

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
    clicks = read_yoochoose_clicks(path)
    assert len(clicks) == len(lines)
    assert clicks["session_id"].nunique() == 200
    days = (clicks["date"].max() - clicks["date"].min()) / SECONDS_PER_DAY
    assert 3 < days < 4.1
    # Every session's clicks are in time order in the file (as in the real YOOCHOOSE file).
    assert (clicks.groupby("session_id")["time"].diff().dropna() > 0).all()


def _markov_and_popularity_recall(path):
    result = preprocess(read_yoochoose_clicks(path), 1, 1)
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
    clicks = read_yoochoose_clicks(path)
    repeats = clicks.duplicated(["session_id", "item_id"]).groupby(clicks["session_id"]).any()
    assert repeats.mean() > 0.2
    counts = np.sort(clicks["item_id"].value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.25 * counts.sum()


def test_default_log_is_unchanged_byte_for_byte(tmp_path):
    """The demo's and the tests' log: the knobs of the presets leave it as it was."""
    import hashlib

    path = synthetic.write_synthetic_clicks(str(tmp_path))
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert digest == "05f3ea4406c7691dc2297e90496d2303191be28cdb3a77fcdc0047c3ef93b156"


def _repeat_share(clicks):
    """Share of clicks after a session's first that repeat an item already clicked in it."""
    repeated = clicks.duplicated(["session_id", "item_id"])
    later = clicks.groupby("session_id").cumcount() > 0
    return repeated[later].mean()


def test_repeat_rate_and_mean_length_are_what_is_asked(tmp_path):
    # A window as large as the catalogue: repeats by chance are rare (~6 / 5000 per click).
    wide = {"num_sessions": 1500, "num_items": 5000, "neighbourhood_size": 5000,
            "mean_length": 8}
    for rate in (0.0, 0.3):
        path = synthetic.write_neighbourhood_clicks(str(tmp_path / f"{rate}.dat"),
                                                    repeat_rate=rate, **wide)
        clicks = read_yoochoose_clicks(path)
        assert abs(_repeat_share(clicks) - rate) < 0.025, rate
        assert abs(clicks.groupby("session_id").size().mean() - 8) < 0.4


def test_sessions_browse_a_neighbourhood(tmp_path):
    """Window of 10 items, no repeats asked: a 30-click session holds at most 10 items."""
    path = synthetic.write_neighbourhood_clicks(
        str(tmp_path / "n.dat"), num_sessions=600, num_items=2000, repeat_rate=0.0,
        neighbourhood_size=10, mean_length=20)
    clicks = read_yoochoose_clicks(path)
    assert clicks.groupby("session_id")["item_id"].nunique().max() <= 10
    assert clicks["item_id"].nunique() > 1500  # the windows cover the catalogue


def test_repeat_shop_preset_size_determinism_and_baselines(tmp_path):
    """~8k items, long sessions, deterministic; S-POP beats SKNN on MRR, SKNN beats it on
    Recall (measured: S-POP 48.48 / 27.81, SKNN 66.37 / 19.50)."""
    from narm_tf.research import baselines

    path = synthetic.write_preset_clicks(str(tmp_path), "repeat_shop")
    again = synthetic.write_preset_clicks(str(tmp_path / "again.dat"), "repeat_shop")
    other = synthetic.write_preset_clicks(str(tmp_path / "other.dat"), "repeat_shop", seed=1)
    assert open(path, "rb").read() == open(again, "rb").read() != open(other, "rb").read()
    clicks = read_yoochoose_clicks(path)
    assert 7500 <= clicks["item_id"].nunique() <= 8000
    assert clicks.groupby("session_id").size().mean() > 12
    assert 0.3 < _repeat_share(clicks) < 0.6
    data = preprocess(clicks, 1, 1)
    num_items = data.statistics["vocabulary_size"]
    spop, sknn = (baselines.fit_and_evaluate(name, data.train, data.validation, data.test,
                                             num_items) for name in ("spop", "sknn"))
    assert sknn["recall"] > spop["recall"] + 0.1
    assert spop["mrr"] > sknn["mrr"] + 0.05


def test_bad_knobs_are_refused(tmp_path):
    common = {"num_sessions": 10, "num_items": 50}
    with pytest.raises(ValueError, match="repeat_rate"):
        synthetic.write_neighbourhood_clicks(str(tmp_path), repeat_rate=1.0,
                                             neighbourhood_size=5, mean_length=4, **common)
    with pytest.raises(ValueError, match="neighbourhood_size"):
        synthetic.write_neighbourhood_clicks(str(tmp_path), repeat_rate=0.1,
                                             neighbourhood_size=51, mean_length=4, **common)
    with pytest.raises(ValueError, match="--preset"):
        synthetic.write_preset_clicks(str(tmp_path), "nope")


# ------------------------------------------------------------------------------ drift_shop


@pytest.fixture(scope="module")
def drift_shop(tmp_path_factory):
    """The drift_shop log's clicks and its `yoochoose_full` splits, made once."""
    path = synthetic.write_preset_clicks(str(tmp_path_factory.mktemp("drift")), "drift_shop")
    clicks = read_yoochoose_clicks(path)
    return clicks, preprocess(clicks, 1, 1)


def _repeat_target_share(split) -> float:
    return float(metrics.repeat_targets(split.prefixes, split.labels).mean())


def test_drift_shop_has_the_shape_of_the_unseen_log(drift_shop):
    """~8k items, short sessions (mean test prefix ~3.4 clicks), repeat targets ~1.7x as
    common in training as on the test day (measured: 7,838 items, 3.42, 36.8% vs 21.7%)."""
    clicks, data = drift_shop
    assert 250_000 < len(clicks) < 450_000
    assert 7500 <= data.statistics["vocabulary_size"] <= 8500
    assert 4.5 < clicks.groupby("session_id").size().mean() < 5.3
    assert 3.2 < data.test.lengths.mean() < 3.7
    train, test = _repeat_target_share(data.train), _repeat_target_share(data.test)
    assert 0.33 < train < 0.40 and 0.18 < test < 0.25
    assert 1.5 < train / test < 2.0
    # Session-random validation looks like training, not like the test day.
    assert abs(_repeat_target_share(data.validation) - train) < 0.02


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two count vectors (ties: average ranks)."""
    import pandas as pd

    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def test_drift_shop_popularity_moves_between_training_and_test(drift_shop):
    """Items launch and fade: label counts of training and of the test day barely agree on
    which items are popular (measured: rank correlation 0.31)."""
    _, data = drift_shop
    n = data.statistics["vocabulary_size"] + 1
    train = np.bincount(data.train.labels, minlength=n)[1:]
    test = np.bincount(data.test.labels, minlength=n)[1:]
    assert _rank_correlation(train, test) < 0.45


def _transitions(clicks, first_day: int, last_day: int) -> np.ndarray:
    """Codes of the (item, next item) pairs of different items, of sessions dated in days
    first_day..last_day of the log (day 0 is the first)."""
    clicks = clicks.sort_values(["session_id", "time"], kind="stable")
    day = (clicks["date"].to_numpy() - synthetic.START_MS // 1000) // SECONDS_PER_DAY
    sessions, items = clicks["session_id"].to_numpy(), clicks["item_id"].to_numpy()
    keep = ((sessions[1:] == sessions[:-1]) & (items[1:] != items[:-1])
            & (day[1:] >= first_day) & (day[1:] <= last_day))
    return items[:-1][keep] * 10**10 + items[1:][keep]


def test_drift_shop_test_day_follows_the_latest_co_visits(drift_shop):
    """The listings are rearranged day by day: of the test day's transitions between items
    clicked in both periods, far more were also made in the last two training days than
    in days 7-8 (measured: 23% vs 1.8%)."""
    clicks, _ = drift_shop
    test = _transitions(clicks, 13, 13)

    def share_seen(first_day):
        past = _transitions(clicks, first_day, first_day + 1)
        known = np.unique(np.concatenate([past // 10**10, past % 10**10]))
        both = np.isin(test // 10**10, known) & np.isin(test % 10**10, known)
        return np.isin(test[both], past).mean()

    recent, older = share_seen(11), share_seen(7)
    assert recent > 0.15
    assert recent > 4 * older


def test_drift_shop_is_seeded(tmp_path):
    small = {**synthetic.DRIFT_PRESETS["drift_shop"], "num_sessions": 3000}
    a = synthetic.write_drift_clicks(str(tmp_path / "a.dat"), **small, seed=5)
    b = synthetic.write_drift_clicks(str(tmp_path / "b.dat"), **small, seed=5)
    c = synthetic.write_drift_clicks(str(tmp_path / "c.dat"), **small, seed=6)
    assert open(a, "rb").read() == open(b, "rb").read() != open(c, "rb").read()


def test_bad_drift_knobs_are_refused(tmp_path):
    preset = synthetic.DRIFT_PRESETS["drift_shop"]
    for change, message in (({"repeat_start": 1.2}, "repeat_start must be in"),
                            ({"jump_rate": 0.6}, "plus jump_rate"),
                            ({"mean_length": 2}, "mean_length"),
                            ({"num_items": 40}, "live items")):
        with pytest.raises(ValueError, match=message):
            synthetic.write_drift_clicks(str(tmp_path), **{**preset, "num_sessions": 50,
                                                          **change})
