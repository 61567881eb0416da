"""narm_tf.data.clicks: click logs read as documented, bad files named by file and line, ids
kept as the log writes them; tiny hand-made logs and literal expected values."""

import gzip
import re
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from narm_tf.data import clicks as cl
from narm_tf.data import rules

DIGINETICA_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"


def ts(day: int, hour: int, minute: int = 0, second: int = 0) -> str:
    """A YOOCHOOSE timestamp on 2014-04-<day>."""
    return f"2014-04-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.000Z"


def yoochoose_text(sessions: dict) -> str:
    """{session_id: [(timestamp, item), ...]} -> raw YOOCHOOSE lines (file order as given)."""
    return "".join(f"{sid},{t},{item},0\n" for sid, clicks in sessions.items()
                   for t, item in clicks)


def repeated_sessions(first_id: int, day: int, items: list, copies: int) -> dict:
    """`copies` sessions clicking `items` on 2014-04-<day>: session k at 10:00 + 5k min, 1/min."""
    return {first_id + k: [(ts(day, 10, 5 * k + i), item) for i, item in enumerate(items)]
            for k in range(copies)}


# Five test sessions on day 3 clicking 10, 20; the last click (day 3 10:21) fixes the split
# point at day 2 10:21:00 unless a test adds later clicks.
TEST_DAY = repeated_sessions(900, 3, [10, 20], 5)


def write(tmp_path, text, name="yoochoose-clicks.dat"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def log_with_share(log: cl.ClickLog, share: float) -> cl.ClickLog:
    """`log` holding out `share` of the training sessions for validation."""
    return cl.ClickLog(**{**vars(log), "validation_share": share})


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
    with pytest.raises(cl.InputError, match=re.escape(f"{path}, {where}")):
        cl.read_yoochoose_clicks(path)


def test_bad_diginetica_lines_are_named(tmp_path):
    path = write(tmp_path, "session_id,user_id,item_id,timeframe,eventdate\n", "views.csv")
    with pytest.raises(cl.InputError, match=re.escape(f"{path}, line 1: expected the header")):
        cl.read_diginetica_views(path)
    path = write(tmp_path, DIGINETICA_HEADER + "1;NA;10;5;2016-01-01\n1;NA;10;6;2016-02-30\n",
                 "views.csv")
    message = f"{path}, line 3: field 5 (time) value '2016-02-30' is not a day YYYY-MM-DD"
    with pytest.raises(cl.InputError, match=re.escape(message)):
        cl.read_diginetica_views(path)
    path = write(tmp_path, DIGINETICA_HEADER, "views.csv")
    with pytest.raises(cl.InputError, match="header but no clicks"):
        cl.read_diginetica_views(path)
    path = write(tmp_path, DIGINETICA_HEADER + "1;NA;18446744073709551616;5;2016-01-01\n",
                 "views.csv")
    message = (f"{path}, line 2: field 3 (item) value '18446744073709551616' is outside the "
               f"int64 range")
    with pytest.raises(cl.InputError, match=re.escape(message)):
        cl.read_diginetica_views(path)


def test_int64_bounds_are_read(tmp_path):
    path = write(tmp_path, f"9223372036854775807,{ts(1, 10)},-9223372036854775808,0\n")
    clicks = cl.read_yoochoose_clicks(path)
    assert clicks["session_id"].tolist() == [9223372036854775807]
    assert clicks["item_id"].tolist() == [-9223372036854775808]


@pytest.mark.parametrize("reader, name, text", [
    (cl.read_yoochoose_clicks, "yoochoose-clicks.dat", f"1,{ts(1, 10)},10,0\n"),
    (cl.read_diginetica_views, "train-item-views.csv",
     DIGINETICA_HEADER + "1;NA;10;5;2016-01-01\n"),
])
def test_gzip_file_is_named_compressed(tmp_path, reader, name, text):
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    message = f"{path}: the file is gzip-compressed: decompress it first"
    with pytest.raises(cl.InputError, match=re.escape(message)):
        reader(str(path))


def test_zip_archive_is_named_compressed(tmp_path):
    path = tmp_path / "yoochoose-clicks.dat"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("yoochoose-clicks.dat", f"1,{ts(1, 10)},10,0\n")
    with pytest.raises(cl.InputError, match=re.escape(f"{path}: the file is zip-compressed")):
        cl.read_yoochoose_clicks(str(path))


def test_empty_and_missing_files(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(cl.InputError, match=re.escape(f"{path}: the file is empty")):
        cl.read_yoochoose_clicks(path)
    missing = str(tmp_path / "nope.dat")
    with pytest.raises(FileNotFoundError, match=re.escape(f"Click file not found: {missing}")):
        cl.read_yoochoose_clicks(missing)


@pytest.mark.parametrize("time_format, times", [
    ("epoch_s", ["1396310400", "1396310460"]),
    ("epoch_ms", ["1396310400000", "1396310460000"]),
    ("iso", ["2014-04-01T00:00:00.000000Z", "2014-04-01T02:01:00+02:00"]),
])
def test_time_formats_give_ms_order_and_second_dates(tmp_path, time_format, times):
    lines = [f"1;{item};{t}\n" for item, t in zip((10, 20), times, strict=True)]
    path = write(tmp_path, "".join(lines), "log.csv")
    log = cl.ClickLog(header=False, delimiter=";", session=0, item=1, time=2,
                      time_format=time_format)
    clicks = cl.read_log([path], log)
    assert clicks["date"].tolist() == [1396310400, 1396310460]
    assert clicks["item_id"].tolist() == [10, 20] and log.date_unit_seconds == 1


def test_click_log_defaults_are_the_spec_and_csv_with_a_header():
    log = cl.ClickLog()
    assert (log.format, log.files, log.delimiter, log.header) == ("csv", "*.csv", ",", True)
    assert (log.test_days, log.min_item_support, log.min_session_length, log.max_len,
            log.fraction, log.validation_share, log.seed) == (1, 5, 2, 19, 1, 0.1, 0)
    assert cl.ClickLog(files="clicks-*.parquet").format == "parquet"
    assert cl.ClickLog(format="parquet").files == "*.parquet"


def test_end_date_keeps_clicks_before_the_next_utc_midnight(tmp_path):
    """end_date 2014-04-03 keeps 04-03T23:59:59.999Z and drops 04-04T00:00:00.000Z: session 1
    loses its last click (date 04-03 23:59:59), session 2 (all on 04-04) goes entirely."""
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text("1,2014-04-03T23:00:00.000Z,10,0\n1,2014-04-03T23:59:59.999Z,20,0\n"
                    "1,2014-04-04T00:00:00.000Z,30,0\n2,2014-04-04T10:00:00.000Z,10,0\n"
                    "2,2014-04-04T10:01:00.000Z,20,0\n")
    log = cl.ClickLog(**{**vars(cl.YOOCHOOSE), "end_date": "2014-04-03"})
    clicks = cl.read_log([str(path)], log, cl.YOOCHOOSE_COLUMNS)
    assert clicks["session_id"].tolist() == [1, 1]
    assert clicks["item_id"].tolist() == [10, 20]
    assert log.date_limit == 1396569600  # 2014-04-04T00:00:00Z in seconds
    assert len(cl.read_log([str(path)], cl.YOOCHOOSE, cl.YOOCHOOSE_COLUMNS)) == 5  # no cut


def test_end_date_on_day_dates_is_inclusive(tmp_path):
    """DIGINETICA dates are days: end_date 2016-05-02 keeps eventdate 2016-05-02."""
    path = tmp_path / "train-item-views.csv"
    path.write_text(DIGINETICA_HEADER + "1;;10;1;2016-05-01\n1;;20;2;2016-05-02\n"
                    "2;;10;1;2016-05-03\n")
    log = cl.ClickLog(**{**vars(cl.DIGINETICA), "end_date": "2016-05-02"})
    clicks = cl.read_log([str(path)], log, cl.DIGINETICA_COLUMNS)
    assert clicks["item_id"].tolist() == [10, 20]
    assert log.date_limit == 16924  # days from 1970-01-01 to 2016-05-03


@pytest.mark.parametrize("value", ["2014-4-5", "2014-04-31", "yesterday", 20140405])
def test_bad_end_date_is_named(value):
    with pytest.raises(ValueError, match=r"end_date must be a day YYYY-MM-DD .*" +
                       re.escape(repr(value))):
        cl.ClickLog(end_date=value)


def test_string_ids_are_kept_exactly_as_the_log_writes_them(tmp_path):
    path = sku_log(tmp_path)
    result = rules.preprocess_log([path], cl.ClickLog(**SKU_RULES))  # id_type auto
    assert result.vocabulary.dtype == object
    assert result.vocabulary.tolist() == ["SKU-6475A", "00215336475", "215336475"]
    # Session ids that are strings are hashed to int64 (the examples' session_id), stably.
    again = rules.preprocess_log([path], cl.ClickLog(**SKU_RULES, id_type="string"))
    assert again.vocabulary.tolist() == result.vocabulary.tolist()
    assert np.array_equal(again.test.session_ids, result.test.session_ids)
    assert (result.test.session_ids >= cl.HASHED).all()


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
    auto = rules.preprocess_log([path], cl.ClickLog(**SKU_RULES))
    as_int = rules.preprocess_log([path], cl.ClickLog(**SKU_RULES, id_type="int"))
    as_string = rules.preprocess_log([path], cl.ClickLog(**SKU_RULES, id_type="string"))
    assert auto.vocabulary.dtype == np.int64 and auto.vocabulary.tolist() == [7, 8, 9]
    assert as_int.vocabulary.tolist() == [7, 8, 9]
    assert as_string.vocabulary.tolist() == ["7", "8", "9"]
    assert auto.statistics == as_int.statistics == as_string.statistics
    assert auto.test.session_ids.tolist() == [4]


def test_int_ids_refuse_a_sku_saying_what_to_set(tmp_path):
    path = sku_log(tmp_path)
    with pytest.raises(cl.InputError, match=re.escape(
            f"{path}, line 2: field 1 (session) value 's1' is not an integer id (for ids such "
            f"as SKUs or zero-padded numbers set \"id_type\": \"string\")")):
        cl.read_log([path], cl.ClickLog(**SKU_RULES, id_type="int"))


def test_bad_ids_are_named(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("session_id,item_id,time\n1,a\tb,1396310400\n")
    with pytest.raises(cl.InputError, match="id 'a\\\\tb' holds a tab or line break"):
        cl.read_log([str(path)], cl.ClickLog(delimiter=",", time_format="epoch_s"))
    path.write_text("session_id,item_id,time\n1,x,1396310400\n1,,1396310401\n")
    with pytest.raises(cl.InputError, match="line 3: field 2 \\(item\\) value '' is not a "
                                            "non-empty id"):
        cl.read_log([str(path)], cl.ClickLog(time_format="epoch_s"))
    with pytest.raises(ValueError, match="id_type must be one of auto, int, string; got 'sku'"):
        cl.ClickLog(id_type="sku")


def test_a_byte_order_mark_before_the_header_is_accepted(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the header is still session_id,item_id,time."""
    path = sku_log(tmp_path)
    with open(path, "rb") as f:
        text = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + text)
    result = rules.preprocess_log([path], cl.ClickLog(**SKU_RULES))
    assert result.vocabulary.tolist() == ["SKU-6475A", "00215336475", "215336475"]


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
    log = cl.ClickLog(session="sid", item="sku", time="ts", time_format=declared)
    with pytest.raises(cl.InputError) as raised:
        cl.read_log([str(path)], log)
    message = str(raised.value)
    assert message.startswith(f"{path}: column 'ts' (time) read as {declared} dates clicks in "
                              f"the year ")
    value = times[1] if declared == "epoch_s" else times[0]  # the latest, or the earliest
    assert f"(value {value})" in message and message.endswith(likely)


# ------------------------------------------------------------------ a file read in parts


def test_csv_byte_ranges_read_every_line_once_and_name_lines_in_the_file(tmp_path):
    """The Beam path's parts: ranges of any size give the whole file's rows once each, in
    order; a range where no line starts gives None; a bad value is named by its line number
    in the file, whichever range holds it."""
    text = "session_id,item_id,time\n" + "".join(
        f"{s},{item},{1_396_310_400 + 60 * i}\n"
        for i, (s, item) in enumerate([(1, 10), (1, 20), (22, 300), (22, 10), (333, 20)]))
    path = write(tmp_path, text, "log.csv")
    log = cl.ClickLog(time_format="epoch_s")
    whole = cl.read_csv(path, log)
    size = len(text)
    for chunk in (1, 7, 30, size):
        parts = [cl.read_csv(path, log, byte_range=(start, min(start + chunk, size)))
                 for start in range(0, size, chunk)]
        read = [part for part in parts if part is not None]
        for role in ("session", "item", "time"):
            assert [v for p in read for v in p[role].to_pylist()] == \
                whole[role].to_pylist(), (chunk, role)
    assert cl.read_csv(path, log, byte_range=(size - 3, size)) is None  # inside the last line
    path = write(tmp_path, text.replace("22,10,", "22,x,"), "bad.csv")
    with pytest.raises(cl.InputError, match=re.escape(
            f"{path}, line 5: field 2 (item) value 'x' is not an integer id")):
        cl.read_csv(path, cl.ClickLog(time_format="epoch_s", id_type="int"),
                    byte_range=(size // 2, size))


def test_parquet_row_groups_read_alone_match_the_whole_file(tmp_path):
    """`read_row_group` (the Beam path's part) reads what `read_log` reads, a group at a time;
    a null is named by its row group and its row in the group."""
    table = pa.table({"sid": list(range(10)), "sku": [f"SKU-{i % 3}" for i in range(10)],
                      "ts": [1_396_310_400 + i for i in range(10)]})
    path = str(tmp_path / "log.parquet")
    pq.write_table(table, path, row_group_size=4)
    log = cl.ClickLog(format="parquet", session="sid", item="sku", time="ts",
                      time_format="epoch_s")
    groups = [cl.read_row_group(path, group, log) for group in range(3)]
    frame = cl.read_log([path], log)
    parts = [cl.clicks_frame(group, log, path) for group in groups]
    assert np.concatenate([p["item_id"].to_numpy() for p in parts]).tolist() == \
        frame["item_id"].tolist()
    assert [len(p) for p in parts] == [4, 4, 2]
    nulls = table.set_column(1, "sku", pa.array([*table["sku"].to_pylist()[:5], None,
                                                 *table["sku"].to_pylist()[6:]]))
    pq.write_table(nulls, path, row_group_size=4)
    with pytest.raises(cl.InputError, match=re.escape(
            f"{path}, row group 1, column 'sku' (item): row 1 of the group is null")):
        cl.read_row_group(path, 1, log)
