"""Baselines against hand-computed scores on three tiny training sessions (N = 5 items).

Training sessions, in date order: s1 = [1, 2, 3], s2 = [2, 3, 2], s3 = [1, 4]; item 5 is never
clicked. Clicks per item: 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 1, 5 -> 0, so the popularity order
(ties: lower id first) is 2, 1, 3, 4, 5.
"""

import numpy as np
import pandas as pd
import pytest

from narm_tf.data.examples import MAX_LEN, Prefixes
from narm_tf.model.metrics import MISS
from narm_tf.research import baselines

NUM_ITEMS = 5
SESSIONS = [[1, 2, 3], [2, 3, 2], [1, 4]]


def make_prefixes(sessions, session_ids=None):
    """Examples as the preprocessing writes them: by session, longest prefix first, last 19."""
    rows, labels, lengths, ids = [], [], [], []
    for index, clicks in enumerate(sessions):
        for length in range(len(clicks) - 1, 0, -1):
            kept = clicks[max(0, length - MAX_LEN):length]
            rows.append(kept + [0] * (MAX_LEN - len(kept)))
            labels.append(clicks[length])
            lengths.append(length)
            ids.append(index if session_ids is None else session_ids[index])
    return Prefixes(np.array(rows, np.int32), np.array(labels, np.int64),
                    np.array(lengths, np.int64), np.array(ids, np.int64))


def query(*clicks_per_prefix):
    """Right-padded prefixes `[n, 19]` and their lengths."""
    prefixes = np.zeros((len(clicks_per_prefix), MAX_LEN), np.int32)
    for row, clicks in enumerate(clicks_per_prefix):
        prefixes[row, :len(clicks)] = clicks
    return prefixes, np.array([len(c) for c in clicks_per_prefix])


def fitted(name, session_dates=None, **params):
    return baselines.BASELINES[name](**params).fit(make_prefixes(SESSIONS), NUM_ITEMS,
                                                   session_dates)


def ranking(model, clicks):
    """Items 1..N from best to worst for one prefix."""
    scores = model.score(*query(clicks))[0]
    return [int(i) for i in np.argsort(-scores[1:], kind="stable") + 1]


def test_training_sessions_recover_clicks_beyond_the_truncation():
    long_session = [1 + (i % 5) for i in range(25)]
    sessions = baselines.training_sessions(make_prefixes([long_session, [3, 4]]))
    np.testing.assert_array_equal(sessions.offsets, [0, 25, 27])
    np.testing.assert_array_equal(sessions.items, long_session + [3, 4])


def test_training_prefixes_merge_validation_in_date_order():
    everything = make_prefixes([[1, 2, 3], [4, 5], [2, 4]], session_ids=[10, 20, 30])
    in_validation = np.isin(np.arange(len(everything)), [1, 2])  # 2nd prefix of 10, all of 20
    train = everything.take(np.flatnonzero(~in_validation))
    validation = everything.take(np.flatnonzero(in_validation))
    merged = baselines.training_prefixes(train, validation)
    np.testing.assert_array_equal(merged.session_ids, [10, 10, 20, 30])
    np.testing.assert_array_equal(merged.lengths, [2, 1, 1, 1])
    np.testing.assert_array_equal(merged.labels, everything.labels)


def test_pop_counts_training_clicks():
    model = fitted("pop")
    np.testing.assert_array_equal(model.raw_scores(*query([4])), [[0, 2, 3, 2, 1, 0]])
    assert ranking(model, [4]) == [2, 1, 3, 4, 5]


def test_spop_counts_session_clicks_then_global_popularity():
    model = fitted("spop")
    np.testing.assert_array_equal(model.raw_scores(*query([3, 4, 3])), [[0, 0, 0, 2, 1, 0]])
    assert ranking(model, [3, 4, 3]) == [3, 4, 2, 1, 5]


def test_itemknn_regularized_cosine_from_last_item():
    model = fitted("itemknn", regularization=1.0)
    # Sessions holding: 1 -> 2, 2 -> 2, 3 -> 2, 4 -> 1; holding both: (1,2) 1, (1,3) 1,
    # (1,4) 1, (2,3) 2. sim = both / sqrt((n_i + 1)(n_j + 1)); sim(i, i) = 0.
    expected = [[0, 0, 1 / 3, 1 / 3, 1 / np.sqrt(6), 0],  # last item 1
                [0, 1 / 3, 0, 2 / 3, 0, 0]]  # last item 2 (item 3 earlier in the prefix)
    np.testing.assert_allclose(model.raw_scores(*query([3, 1], [3, 2])), expected)
    assert ranking(model, [3, 1]) == [4, 2, 3, 1, 5]  # 2 and 3 tie: 2 is more popular


def test_sknn_cosine_neighbors_and_recent_sample():
    # Query {1, 2}: s1 {1,2,3} overlap 2 -> 2/sqrt(2*3); s2 {2,3} -> 1/2; s3 {1,4} -> 1/2.
    c1 = 2 / np.sqrt(6)
    cases = {
        (100, 100): [0, c1 + 0.5, c1 + 0.5, c1 + 0.5, 0.5, 0],  # all three neighbors
        (2, 100): [0, c1 + 0.5, c1, c1, 0.5, 0],  # s1, then s3 over s2 (tie: more recent)
        (100, 2): [0, 0.5, 0.5, 0.5, 0.5, 0],  # candidates: the 2 most recent, s2 and s3
        (100, 1): [0, 0.5, 0, 0, 0.5, 0],  # only s3
    }
    for (k, sample_size), expected in cases.items():
        model = fitted("sknn", k=k, sample_size=sample_size)
        np.testing.assert_allclose(model.raw_scores(*query([1, 2])), [expected], err_msg=str(k))
    assert ranking(fitted("sknn", k=2), [1, 2]) == [1, 2, 3, 4, 5]


def test_vsknn_position_decayed_query_and_neighbors():
    # Query [1, 2] (L = 2): weights 1 -> 1/2, 2 -> 2/2. sim = sum of the shared items' weights:
    # s1 {1,2,3} 3/2, s2 {2,3} 1, s3 {1,4} 1/2. Query [2, 1]: s1 3/2, s2 1/2, s3 1.
    # Query [2, 1, 2] (L = 3): 2 keeps its latest weight 3/3, 1 has 2/3: s1 5/3, s2 1, s3 2/3.
    full = fitted("vsknn", k=100)
    expected = [[0, 2.0, 2.5, 2.5, 0.5, 0], [0, 2.5, 2.0, 2.0, 1.0, 0],
                [0, 7 / 3, 8 / 3, 8 / 3, 2 / 3, 0]]
    np.testing.assert_allclose(full.raw_scores(*query([1, 2], [2, 1], [2, 1, 2])), expected)
    two = fitted("vsknn", k=2)  # [1, 2]: s1 and s2; [2, 1]: s1 and s3 (the order matters)
    np.testing.assert_allclose(two.raw_scores(*query([1, 2], [2, 1])),
                               [[0, 1.5, 2.5, 2.5, 0, 0], [0, 2.5, 1.5, 1.5, 1.0, 0]])
    assert ranking(two, [2, 1]) == [1, 2, 3, 4, 5]  # 2 and 3 tie: 2 is more popular
    # score_decay: a vote is divided by how far back the latest shared click is. Query [1, 2]:
    # s1 and s2 share 2 (1 back): 3/2, 1; s3 shares only 1 (2 back): (1/2) / 2.
    decayed = fitted("vsknn", score_decay=True)
    np.testing.assert_allclose(decayed.raw_scores(*query([1, 2])),
                               [[0, 1.75, 2.5, 2.5, 0.25, 0]])


def test_vsknn_weights_use_the_kept_clicks_of_a_truncated_prefix():
    clicks = [1 + (i % 4) for i in range(MAX_LEN)]  # 1,2,3,4,1,...: item 3 last at position 19
    prefixes, _ = query(clicks)
    weights = baselines.position_weights(prefixes, np.array([25]), NUM_ITEMS).toarray()
    # Latest positions (1-based) among the 19 kept clicks: 1 -> 17, 2 -> 18, 3 -> 19, 4 -> 16.
    np.testing.assert_allclose(weights, [[0, 17 / 19, 18 / 19, 1.0, 16 / 19, 0]])


def test_sr_rules_weighted_by_inverse_distance_from_last_item():
    model = fitted("sr", steps=2)
    # Rules: s1: 1->2 (1), 2->3 (1), 1->3 (1/2); s2: 2->3 (1), 3->2 (1), 2->2 (1/2); s3: 1->4 (1).
    # Divided by the row maximum: from 1, max 1; from 2: 2->3 = 2, 2->2 = 1/2.
    expected = [[0, 0, 1, 0.5, 1, 0], [0, 0, 0.25, 1, 0, 0]]
    np.testing.assert_allclose(model.raw_scores(*query([1], [4, 2])), expected)
    assert ranking(model, [1]) == [2, 4, 3, 1, 5]  # 2 and 4 tie: 2 is more popular
    short = fitted("sr", steps=1)
    np.testing.assert_allclose(short.raw_scores(*query([1])), [[0, 0, 1, 0, 1, 0]])


@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
def test_padding_never_ranks_first_and_ties_are_broken(name):
    model = fitted(name)
    scores = model.score(*query([1], [5], [5, 5, 5], [2, 3, 2, 4]))
    assert scores.shape == (4, NUM_ITEMS + 1)
    assert np.all(scores[:, 0] == -np.inf)
    assert np.all(np.argmax(scores, axis=1) != 0)
    assert all(len(np.unique(row[1:])) == NUM_ITEMS for row in scores)  # a strict order


@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
def test_evaluate_in_batches_equals_one_batch(name):
    model = fitted(name)
    test = make_prefixes([[1, 2, 3, 4], [5, 2], [3, 3, 1]])
    popularity = np.array([0, 3, 2, 1, 1])
    batched = baselines.evaluate(model, test, k=2, batch_size=2, popularity=popularity)
    whole = baselines.evaluate(model, test, k=2, batch_size=len(test), popularity=popularity)
    assert batched == whole and set(batched) == {"recall", "mrr", "ndcg", "coverage",
                                                 "popularity_bias", "count", "by_kind"}


def test_evaluate_pop_by_hand():
    test = make_prefixes([[4, 2], [4, 1], [4, 5]])  # labels 2, 1, 5 -> POP ranks 1, 2, 5
    popularity = np.array([2, 3, 2, 1, 0])  # normalized / 3: item 2 -> 1, item 1 -> 2/3
    result = baselines.evaluate(fitted("pop"), test, k=2, batch_size=2, popularity=popularity)
    by_kind = result.pop("by_kind")
    assert result == {"recall": pytest.approx(2 / 3), "mrr": pytest.approx(0.5),
                      "ndcg": pytest.approx((1 + 1 / np.log2(3)) / 3),
                      "coverage": pytest.approx(2 / 5),  # every list: items 2, 1
                      "popularity_bias": pytest.approx((1 + 2 / 3) / 2), "count": 3}
    # Every target is new (prefix [4]). Label counts 2, 3, 2, 1, 0 (8, cuts 8/3 and 16/3): by
    # popularity 2, 1, 3, 4, 5 with 0, 3, 5, 7, 8 labels before: head {2}, torso {1, 3}.
    assert by_kind["repeat"]["count"] == 0 and by_kind["new"]["count"] == 3
    assert [(by_kind[kind]["count"], by_kind[kind]["recall"], by_kind[kind]["mrr"])
            for kind in ("head", "torso", "tail")] == [(1, 1.0, 1.0), (1, 1.0, 0.5),
                                                       (1, 0.0, 0.0)]


def test_fit_and_evaluate_keeps_the_cutoff_apart_from_a_preset_k():
    everything = make_prefixes(SESSIONS)
    train, validation = everything.take(np.arange(4)), everything.take(np.array([4]))
    test = make_prefixes([[1, 2, 3], [4, 2]])
    preset = {"k": 1, "lambda_snh": None}  # one neighbour; Recall@1 stays the cutoff
    via_params = baselines.fit_and_evaluate("stan", train, validation, test, NUM_ITEMS, k=1,
                                            params=preset)
    model = baselines.BASELINES["stan"](**preset).fit(
        baselines.training_prefixes(train, validation), NUM_ITEMS)
    direct = baselines.evaluate(model, test, k=1)
    assert via_params["recall"] == direct["recall"] and via_params["mrr"] == direct["mrr"]


def test_fit_and_evaluate_takes_popularity_from_train_and_validation_labels():
    everything = make_prefixes(SESSIONS)  # labels: 3, 2 | 2, 3 | 4
    train = everything.take(np.arange(4))
    validation = everything.take(np.array([4]))  # s3's only example: label 4
    test = make_prefixes([[4, 2], [4, 1]])
    result = baselines.fit_and_evaluate("pop", train, validation, test, NUM_ITEMS, k=4)
    # Label counts 0, 2, 2, 1, 0 -> normalized 0, 1, 1, 0.5, 0; POP's list: 2, 1, 3, 4.
    assert result["popularity_bias"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert result["coverage"] == pytest.approx(4 / 5)


class FixedScores(baselines.Pop):
    """Scores given row by row (the rank path of every baseline, with scores it never makes)."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, np.float64)

    def score(self, prefixes, lengths):
        return self.rows[prefixes[:, 0]]


def test_nan_infinite_and_all_equal_scores_are_misses_in_the_baselines_path():
    nan, inf = float("nan"), float("inf")
    rows = np.zeros((7, NUM_ITEMS + 1))  # row r scores the prefixes whose click is r
    rows[1, 2] = nan  # NaN target
    rows[2, 2] = inf  # +inf target
    rows[3, 2] = -inf  # -inf target
    rows[4, 4] = nan  # NaN elsewhere
    rows[5, [0, 2]] = [9.0, 1.0]  # padding above the target never counts: rank 1
    rows[6] = 0.5  # all equal: the target ties with the 4 other items, rank 5 > k = 4
    model = FixedScores(rows).fit(make_prefixes(SESSIONS), NUM_ITEMS)
    test = make_prefixes([[click, 2] for click in range(1, 7)])  # label 2 each
    ranks = baselines.results(model, test, k=4, batch_size=4).ranks
    np.testing.assert_array_equal(ranks, [MISS, MISS, MISS, MISS, 1, 5])


def test_a_nan_raw_score_survives_the_tie_breaking_as_a_miss():
    class NanSpop(baselines.SessionPop):
        def raw_scores(self, prefixes, lengths):
            scores = super().raw_scores(prefixes, lengths)
            scores[:, 3] = np.nan
            return scores

    model = NanSpop().fit(make_prefixes(SESSIONS), NUM_ITEMS)
    ranks = baselines.results(model, make_prefixes([[1, 2]]), k=2).ranks
    np.testing.assert_array_equal(ranks, [MISS])


# STAN and VSTAN on SESSIONS dated 0, 1 and 2 days (s3 the most recent), e = exp(-1).
DAYS = pd.Series([0.0, 1.0, 2.0], index=[0, 1, 2])  # session id -> day
E = np.exp(-1.0)


def stan_similarities():
    """Query [1, 2] with lambda_spw = lambda_snh = 1: weights 2 -> exp(-0) = 1 (the last
    click), 1 -> exp(-1) = e; norm sqrt(1 + e^2). Distinct items: s1 3, s2 2, s3 2; ages
    (days before s3) 2, 1, 0 -> recency e^2, e, 1."""
    norm = np.sqrt(1 + E**2)
    sim1 = (E + 1) / (norm * np.sqrt(3)) * E**2  # s1 shares 1 and 2
    sim2 = 1 / (norm * np.sqrt(2)) * E  # s2 shares 2
    sim3 = E / (norm * np.sqrt(2)) * 1  # s3 shares 1
    return sim1, sim2, sim3


def test_stan_scores_by_hand():
    model = fitted("stan", DAYS, lambda_spw=1, lambda_snh=1, lambda_inh=1)
    sim1, sim2, sim3 = stan_similarities()
    # Latest click on a prefix item: s1 = [1, 2, 3] at 2 (item 2), s2 = [2, 3, 2] at 3,
    # s3 = [1, 4] at 1. Item weight exp(-|latest position of the item - that click|):
    # s1: 1 -> e, 2 -> 1, 3 -> e; s2: 2 (at 3) -> 1, 3 (at 2) -> e; s3: 1 -> 1, 4 -> e.
    expected = [0, sim1 * E + sim3, sim1 + sim2, (sim1 + sim2) * E, sim3 * E, 0]
    np.testing.assert_allclose(model.raw_scores(*query([1, 2])), [expected], atol=1e-6)
    # k = 2: the oldest s1 (recency e^2: sim1 = 0.100) loses to s2 and s3 (0.244 each).
    two = fitted("stan", DAYS, k=2, lambda_spw=1, lambda_snh=1, lambda_inh=1)
    np.testing.assert_allclose(two.raw_scores(*query([1, 2])),
                               [[0, sim3, sim2, sim2 * E, sim3 * E, 0]], atol=1e-6)
    # remind=False: the prefix's items 1 and 2 are not scored.
    forget = fitted("stan", DAYS, lambda_spw=1, lambda_snh=1, lambda_inh=1, remind=False)
    np.testing.assert_allclose(forget.raw_scores(*query([1, 2])),
                               [[0, 0, 0, (sim1 + sim2) * E, sim3 * E, 0]], atol=1e-6)


def test_stan_with_a_repeated_and_a_truncated_prefix():
    # [2, 1, 2]: item 2's latest click is the last (weight 1), item 1 one back (e): the same
    # query vector as [1, 2]. Without the neighbour decay (lambda_snh off), lambda_inh = 1.
    model = fitted("stan", lambda_spw=1, lambda_snh=None, lambda_inh=1)
    norm = np.sqrt(1 + E**2)
    sim1, sim2, sim3 = (E + 1) / (norm * np.sqrt(3)), 1 / (norm * np.sqrt(2)), E / (
        norm * np.sqrt(2))
    expected = [0, sim1 * E + sim3, sim1 + sim2, (sim1 + sim2) * E, sim3 * E, 0]
    np.testing.assert_allclose(model.raw_scores(*query([2, 1, 2])), [expected], atol=1e-6)
    # 19 kept clicks of a 30-click prefix: weights count back from the last kept click, so
    # [5] * 17 + [1, 2] scores as [1, 2] plus the unseen item 5 (weight e^2 in the norm only).
    clicks = [5] * 17 + [1, 2]
    norm5 = np.sqrt(1 + E**2 + E**4)
    prefixes, _ = query(clicks)
    got = model.raw_scores(prefixes, np.array([30]))
    np.testing.assert_allclose(got, [np.array(expected) * norm / norm5], atol=1e-6)


def test_stan_without_decays_is_sknn():
    for k, sample_size in ((100, 100), (2, 100), (100, 2), (100, 1)):
        stan = fitted("stan", k=k, sample_size=sample_size, lambda_spw=None, lambda_snh=None,
                      lambda_inh=None)
        sknn = fitted("sknn", k=k, sample_size=sample_size)
        prefixes = query([1, 2], [4], [3, 2, 3])
        np.testing.assert_allclose(stan.raw_scores(*prefixes), sknn.raw_scores(*prefixes),
                                   atol=1e-12, err_msg=str((k, sample_size)))


def test_stan_near_zero_decays_keep_the_candidates():
    # lambda_spw = 1e-5: item 1 (one back) weighs exp(-1e5) = 0, yet s3 (sharing only item
    # 1) stays a candidate with similarity 0: sample_size 2 keeps s2 and s3, not s1.
    model = fitted("stan", sample_size=2, lambda_spw=1e-5, lambda_snh=None, lambda_inh=None)
    sim2 = 1 / np.sqrt(2)  # s2 shares the last click 2: 1 / (sqrt(1) sqrt(2))
    np.testing.assert_allclose(model.raw_scores(*query([1, 2])),
                               [[0, 0, sim2, sim2, 0, 0]], atol=1e-12)


def test_vstan_scores_by_hand():
    model = fitted("vstan", DAYS, lambda_spw=1, lambda_snh=1, lambda_inh=1, lambda_ipw=1,
                   lambda_idf=1)
    sim1, sim2, sim3 = stan_similarities()
    # Neighbour factor exp(-clicks back of the prefix's latest click it shares): s1 and s2
    # share 2 (the last click) -> 1, s3 shares only 1 (one back) -> e. IDF over 3 sessions
    # and clicks 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 1: 1 + idf = 1 + ln(3/2), 1, 1 + ln(3/2), 1 + ln 3.
    idf1, idf3, idf4 = 1 + np.log(1.5), 1 + np.log(1.5), 1 + np.log(3)
    expected = [0, (sim1 * E + sim3 * E) * idf1, sim1 + sim2, (sim1 + sim2) * E * idf3,
                sim3 * E * E * idf4, 0]
    np.testing.assert_allclose(model.raw_scores(*query([1, 2])), [expected], atol=1e-6)
    # STAN's defaults and VSTAN with both additions off agree.
    off = fitted("vstan", DAYS, lambda_ipw=None, lambda_idf=None)
    np.testing.assert_allclose(off.raw_scores(*query([1, 2], [3])),
                               fitted("stan", DAYS).raw_scores(*query([1, 2], [3])))


def test_stan_session_order_proxies_missing_dates():
    # Without dates: sessions 0, 3.5 and 7 days (PROXY_SPAN_DAYS = 7), so lambda_snh = 3.5
    # gives the recency e^2, e, 1 of days 0, 1, 2 with lambda_snh = 1.
    proxy = fitted("stan", lambda_spw=1, lambda_snh=3.5, lambda_inh=1)
    dated = fitted("stan", DAYS, lambda_spw=1, lambda_snh=1, lambda_inh=1)
    np.testing.assert_allclose(proxy.recency, [E**2, E, 1.0])
    np.testing.assert_allclose(proxy.raw_scores(*query([1, 2])),
                               dated.raw_scores(*query([1, 2])))
    with pytest.raises(ValueError, match="no date for training session 2"):
        fitted("stan", DAYS[:2])
    with pytest.raises(ValueError, match="lambda_inh must be a number > 0"):
        baselines.BASELINES["stan"](lambda_inh=-1)


def test_session_days_from_raw_clicks():
    clicks = pd.DataFrame({"session_id": [7, 7, 9], "date": [0, 43_200, 86_400]})
    np.testing.assert_allclose(baselines.session_days(clicks), [0.5, 1.0])


def test_presets_and_grid():
    yoochoose = baselines.presets("stan", "rsc15_64")
    assert yoochoose["rsc15_64-recall"] == dict(k=500, sample_size=5000, lambda_spw=1,
                                                lambda_snh=10, lambda_inh=1)
    for name, sets in baselines.PRESETS.items():  # every preset builds its model
        for params in sets.values():
            baselines.BASELINES[name](**params)
    assert baselines.grid(k=[1, 2], remind=[True]) == {
        "k=1 remind=True": {"k": 1, "remind": True}, "k=2 remind=True": {"k": 2, "remind": True}}
    with pytest.raises(ValueError, match="no vstan preset starts with 'rsc15_64'"):
        baselines.presets("vstan", "rsc15_64")


def test_select_params_on_validation():
    # Validation prefix [2, 3] -> 2, a repeat. remind=False cannot score item 2 (Recall@1 0);
    # with remind, s2 = [2, 3, 2] (more similar than s1: 2 items, not 3) votes most for 2.
    train = make_prefixes(SESSIONS)
    validation = make_prefixes([[2, 3, 2]]).take(np.array([0]))
    candidates = {"forget": {"remind": False}, **baselines.grid(remind=[True, True])}
    chosen = baselines.select_params("stan", train, validation, NUM_ITEMS, candidates, k=1)
    assert (chosen.key, chosen.params) == ("remind=True", {"remind": True})  # first of a tie
    assert chosen.validation["forget"]["recall"] == 0.0
    assert chosen.validation["remind=True"]["recall"] == 1.0
    with pytest.raises(ValueError, match="metric must be"):
        baselines.select_params("stan", train, validation, NUM_ITEMS, candidates, "hit")
