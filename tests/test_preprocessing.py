"""Pins every preprocessing rule (docs/data.md, steps 1-9) with tiny hand-made click logs
and literal expected outputs."""

import gzip
import re
import zipfile

import numpy as np
import pandas as pd
import pytest

from narm_tf.data import preprocessing as pp

DIGINETICA_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"


def ts(day: int, hour: int, minute: int = 0, second: int = 0) -> str:
    """A YOOCHOOSE timestamp on 2014-04-<day>."""
    return f"2014-04-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.000Z"


def yoochoose_text(sessions: dict) -> str:
    """{session_id: [(timestamp, item), ...]} -> raw YOOCHOOSE lines (file order as given)."""
    return "".join(f"{sid},{t},{item},0\n" for sid, clicks in sessions.items()
                   for t, item in clicks)


def build_yoochoose(tmp_path, sessions: dict, fraction: int = 1) -> pp.Preprocessed:
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions))
    return pp.preprocess(pp.read_yoochoose_clicks(str(path)), test_days=1, date_unit_seconds=1,
                         fraction=fraction, source=str(path))


def build_diginetica(tmp_path, text: str) -> pp.Preprocessed:
    path = tmp_path / "train-item-views.csv"
    path.write_text(DIGINETICA_HEADER + text)
    return pp.preprocess(pp.read_diginetica_views(str(path)), test_days=7,
                         date_unit_seconds=pp.SECONDS_PER_DAY, source=str(path))


def repeated_sessions(first_id: int, day: int, items: list, copies: int) -> dict:
    """`copies` sessions clicking `items` on 2014-04-<day>: session k at 10:00 + 5k min, 1/min."""
    return {first_id + k: [(ts(day, 10, 5 * k + i), item) for i, item in enumerate(items)]
            for k in range(copies)}


# Five test sessions on day 3 clicking 10, 20; the last click (day 3 10:21) fixes the split
# point at day 2 10:21:00 unless a test adds later clicks.
TEST_DAY = repeated_sessions(900, 3, [10, 20], 5)


def rows(prefixes: pp.Prefixes) -> list:
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
    sessions = pp.Sessions(np.array([1, 2, 3]), np.array([10, 20, 30]),
                           np.array([0, 3, 7, 9]), np.array([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    full = pp.prefix_examples(sessions)
    assert rows(full) == [[1, 2], [1], [4, 5, 6], [4, 5], [4], [8]]
    assert full.labels.tolist() == [3, 2, 7, 6, 5, 9]
    assert full.session_ids.tolist() == [1, 1, 2, 2, 2, 3]
    half = pp.prefix_examples(sessions, fraction=2)  # floor(6 / 2) = 3 most recent
    assert rows(half) == [[4, 5], [4], [8]]
    assert rows(pp.prefix_examples(sessions, fraction=4)) == [[8]]  # floor(6 / 4) = 1
    assert len(pp.prefix_examples(sessions, fraction=64)) == 0  # floor(6 / 64) = 0


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


def session_prefixes(counts: list) -> pp.Prefixes:
    """Prefixes of sessions 100, 101, ... (date order), session k with counts[k] prefixes."""
    session_ids = np.repeat(100 + np.arange(len(counts)), counts)
    n = len(session_ids)
    return pp.Prefixes(np.ones((n, 19), np.int32), np.arange(n), np.ones(n, np.int64),
                       session_ids)


def test_validation_is_ten_percent_seeded_and_disjoint():
    counts = [1, 2, 3, 4, 5] * 8  # 40 sessions, 120 prefixes
    train = session_prefixes(counts)
    kept, held = pp.hold_out_validation(train, seed=0)
    held_sessions = sorted(set(held.session_ids.tolist()))
    assert len(held_sessions) == 4  # floor(0.1 * 40) sessions, not 10% of the 120 prefixes
    # Every prefix of a held-out session is in validation, none in train.
    assert len(held) == sum(counts[s - 100] for s in held_sessions)
    assert not set(kept.session_ids.tolist()) & set(held_sessions)
    assert len(kept) + len(held) == 120
    assert sorted(kept.labels.tolist() + held.labels.tolist()) == list(range(120))
    for part in (kept, held):  # date order kept
        assert part.labels.tolist() == sorted(part.labels.tolist())
    again = pp.hold_out_validation(train, seed=0)[1]
    assert again.labels.tolist() == held.labels.tolist()
    other = pp.hold_out_validation(train, seed=1)[1]
    assert sorted(set(other.session_ids.tolist())) != held_sessions


def test_time_ordered_validation_holds_out_the_newest_sessions():
    """`by="time"`: the last floor(share * S) sessions in date order, whole, whatever the seed;
    train keeps every older session."""
    counts = [1, 2, 3, 4, 5] * 8  # 40 sessions (100..139 in date order), 120 prefixes
    train = session_prefixes(counts)
    kept, held = pp.hold_out_validation(train, seed=0, by="time")
    assert sorted(set(held.session_ids.tolist())) == [136, 137, 138, 139]
    assert len(held) == 2 + 3 + 4 + 5 and len(kept) == 120 - 14
    assert kept.session_ids.max() == 135 and held.labels.min() > kept.labels.max()
    assert pp.hold_out_validation(train, seed=7, by="time")[1].labels.tolist() == \
        held.labels.tolist()


def test_time_ordered_validation_never_reads_the_test_split(tmp_path):
    """Through preprocess: validation is the newest training sessions, dated before the split
    date; the test split is the same as with a random draw."""
    sessions = {**{k: [(ts(1, 8 + k // 10, k % 10 * 5 + i), item)
                       for i, item in enumerate([10, 20, 30])] for k in range(20)},
                **TEST_DAY}
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions))
    by_time = pp.preprocess_log([str(path)], pp.ClickLog(**{
        **vars(pp.YOOCHOOSE), "validation": "time", "validation_share": 0.2}),
        pp.YOOCHOOSE_COLUMNS)
    random = pp.preprocess_log([str(path)], log_with_share(pp.YOOCHOOSE, 0.2),
                               pp.YOOCHOOSE_COLUMNS)
    assert sorted(set(by_time.validation.session_ids.tolist())) == [16, 17, 18, 19]
    assert by_time.train.session_ids.max() == 15
    assert np.array_equal(by_time.test.prefixes, random.test.prefixes)
    assert set(by_time.test.session_ids.tolist()) == set(TEST_DAY)
    with pytest.raises(ValueError, match="validation must be one of sessions, time; got 'date'"):
        pp.ClickLog(validation="date")


def test_validation_draws_every_session_alike():
    # 20 sessions: 2 held out per seed; over 500 seeds each session expects 50 draws.
    train = session_prefixes([3, 1] * 10)
    draws = np.zeros(20)
    for seed in range(500):
        held = pp.hold_out_validation(train, seed)[1]
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
        in pp.duplicates_note(result.statistics)


def test_a_log_with_every_row_twice_reports_every_copy(tmp_path):
    sessions = {**repeated_sessions(1, 1, [10, 20], 5), **TEST_DAY}  # 20 clicks
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions) * 2)
    result = pp.preprocess(pp.read_yoochoose_clicks(str(path)), 1, 1)
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
        assert pp._duplicate_clicks(*columns) == frame.duplicated().sum()


def test_diginetica_duplicates_share_session_item_and_timeframe(tmp_path):
    result = build_diginetica(tmp_path, (
        "1;NA;10;100;2016-01-01\n1;NA;10;100;2016-01-01\n"  # a duplicate
        "1;NA;20;100;2016-01-01\n1;NA;20;101;2016-01-01\n"  # other item; other timeframe
        "1;NA;30;102;2016-01-01\n"
        + "".join(f"{s};NA;{item};{t};2016-01-10\n" for s in (2, 3, 4, 5)
                  for item, t in ((20, 60), (10, 50), (30, 70)))))
    assert result.statistics["duplicate_clicks"] == 1
    assert rows(result.train) + rows(result.validation) == [[1, 1, 2, 2], [1, 1, 2], [1, 1], [1]]


# ------------------------------------------------------------------------------ errors


def write(tmp_path, text, name="yoochoose-clicks.dat"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, where", [
    ("1;2014-04-01T10:00:00.000Z;10;0\n", "line 1: expected 4 fields separated by ','"),
    (f"1,{ts(1, 10)},10,0\n1,{ts(1, 11)},20,0\n2,{ts(1, 12)},30\n", "line 3: expected 4 fields"),
    (f"1,{ts(1, 10)},10,0\n1,2014-13-01 10:00,20,0\n",
     "line 2: field 2 (time) value '2014-13-01 10:00' is not an ISO-8601 time"),
    (f"1,{ts(1, 10)},abc,0\n", "line 1: field 3 (item) value 'abc' is not an integer id"),
    (f"1,{ts(1, 10)},+5,0\n", "line 1: field 3 (item) value '+5' is not an integer id"),
    (f"1,{ts(1, 10)},10,0\n1,{ts(1, 11)},9223372036854775808,0\n",
     "line 2: field 3 (item) value '9223372036854775808' is outside the int64 range"),
    (f"-9223372036854775809,{ts(1, 10)},10,0\n",
     "line 1: field 1 (session) value '-9223372036854775809' is outside the int64 range"),
])
def test_bad_yoochoose_lines_are_named(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(pp.InputError, match=re.escape(f"{path}, {where}")):
        pp.read_yoochoose_clicks(path)


def test_bad_diginetica_lines_are_named(tmp_path):
    path = write(tmp_path, "session_id,user_id,item_id,timeframe,eventdate\n", "views.csv")
    with pytest.raises(pp.InputError, match=re.escape(f"{path}, line 1: expected the header")):
        pp.read_diginetica_views(path)
    path = write(tmp_path, DIGINETICA_HEADER + "1;NA;10;5;2016-01-01\n1;NA;10;6;2016-02-30\n",
                 "views.csv")
    message = f"{path}, line 3: field 5 (time) value '2016-02-30' is not a day YYYY-MM-DD"
    with pytest.raises(pp.InputError, match=re.escape(message)):
        pp.read_diginetica_views(path)
    path = write(tmp_path, DIGINETICA_HEADER, "views.csv")
    with pytest.raises(pp.InputError, match="header but no clicks"):
        pp.read_diginetica_views(path)
    path = write(tmp_path, DIGINETICA_HEADER + "1;NA;18446744073709551616;5;2016-01-01\n",
                 "views.csv")
    message = (f"{path}, line 2: field 3 (item) value '18446744073709551616' is outside the "
               f"int64 range")
    with pytest.raises(pp.InputError, match=re.escape(message)):
        pp.read_diginetica_views(path)


def test_int64_bounds_are_read(tmp_path):
    path = write(tmp_path, f"9223372036854775807,{ts(1, 10)},-9223372036854775808,0\n")
    clicks = pp.read_yoochoose_clicks(path)
    assert clicks["session_id"].tolist() == [9223372036854775807]
    assert clicks["item_id"].tolist() == [-9223372036854775808]


@pytest.mark.parametrize("reader, name, text", [
    (pp.read_yoochoose_clicks, "yoochoose-clicks.dat", f"1,{ts(1, 10)},10,0\n"),
    (pp.read_diginetica_views, "train-item-views.csv",
     DIGINETICA_HEADER + "1;NA;10;5;2016-01-01\n"),
])
def test_gzip_file_is_named_compressed(tmp_path, reader, name, text):
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    message = f"{path}: the file is gzip-compressed: decompress it first"
    with pytest.raises(pp.InputError, match=re.escape(message)):
        reader(str(path))


def test_zip_archive_is_named_compressed(tmp_path):
    path = tmp_path / "yoochoose-clicks.dat"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("yoochoose-clicks.dat", f"1,{ts(1, 10)},10,0\n")
    with pytest.raises(pp.InputError, match=re.escape(f"{path}: the file is zip-compressed")):
        pp.read_yoochoose_clicks(str(path))


def test_empty_and_missing_files(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(pp.InputError, match=re.escape(f"{path}: the file is empty")):
        pp.read_yoochoose_clicks(path)
    missing = str(tmp_path / "nope.dat")
    with pytest.raises(FileNotFoundError, match=re.escape(f"Click file not found: {missing}")):
        pp.read_yoochoose_clicks(missing)


def test_nothing_left_after_filtering(tmp_path):
    path = write(tmp_path, f"1,{ts(1, 10)},10,0\n2,{ts(1, 11)},10,0\n3,{ts(2, 11)},20,0\n")
    clicks = pp.read_yoochoose_clicks(path)
    with pytest.raises(pp.InputError, match=re.escape(f"{path}: no session is left")):
        pp.preprocess(clicks, 1, 1, source=path)


def test_rules_flow_through_preprocess(tmp_path):
    # Train: [10, 20] x 2, [10, 20, 30] x 3 and session 8 = [10, 20, 30, 10, 20, 30]: item 30
    # is seen 5 times. Test: five sessions [10, 20, 10].
    sessions = {**repeated_sessions(1, 1, [10, 20], 2), **repeated_sessions(3, 1, [10, 20, 30], 3),
                8: [(ts(1, 20, i), item) for i, item in enumerate([10, 20, 30, 10, 20, 30])],
                **repeated_sessions(900, 3, [10, 20, 10], 5)}
    path = write(tmp_path, yoochoose_text(sessions))
    clicks = pp.read_yoochoose_clicks(path)
    spec = pp.preprocess(clicks, 1, 1)  # item 30 seen 5 times: kept
    assert spec.vocabulary.tolist() == [10, 20, 30]
    strict = pp.preprocess(clicks, 1, 1, min_item_support=6)  # 30 goes; session 8 -> 4 clicks
    assert strict.vocabulary.tolist() == [10, 20]
    assert strict.statistics["train_prefixes"] == 2 * 1 + 3 * 1 + 3
    long_only = pp.preprocess(clicks, 1, 1, min_session_length=3)  # sessions 1, 2 go; test too
    assert long_only.statistics["train_sessions"] == 4
    both = pp.preprocess(clicks, 1, 1, min_session_length=3, min_item_support=6)
    assert both.statistics["train_sessions"] == 1  # session 8 = [10, 20, 10, 20]
    short = pp.preprocess(clicks, 1, 1, max_len=2, validation_share=0.5)
    everything = pp.Prefixes(*(np.concatenate([getattr(short.train, f),
                                               getattr(short.validation, f)])
                               for f in ("prefixes", "labels", "lengths", "session_ids")))
    assert short.train.prefixes.shape[1] == 2
    assert rows(everything.take(np.flatnonzero(everything.session_ids == 8))) == \
        [[1, 2], [3, 1], [2, 3], [1, 2], [1]]  # the last 2 of prefixes of 5, 4, 3, 2, 1
    assert short.statistics["validation_sessions"] == 3  # floor(0.5 * 6)


@pytest.mark.parametrize("time_format, times", [
    ("epoch_s", ["1396310400", "1396310460"]),
    ("epoch_ms", ["1396310400000", "1396310460000"]),
    ("iso", ["2014-04-01T00:00:00.000000Z", "2014-04-01T02:01:00+02:00"]),
])
def test_time_formats_give_ms_order_and_second_dates(tmp_path, time_format, times):
    lines = [f"1;{item};{t}\n" for item, t in zip((10, 20), times, strict=True)]
    path = write(tmp_path, "".join(lines), "log.csv")
    log = pp.ClickLog(header=False, delimiter=";", session=0, item=1, time=2,
                      time_format=time_format)
    clicks = pp.read_log([path], log)
    assert clicks["date"].tolist() == [1396310400, 1396310460]
    assert clicks["item_id"].tolist() == [10, 20] and log.date_unit_seconds == 1


def test_click_log_defaults_are_the_spec_and_csv_with_a_header():
    log = pp.ClickLog()
    assert (log.format, log.files, log.delimiter, log.header) == ("csv", "*.csv", ",", True)
    assert (log.test_days, log.min_item_support, log.min_session_length, log.max_len,
            log.fraction, log.validation_share, log.seed) == (1, 5, 2, 19, 1, 0.1, 0)
    assert pp.ClickLog(files="clicks-*.parquet").format == "parquet"
    assert pp.ClickLog(format="parquet").files == "*.parquet"


# ------------------------------------------------------------------------------ end_date


def test_end_date_keeps_clicks_before_the_next_utc_midnight(tmp_path):
    """end_date 2014-04-03 keeps 04-03T23:59:59.999Z and drops 04-04T00:00:00.000Z: session 1
    loses its last click (date 04-03 23:59:59), session 2 (all on 04-04) goes entirely."""
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text("1,2014-04-03T23:00:00.000Z,10,0\n1,2014-04-03T23:59:59.999Z,20,0\n"
                    "1,2014-04-04T00:00:00.000Z,30,0\n2,2014-04-04T10:00:00.000Z,10,0\n"
                    "2,2014-04-04T10:01:00.000Z,20,0\n")
    log = pp.ClickLog(**{**vars(pp.YOOCHOOSE), "end_date": "2014-04-03"})
    clicks = pp.read_log([str(path)], log, pp.YOOCHOOSE_COLUMNS)
    assert clicks["session_id"].tolist() == [1, 1]
    assert clicks["item_id"].tolist() == [10, 20]
    assert log.date_limit == 1396569600  # 2014-04-04T00:00:00Z in seconds
    assert len(pp.read_log([str(path)], pp.YOOCHOOSE, pp.YOOCHOOSE_COLUMNS)) == 5  # no cut


def test_end_date_on_day_dates_is_inclusive(tmp_path):
    """DIGINETICA dates are days: end_date 2016-05-02 keeps eventdate 2016-05-02."""
    path = tmp_path / "train-item-views.csv"
    path.write_text(DIGINETICA_HEADER + "1;;10;1;2016-05-01\n1;;20;2;2016-05-02\n"
                    "2;;10;1;2016-05-03\n")
    log = pp.ClickLog(**{**vars(pp.DIGINETICA), "end_date": "2016-05-02"})
    clicks = pp.read_log([str(path)], log, pp.DIGINETICA_COLUMNS)
    assert clicks["item_id"].tolist() == [10, 20]
    assert log.date_limit == 16924  # days from 1970-01-01 to 2016-05-03


def test_a_window_is_the_log_cut_at_end_date(tmp_path):
    """The window to day 3 = the whole log without its day-4 sessions: day 3 becomes test."""
    sessions = {**repeated_sessions(100, 1, [10, 20, 30], 5), **TEST_DAY,
                **repeated_sessions(950, 4, [30, 10], 5)}
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(sessions))
    log = pp.ClickLog(**{**vars(pp.YOOCHOOSE), "end_date": "2014-04-03",
                         "validation_share": 0.2})  # 5 training sessions: 1 to validation
    window = pp.preprocess_log([str(path)], log, pp.YOOCHOOSE_COLUMNS)
    assert window.statistics["clicks"] == 25  # 15 on day 1, 10 on day 3
    assert sorted(set(window.test.session_ids.tolist())) == [900, 901, 902, 903, 904]
    assert window.vocabulary.tolist() == [10, 20, 30]
    whole = pp.preprocess_log([str(path)], log_with_share(pp.YOOCHOOSE, 0.2),
                              pp.YOOCHOOSE_COLUMNS)
    assert sorted(set(whole.test.session_ids.tolist())) == [950, 951, 952, 953, 954]


@pytest.mark.parametrize("value", ["2014-4-5", "2014-04-31", "yesterday", 20140405])
def test_bad_end_date_is_named(value):
    with pytest.raises(ValueError, match=r"end_date must be a day YYYY-MM-DD .*" +
                       re.escape(repr(value))):
        pp.ClickLog(end_date=value)


def test_end_date_before_every_click(tmp_path):
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_text(TEST_DAY))
    log = pp.ClickLog(**{**vars(pp.YOOCHOOSE), "end_date": "2014-03-01"})
    with pytest.raises(pp.InputError, match="no click is dated on or before end_date "
                                            "2014-03-01"):
        pp.preprocess_log([str(path)], log, pp.YOOCHOOSE_COLUMNS)


def log_with_share(log: pp.ClickLog, share: float) -> pp.ClickLog:
    """`log` holding out `share` of the training sessions for validation."""
    return pp.ClickLog(**{**vars(log), "validation_share": share})


# ------------------------------------------------------------------- ids as the log writes them


def sku_log(tmp_path, rename=None) -> str:
    """A shop's CSV: three training sessions and one test session over SKUs, a zero-padded
    number and a plain one (`00215336475` and `215336475` are two different items)."""
    rename = rename or {}
    items = {"a": "SKU-6475A", "b": "00215336475", "c": "215336475"}
    clicks = [("s1", "a", 100), ("s1", "b", 160), ("s2", "b", 200), ("s2", "c", 260),
              ("s3", "a", 300), ("s3", "c", 360), ("s4", "c", 90_000), ("s4", "a", 90_060)]
    path = tmp_path / "clicks.csv"
    path.write_text("session_id,item_id,time\n" + "".join(
        f"{rename.get(s, s)},{items[i]},{1_396_310_400 + t}\n" for s, i, t in clicks))
    return str(path)


SKU_RULES = {"time_format": "epoch_s", "min_item_support": 1, "validation_share": 0.5}


def test_string_ids_are_kept_exactly_as_the_log_writes_them(tmp_path):
    path = sku_log(tmp_path)
    result = pp.preprocess_log([path], pp.ClickLog(**SKU_RULES))  # id_type auto
    assert result.vocabulary.dtype == object
    assert result.vocabulary.tolist() == ["SKU-6475A", "00215336475", "215336475"]
    # Session ids that are strings are hashed to int64 (the examples' session_id), stably.
    again = pp.preprocess_log([path], pp.ClickLog(**SKU_RULES, id_type="string"))
    assert again.vocabulary.tolist() == result.vocabulary.tolist()
    assert np.array_equal(again.test.session_ids, result.test.session_ids)
    assert (result.test.session_ids >= pp.HASHED).all()


def test_integer_logs_keep_integer_ids_under_auto(tmp_path):
    """A log of plain integers reads the same under auto, int and (but for the vocabulary's
    type) string; string keeps the ids' text."""
    path = sku_log(tmp_path)
    text = open(path).read()
    for old, new in (("SKU-6475A", "7"), ("00215336475", "8"), ("215336475", "9")):
        text = text.replace(old, new)
    for old, new in (("s1", "1"), ("s2", "2"), ("s3", "3"), ("s4", "4")):
        text = text.replace(f"\n{old},", f"\n{new},")
    open(path, "w").write(text)
    auto = pp.preprocess_log([path], pp.ClickLog(**SKU_RULES))
    as_int = pp.preprocess_log([path], pp.ClickLog(**SKU_RULES, id_type="int"))
    as_string = pp.preprocess_log([path], pp.ClickLog(**SKU_RULES, id_type="string"))
    assert auto.vocabulary.dtype == np.int64 and auto.vocabulary.tolist() == [7, 8, 9]
    assert as_int.vocabulary.tolist() == [7, 8, 9]
    assert as_string.vocabulary.tolist() == ["7", "8", "9"]
    assert auto.statistics == as_int.statistics == as_string.statistics
    assert auto.test.session_ids.tolist() == [4]


def test_int_ids_refuse_a_sku_saying_what_to_set(tmp_path):
    path = sku_log(tmp_path)
    with pytest.raises(pp.InputError, match=re.escape(
            f"{path}, line 2: field 1 (session) value 's1' is not an integer id (for ids such "
            f"as SKUs or zero-padded numbers set \"id_type\": \"string\")")):
        pp.read_log([path], pp.ClickLog(**SKU_RULES, id_type="int"))


def test_bad_ids_are_named(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("session_id,item_id,time\n1,a\tb,1396310400\n")
    with pytest.raises(pp.InputError, match="id 'a\\\\tb' holds a tab or line break"):
        pp.read_log([str(path)], pp.ClickLog(delimiter=",", time_format="epoch_s"))
    path.write_text("session_id,item_id,time\n1,x,1396310400\n1,,1396310401\n")
    with pytest.raises(pp.InputError, match="line 3: field 2 \\(item\\) value '' is not a "
                                            "non-empty id"):
        pp.read_log([str(path)], pp.ClickLog(time_format="epoch_s"))
    with pytest.raises(ValueError, match="id_type must be one of auto, int, string; got 'sku'"):
        pp.ClickLog(id_type="sku")


def test_a_byte_order_mark_before_the_header_is_accepted(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the header is still session_id,item_id,time."""
    path = sku_log(tmp_path)
    with open(path, "rb") as f:
        text = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + text)
    result = pp.preprocess_log([path], pp.ClickLog(**SKU_RULES))
    assert result.vocabulary.tolist() == ["SKU-6475A", "00215336475", "215336475"]


# ---------------------------------------------------------------- values caught up front


@pytest.mark.parametrize("declared, scale, likely", [
    ("epoch_s", 1000, 'they look like "time_format": "epoch_ms"'),
    ("epoch_ms", 1, 'they look like "time_format": "epoch_s"'),
    ("epoch_s", 1_000_000, "they look like microseconds: convert them to epoch_ms"),
])
def test_times_in_the_wrong_unit_are_refused_naming_the_likely_one(tmp_path, declared, scale,
                                                                   likely):
    path = tmp_path / "clicks.csv"
    times = [int(1_396_310_400 * scale), int(1_396_310_460 * scale)]
    path.write_text("sid,sku,ts\n" + "".join(f"1,{10 + i},{t}\n" for i, t in enumerate(times)))
    log = pp.ClickLog(session="sid", item="sku", time="ts", time_format=declared)
    with pytest.raises(pp.InputError) as raised:
        pp.read_log([str(path)], log)
    message = str(raised.value)
    assert message.startswith(f"{path}: column 'ts' (time) read as {declared} dates clicks in "
                              f"the year ")
    value = times[1] if declared == "epoch_s" else times[0]  # the latest, or the earliest
    assert f"(value {value})" in message and message.endswith(likely)


def test_the_statistics_give_the_date_range_read(tmp_path):
    result = pp.preprocess_log([sku_log(tmp_path)], pp.ClickLog(**SKU_RULES))
    assert (result.statistics["first_click"], result.statistics["last_click"]) == \
        ("2014-04-01T00:01:40Z", "2014-04-02T01:01:00Z")


def test_a_validation_share_that_holds_out_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"validation_share must be a number in \(0, 1\)"):
        pp.ClickLog(validation_share=0)
    path = sku_log(tmp_path)  # 3 training sessions: 0.2 of them is none
    with pytest.raises(pp.InputError, match=re.escape(
            f"{path}: validation_share 0.2 of the 3 training session(s) holds out none (early "
            f"stopping needs at least one): raise validation_share to at least 0.333")):
        pp.preprocess_log([path], pp.ClickLog(**{**SKU_RULES, "validation_share": 0.2}))
