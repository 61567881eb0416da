"""narm_tf.data.rules: every preprocessing rule pinned with tiny hand-made click logs and
literal expected outputs; the statistics and the errors of a step that leaves nothing."""

import re

import numpy as np
import pandas as pd
import pytest
from test_clicks import (
    DIGINETICA_HEADER,
    SKU_RULES,
    TEST_DAY,
    log_with_share,
    repeated_sessions,
    sku_log,
    ts,
    write,
    yoochoose_text,
)

from narm_tf.data import clicks as cl
from narm_tf.data import rules
from narm_tf.data.examples import Prefixes


def build_yoochoose(tmp_path, sessions: dict, fraction: int = 1) -> rules.Preprocessed:
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions))
    return rules.preprocess(cl.read_yoochoose_clicks(str(path)), test_days=1, date_unit_seconds=1,
                         fraction=fraction, source=str(path))


def build_diginetica(tmp_path, text: str) -> rules.Preprocessed:
    path = tmp_path / "train-item-views.csv"
    path.write_text(DIGINETICA_HEADER + text)
    return rules.preprocess(cl.read_diginetica_views(str(path)), test_days=7,
                         date_unit_seconds=cl.SECONDS_PER_DAY, source=str(path))


def rows(prefixes: Prefixes) -> list:
    """Prefixes as lists without padding, for literal comparison."""
    return [list(r[r > 0]) for r in prefixes.prefixes]


def test_clicks_are_ordered_by_timeframe_not_file_order(tmp_path):
    result = build_diginetica(tmp_path, (
        "1;NA;30;300;2016-01-01\n1;NA;10;100;2016-01-01\n1;NA;20;200;2016-01-01\n"
        + "".join(f"{s};NA;{item};{t};2016-01-10\n" for s in (2, 3, 4, 5)
                  for item, t in ((20, 60), (10, 50), (30, 70)))))
    assert result.vocabulary.tolist() == [10, 20, 30]
    assert rows(result.train) == [[1, 2], [1]]
    assert result.train.labels.tolist() == [3, 2]
    assert rows(result.test)[:2] == [[1, 2], [1]]
    assert result.test.labels.tolist() == [3, 2] * 4


def test_session_date_is_its_last_click(tmp_path):
    sessions = {**repeated_sessions(1, 1, [10, 20], 5),
                50: [(ts(2, 9), 10), (ts(2, 11), 20)],  # starts before, ends after the split
                51: [(ts(2, 9), 20), (ts(2, 10), 10)],  # ends before the split
                **TEST_DAY}
    result = build_yoochoose(tmp_path, sessions)
    assert 50 in result.test.session_ids.tolist()
    assert 51 in result.train.session_ids.tolist()
    assert result.statistics["split_date"] == 1396434060  # 2014-04-02T10:21:00Z


def test_length_one_sessions_are_dropped_before_item_support(tmp_path):
    # Item 77: 4 clicks in longer sessions + 1 in a length-1 session -> support 4 -> removed.
    sessions = {**repeated_sessions(1, 1, [10, 20, 77], 4), 5: [(ts(1, 20), 77)],
                6: [(ts(1, 21), 10), (ts(1, 22), 20)], **TEST_DAY}
    result = build_yoochoose(tmp_path, sessions)
    assert result.vocabulary.tolist() == [10, 20]
    assert 5 not in result.train.session_ids.tolist()
    assert result.statistics["train_sessions"] == 5


def test_item_support_is_one_pass(tmp_path):
    # Item 7 has exactly 5 clicks; item 8 (1 click) goes, leaving session 9 = [7] -> dropped.
    # Item 7 now has 4 clicks but stays: no iteration to a fixed point. Item 6 (4 clicks) goes.
    sessions = {**repeated_sessions(1, 1, [10, 20, 7, 6], 4),
                9: [(ts(1, 20), 7), (ts(1, 21), 8)], **TEST_DAY}
    result = build_yoochoose(tmp_path, sessions)
    assert result.vocabulary.tolist() == [10, 20, 7]
    assert result.statistics["train_sessions"] == 4
    assert rows(result.train) == [[1, 2], [1]] * 4
    assert result.train.labels.tolist() == [3, 2] * 4


def test_session_dated_exactly_at_the_split_belongs_to_neither(tmp_path):
    sessions = {**repeated_sessions(1, 1, [10, 20], 5),
                60: [(ts(2, 10), 10), (ts(2, 10, 21), 20)],  # dated exactly at the split
                61: [(ts(2, 10), 10), (ts(2, 10, 21, 1), 20)],  # one second after: test
                **TEST_DAY}
    result = build_yoochoose(tmp_path, sessions)
    assert 60 not in result.train.session_ids.tolist() + result.test.session_ids.tolist()
    assert 61 in result.test.session_ids.tolist()
    assert result.statistics["train_sessions"] == 5
    assert result.statistics["test_sessions"] == 6


def test_vocabulary_in_first_appearance_order_of_date_sorted_train(tmp_path):
    # Session 1 (later date) is first in the file; session 2 (earlier) numbers items first.
    sessions = {1: [(ts(1, 12), 30), (ts(1, 13), 40)], 2: [(ts(1, 8), 40), (ts(1, 9), 20)],
                **repeated_sessions(3, 2, [20, 30, 40, 10], 4),
                **repeated_sessions(900, 4, [10, 20], 1)}
    result = build_yoochoose(tmp_path, sessions)
    assert result.vocabulary.tolist() == [40, 20, 30, 10]


def test_unknown_test_items_are_removed(tmp_path):
    # Item 55 is frequent but only in test sessions: removed from them; [10, 55] -> dropped.
    sessions = {**repeated_sessions(1, 1, [10, 20], 5),
                **repeated_sessions(900, 3, [10, 55, 20], 3),
                950: [(ts(3, 20), 10), (ts(3, 21), 55)], 951: [(ts(3, 22), 55), (ts(3, 23), 10)]}
    result = build_yoochoose(tmp_path, sessions)
    assert result.vocabulary.tolist() == [10, 20]
    assert rows(result.test) == [[1]] * 3
    assert result.test.session_ids.tolist() == [900, 901, 902]
    assert result.statistics["test_sessions"] == 3


def test_prefixes_longest_first_and_truncated_to_the_most_recent_19(tmp_path):
    items = [10, 20, 30] * 7 + [10]  # 22 clicks -> 21 prefixes
    sessions = {1: [(ts(1, 10, i), item) for i, item in enumerate(items)], **TEST_DAY}
    result = build_yoochoose(tmp_path, sessions)
    train, validation = result.train, result.validation
    assert len(train) + len(validation) == 21
    everything = sorted(zip(np.concatenate([train.lengths, validation.lengths]).tolist(),
                            map(tuple, rows(train) + rows(validation)), strict=True),
                        reverse=True)
    longest = everything[0]
    assert longest == (21, (3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3))
    assert everything[-1] == (1, (1,))
    assert train.lengths.tolist() == sorted(train.lengths.tolist(), reverse=True)
    assert train.prefixes.shape[1] == 19


def test_prefix_examples_order_and_fractions():
    # Three sessions (date order) of lengths 3, 4, 2 -> 2 + 3 + 1 = 6 prefixes.
    sessions = rules.Sessions(np.array([1, 2, 3]), np.array([10, 20, 30]),
                           np.array([0, 3, 7, 9]), np.array([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    full = rules.prefix_examples(sessions)
    assert rows(full) == [[1, 2], [1], [4, 5, 6], [4, 5], [4], [8]]
    assert full.labels.tolist() == [3, 2, 7, 6, 5, 9]
    assert full.session_ids.tolist() == [1, 1, 2, 2, 2, 3]
    half = rules.prefix_examples(sessions, fraction=2)  # floor(6 / 2) = 3 most recent
    assert rows(half) == [[4, 5], [4], [8]]
    assert rows(rules.prefix_examples(sessions, fraction=4)) == [[8]]  # floor(6 / 4) = 1
    assert len(rules.prefix_examples(sessions, fraction=64)) == 0  # floor(6 / 64) = 0


def test_fraction_keeps_floor_n_over_64_most_recent(tmp_path):
    # 40 sessions of 5 clicks (10, 20, 30, 40, 10) -> 160 train prefixes -> 1/64 keeps 2.
    sessions = {**{s: [(ts(1, s // 10, s % 10 * 5 + i), item)
                       for i, item in enumerate([10, 20, 30, 40, 10])] for s in range(40)},
                **TEST_DAY}
    result = build_yoochoose(tmp_path, sessions, fraction=64)
    assert result.statistics["train_prefixes"] == 2
    assert len(result.train) + len(result.validation) == 2
    assert sorted(result.train.session_ids.tolist() + result.validation.session_ids.tolist()) \
        == [39, 39]
    assert result.statistics["vocabulary_size"] == 4  # the full-training vocabulary
    quarter = build_yoochoose(tmp_path, sessions, fraction=4)
    assert quarter.statistics["train_prefixes"] == 40


def session_prefixes(counts: list) -> Prefixes:
    """Prefixes of sessions 100, 101, ... (date order), session k with counts[k] prefixes."""
    session_ids = np.repeat(100 + np.arange(len(counts)), counts)
    n = len(session_ids)
    return Prefixes(np.ones((n, 19), np.int32), np.arange(n), np.ones(n, np.int64),
                       session_ids)


def test_validation_is_ten_percent_seeded_and_disjoint():
    counts = [1, 2, 3, 4, 5] * 8  # 40 sessions, 120 prefixes
    train = session_prefixes(counts)
    kept, held = rules.hold_out_validation(train, seed=0)
    held_sessions = sorted(set(held.session_ids.tolist()))
    assert len(held_sessions) == 4  # floor(0.1 * 40) sessions, not 10% of the 120 prefixes
    # Every prefix of a held-out session is in validation, none in train.
    assert len(held) == sum(counts[s - 100] for s in held_sessions)
    assert not set(kept.session_ids.tolist()) & set(held_sessions)
    assert len(kept) + len(held) == 120
    assert sorted(kept.labels.tolist() + held.labels.tolist()) == list(range(120))
    for part in (kept, held):  # date order kept
        assert part.labels.tolist() == sorted(part.labels.tolist())
    again = rules.hold_out_validation(train, seed=0)[1]
    assert again.labels.tolist() == held.labels.tolist()
    other = rules.hold_out_validation(train, seed=1)[1]
    assert sorted(set(other.session_ids.tolist())) != held_sessions


def test_time_ordered_validation_holds_out_the_newest_sessions():
    """`by="time"`: the last floor(share * S) sessions in date order, whole, whatever the seed;
    train keeps every older session."""
    counts = [1, 2, 3, 4, 5] * 8  # 40 sessions (100..139 in date order), 120 prefixes
    train = session_prefixes(counts)
    kept, held = rules.hold_out_validation(train, seed=0, by="time")
    assert sorted(set(held.session_ids.tolist())) == [136, 137, 138, 139]
    assert len(held) == 2 + 3 + 4 + 5 and len(kept) == 120 - 14
    assert kept.session_ids.max() == 135 and held.labels.min() > kept.labels.max()
    assert rules.hold_out_validation(train, seed=7, by="time")[1].labels.tolist() == \
        held.labels.tolist()


def test_time_ordered_validation_never_reads_the_test_split(tmp_path):
    """Through preprocess: validation is the newest training sessions, dated before the split
    date; the test split is the same as with a random draw."""
    sessions = {**{k: [(ts(1, 8 + k // 10, k % 10 * 5 + i), item)
                       for i, item in enumerate([10, 20, 30])] for k in range(20)},
                **TEST_DAY}
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions))
    by_time = rules.preprocess_log([str(path)], cl.ClickLog(**{
        **vars(cl.YOOCHOOSE), "validation": "time", "validation_share": 0.2}),
        cl.YOOCHOOSE_COLUMNS)
    random = rules.preprocess_log([str(path)], log_with_share(cl.YOOCHOOSE, 0.2),
                               cl.YOOCHOOSE_COLUMNS)
    assert sorted(set(by_time.validation.session_ids.tolist())) == [16, 17, 18, 19]
    assert by_time.train.session_ids.max() == 15
    assert np.array_equal(by_time.test.prefixes, random.test.prefixes)
    assert set(by_time.test.session_ids.tolist()) == set(TEST_DAY)
    with pytest.raises(ValueError, match="validation must be one of sessions, time; got 'date'"):
        cl.ClickLog(validation="date")


def test_validation_draws_every_session_alike():
    # 20 sessions: 2 held out per seed; over 500 seeds each session expects 50 draws.
    train = session_prefixes([3, 1] * 10)
    draws = np.zeros(20)
    for seed in range(500):
        held = rules.hold_out_validation(train, seed)[1]
        sessions = np.unique(held.session_ids) - 100
        assert len(sessions) == 2
        draws[sessions] += 1
    assert draws.sum() == 1000
    assert draws.min() > 25 and draws.max() < 80  # binomial(500, 0.1): mean 50, sd 6.7


def test_validation_sessions_come_from_the_kept_fraction(tmp_path):
    # 41 sessions of 5 clicks -> 4 prefixes each, 164 in all; 1/4 keeps the last 41 prefixes:
    # the last (shortest) prefix of session 29, which the cut splits, and sessions 30-39 whole
    # -> 11 sessions -> floor(0.1 * 11) = 1 validation session.
    sessions = {**{s: [(ts(1, s // 10, s % 10 * 5 + i), item)
                       for i, item in enumerate([10, 20, 30, 40, 10])] for s in range(40)},
                **TEST_DAY}
    sessions[-1] = [(ts(1, 0, 0, i), item) for i, item in enumerate([10, 20, 30, 40, 10])]
    result = build_yoochoose(tmp_path, sessions, fraction=4)
    stats = result.statistics
    assert (stats["train_sessions"], stats["train_prefixes"]) == (41, 41)
    assert (stats["kept_train_sessions"], stats["validation_sessions"]) == (11, 1)
    kept = set(result.train.session_ids.tolist()) | set(result.validation.session_ids.tolist())
    assert kept == {29, *range(30, 40)}
    split_session = [part.lengths[part.session_ids == 29] for part in (result.train,
                                                                       result.validation)]
    assert np.concatenate(split_session).tolist() == [1]
    assert len(set(result.validation.session_ids.tolist())) == 1
    assert not set(result.train.session_ids.tolist()) & set(result.validation.session_ids.tolist())
    assert stats["validation_prefixes"] == len(result.validation) in (1, 4)


def test_exact_duplicate_clicks_are_counted_and_kept(tmp_path):
    sessions = {**repeated_sessions(1, 1, [10, 20], 5), **TEST_DAY,
                70: [(ts(1, 20), 10), (ts(1, 20), 10),  # exact duplicate
                     (ts(1, 20), 20),  # same time, other item: not a duplicate
                     (ts(1, 20), 10),  # a third copy, after another click: a duplicate
                     (ts(1, 21), 10)],  # same item, later: not a duplicate
                71: [(ts(1, 20), 10), (ts(1, 22), 20)]}  # same click, other session: not one
    result = build_yoochoose(tmp_path, sessions)
    assert result.statistics["duplicate_clicks"] == 2
    # Kept: sessions 1-5 give 1 prefix each, session 70 (5 clicks) 4, session 71 1.
    assert result.statistics["train_prefixes"] == 10
    assert "Exact duplicate clicks (same session, item and time): 2, kept" \
        in rules.duplicates_note(result.statistics)


def test_a_log_with_every_row_twice_reports_every_copy(tmp_path):
    sessions = {**repeated_sessions(1, 1, [10, 20], 5), **TEST_DAY}  # 20 clicks
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions) * 2)
    result = rules.preprocess(cl.read_yoochoose_clicks(str(path)), 1, 1)
    assert result.statistics["duplicate_clicks"] == 20
    assert result.statistics["train_prefixes"] == 15  # 5 sessions of [10, 10, 20, 20]


def test_duplicate_count_agrees_with_pandas_on_random_tied_logs():
    rng = np.random.default_rng(0)
    for _ in range(100):  # few sessions, times, dates and items: many ties and repeats
        n = int(rng.integers(1, 60))
        frame = pd.DataFrame({"session": rng.integers(0, 4, n), "time": rng.integers(0, 3, n),
                              "item": rng.integers(0, 3, n)})
        frame["date"] = frame["time"] // 2
        order = np.lexsort((np.arange(n), frame["time"], frame["session"]))
        columns = (frame[c].to_numpy()[order] for c in ("session", "time", "date", "item"))
        assert rules.duplicate_clicks(*columns) == frame.duplicated().sum()


def test_diginetica_duplicates_share_session_item_and_timeframe(tmp_path):
    result = build_diginetica(tmp_path, (
        "1;NA;10;100;2016-01-01\n1;NA;10;100;2016-01-01\n"  # a duplicate
        "1;NA;20;100;2016-01-01\n1;NA;20;101;2016-01-01\n"  # other item; other timeframe
        "1;NA;30;102;2016-01-01\n"
        + "".join(f"{s};NA;{item};{t};2016-01-10\n" for s in (2, 3, 4, 5)
                  for item, t in ((20, 60), (10, 50), (30, 70)))))
    assert result.statistics["duplicate_clicks"] == 1
    assert rows(result.train) + rows(result.validation) == [[1, 1, 2, 2], [1, 1, 2], [1, 1], [1]]


def test_nothing_left_after_filtering(tmp_path):
    path = write(tmp_path, f"1,{ts(1, 10)},10,0\n2,{ts(1, 11)},10,0\n3,{ts(2, 11)},20,0\n")
    clicks = cl.read_yoochoose_clicks(path)
    with pytest.raises(cl.InputError, match=re.escape(f"{path}: no session is left")):
        rules.preprocess(clicks, 1, 1, source=path)


def test_rules_flow_through_preprocess(tmp_path):
    # Train: [10, 20] x 2, [10, 20, 30] x 3 and session 8 = [10, 20, 30, 10, 20, 30]: item 30
    # is seen 5 times. Test: five sessions [10, 20, 10].
    sessions = {**repeated_sessions(1, 1, [10, 20], 2), **repeated_sessions(3, 1, [10, 20, 30], 3),
                8: [(ts(1, 20, i), item) for i, item in enumerate([10, 20, 30, 10, 20, 30])],
                **repeated_sessions(900, 3, [10, 20, 10], 5)}
    path = write(tmp_path, yoochoose_text(sessions))
    clicks = cl.read_yoochoose_clicks(path)
    spec = rules.preprocess(clicks, 1, 1)  # item 30 seen 5 times: kept
    assert spec.vocabulary.tolist() == [10, 20, 30]
    strict = rules.preprocess(clicks, 1, 1, min_item_support=6)  # 30 goes; session 8 -> 4 clicks
    assert strict.vocabulary.tolist() == [10, 20]
    assert strict.statistics["train_prefixes"] == 2 * 1 + 3 * 1 + 3
    long_only = rules.preprocess(clicks, 1, 1, min_session_length=3)  # sessions 1, 2 go; test too
    assert long_only.statistics["train_sessions"] == 4
    both = rules.preprocess(clicks, 1, 1, min_session_length=3, min_item_support=6)
    assert both.statistics["train_sessions"] == 1  # session 8 = [10, 20, 10, 20]
    short = rules.preprocess(clicks, 1, 1, max_len=2, validation_share=0.5)
    everything = Prefixes(*(np.concatenate([getattr(short.train, f),
                                               getattr(short.validation, f)])
                               for f in ("prefixes", "labels", "lengths", "session_ids")))
    assert short.train.prefixes.shape[1] == 2
    assert rows(everything.take(np.flatnonzero(everything.session_ids == 8))) == \
        [[1, 2], [3, 1], [2, 3], [1, 2], [1]]  # the last 2 of prefixes of 5, 4, 3, 2, 1
    assert short.statistics["validation_sessions"] == 3  # floor(0.5 * 6)


def test_a_window_is_the_log_cut_at_end_date(tmp_path):
    """The window to day 3 = the whole log without its day-4 sessions: day 3 becomes test."""
    sessions = {**repeated_sessions(100, 1, [10, 20, 30], 5), **TEST_DAY,
                **repeated_sessions(950, 4, [30, 10], 5)}
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions))
    log = cl.ClickLog(**{**vars(cl.YOOCHOOSE), "end_date": "2014-04-03",
                         "validation_share": 0.2})  # 5 training sessions: 1 to validation
    window = rules.preprocess_log([str(path)], log, cl.YOOCHOOSE_COLUMNS)
    assert window.statistics["clicks"] == 25  # 15 on day 1, 10 on day 3
    assert sorted(set(window.test.session_ids.tolist())) == [900, 901, 902, 903, 904]
    assert window.vocabulary.tolist() == [10, 20, 30]
    whole = rules.preprocess_log([str(path)], log_with_share(cl.YOOCHOOSE, 0.2),
                              cl.YOOCHOOSE_COLUMNS)
    assert sorted(set(whole.test.session_ids.tolist())) == [950, 951, 952, 953, 954]


def test_end_date_before_every_click(tmp_path):
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(TEST_DAY))
    log = cl.ClickLog(**{**vars(cl.YOOCHOOSE), "end_date": "2014-03-01"})
    with pytest.raises(cl.InputError, match="no click is dated on or before end_date "
                                            "2014-03-01"):
        rules.preprocess_log([str(path)], log, cl.YOOCHOOSE_COLUMNS)


def test_the_statistics_give_the_date_range_read(tmp_path):
    result = rules.preprocess_log([sku_log(tmp_path)], cl.ClickLog(**SKU_RULES))
    assert (result.statistics["first_click"], result.statistics["last_click"]) == \
        ("2014-04-01T00:01:40Z", "2014-04-02T01:01:00Z")


def test_a_validation_share_that_holds_out_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"validation_share must be a number in \(0, 1\)"):
        cl.ClickLog(validation_share=0)
    path = sku_log(tmp_path)  # 3 training sessions: 0.2 of them is none
    with pytest.raises(cl.InputError, match=re.escape(
            f"{path}: validation_share 0.2 of the 3 training session(s) holds out none (early "
            f"stopping needs at least one): raise validation_share to at least 0.333")):
        rules.preprocess_log([path], cl.ClickLog(**{**SKU_RULES, "validation_share": 0.2}))


def test_the_statistics_are_stored_in_one_order(tmp_path):
    """`rules.statistics` fixes the keys' order that a build stores and prints (the Beam path
    builds its dict there too)."""
    result = rules.preprocess_log([sku_log(tmp_path)], cl.ClickLog(**SKU_RULES))
    assert list(result.statistics) == [
        "clicks", "duplicate_clicks", "train_sessions", "test_sessions", "vocabulary_size",
        "train_prefixes", "train_items", "kept_train_sessions", "validation_sessions",
        "validation_prefixes", "test_prefixes", "average_length", "split_date", "fraction",
        "first_click", "last_click"]
    assert result.statistics["average_length"] == 2.0  # 4 sessions of 2 clicks
