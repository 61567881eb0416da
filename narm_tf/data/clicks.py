"""Click logs (CSV/TSV or Parquet) -> a clicks frame: how a log is read, and its ids.

Pure pandas/pyarrow/numpy, no TensorFlow. A `ClickLog` says how to read a log and which rules
`narm_tf.data.rules` applies to it (its defaults: the reference preprocessing's). The in-memory
path (`rules.preprocess_log`) and the Beam path (`narm_tf.data.beam`, a file part at a time)
read through the same functions, so both name a bad file, line or row group alike.

The path, in order:
  read_log(paths, log, columns)     one or more files -> one clicks frame, in the given order
    check_log_files                 each file exists, is plain text, holds the log's columns
    read_csv                        a CSV/TSV file (or a byte range of it) -> {role: array},
                                    typed as `time_format` and `id_type` say; bad lines named
    read_row_group                  a Parquet row group -> {role: array}, bad rows named
    clicks_frame                    {role: array} -> int64 session_id, item_id (`encode_ids`:
                                    strings kept beside their ids), time, date; the clicks
                                    after `end_date` cut (`before_end`)
  vocabulary_ids                    the vocabulary's int64 ids -> what a dataset stores
                                    (integers, or the log's own strings)
"""

import csv
import dataclasses
import datetime
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from narm_tf.data.examples import MAX_LEN

# The rules' defaults, which a ClickLog carries to `narm_tf.data.rules`.
MIN_ITEM_SUPPORT = 5
VALIDATION_SHARE = 0.1
YOOCHOOSE_TEST_DAYS = 1
DIGINETICA_TEST_DAYS = 7
SECONDS_PER_DAY = 86_400

YOOCHOOSE_COLUMNS = ("SessionId", "Timestamp", "ItemId", "Category")
DIGINETICA_COLUMNS = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
INT64_RANGE = (-(2**63), 2**63 - 1)
# Leading bytes of the archives the raw files ship in (or get recompressed into).
COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"7z\xbc\xaf\x27\x1c": "7z", b"PK\x03\x04": "zip",
                    b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


class InputError(ValueError):
    """A raw click file that cannot be read as documented; the message names file and line."""


# ----------------------------------------------------------------------------- reading


def _check_readable(path: str) -> None:
    """Exists, is not empty and is not an archive (the readers take the extracted text file).

    Compressed input is refused rather than decompressed on the fly: the builders expect the
    extracted file under its documented name, so an archive there is a mistake to name, and one
    plain-text path keeps the multi-threaded reader and the line-numbered errors.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Click file not found: {path}")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: the file is empty (no clicks).")
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, kind in COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise InputError(f"{path}: the file is {kind}-compressed: decompress it first "
                             f"(the reader takes the extracted text file).")


def _first_bad_line(path, delimiter, n_fields, parsers, skip_header):
    """Returns (line_number, message) of the first malformed line, or None. Used only on error.

    parsers: {0-based field index: (parse, role, what the field must hold)}.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for lineno, row in enumerate(reader, start=1):
            if skip_header and lineno == 1:
                continue
            if len(row) != n_fields:
                return lineno, (
                    f"expected {n_fields} fields separated by {delimiter!r}, got {len(row)}: "
                    f"{delimiter.join(row)[:120]!r}"
                )
            for index, (parse, role, expected) in parsers.items():
                try:
                    parse(row[index])
                except OverflowError:
                    return lineno, (f"field {index + 1} ({role}) value {row[index]!r} is "
                                    f"outside the int64 range [{INT64_RANGE[0]}, "
                                    f"{INT64_RANGE[1]}]")
                except ValueError:
                    return lineno, (f"field {index + 1} ({role}) value {row[index]!r} is not "
                                    f"{expected}")
    return None


def _raise_located(path, delimiter, n_fields, parsers, skip_header, cause):
    located = _first_bad_line(path, delimiter, n_fields, parsers, skip_header)
    if located is None:
        raise InputError(f"{path}: could not be read: {cause}") from cause
    lineno, message = located
    raise InputError(f"{path}, line {lineno}: {message}") from cause


def _int64(value: str) -> None:
    """Parses like pyarrow's int64: optional spaces and minus sign, digits; OverflowError if the
    value does not fit in int64."""
    if not re.fullmatch(r"\s*-?\d+\s*", value):
        raise ValueError(value)
    if not INT64_RANGE[0] <= int(value) <= INT64_RANGE[1]:
        raise OverflowError(value)


def _id_string(value: str) -> None:
    """Any non-empty string is an id under id_type string or auto."""
    if value == "":
        raise ValueError(value)


def _iso_date(value: str) -> None:
    datetime.date.fromisoformat(value)


def _zoned_iso_timestamp(value: str) -> None:
    """Parses like pyarrow's zoned timestamps: ISO-8601 with `Z` or an offset."""
    if datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is None:
        raise ValueError(value)


# Per time_format: the pyarrow type a CSV time field is read as, its line parser (for naming a
# bad line), the seconds in one unit of a session date, and what a value must look like.
TIME_FORMATS = {
    "iso": (pa.timestamp("ns", tz="UTC"), _zoned_iso_timestamp, 1,  # any fraction digits
            "an ISO-8601 time with a zone, e.g. 2014-04-07T10:51:09.277Z"),
    "epoch_s": (pa.int64(), _int64, 1, "an integer count of seconds since 1970-01-01 UTC"),
    "epoch_ms": (pa.int64(), _int64, 1,
                 "an integer count of milliseconds since 1970-01-01 UTC"),
    "date": (pa.date32(), _iso_date, SECONDS_PER_DAY, "a day YYYY-MM-DD"),
}
INT_ID = ('an integer id (for ids such as SKUs or zero-padded numbers set "id_type": '
          '"string")')
FORMATS = ("csv", "parquet")
ROLES = ("session", "item", "time", "order")
ID_ROLES = ("session", "item")

# How session and item ids are read. `int`: as 64-bit integers (fastest; leading zeros are
# dropped, so `007` and `7` are one item). `string`: exactly as the log writes them (SKUs,
# zero-padded numbers); the vocabulary, warm start and the export's string signature use
# those strings. `auto`: strings while reading; a log whose every item id is a plain integer
# (CANONICAL_INT) is an integer catalogue as under `int`, any other id makes it a string one.
ID_TYPES = {"auto": "ids as strings unless every item id is a plain integer",
            "int": "ids read as 64-bit integers",
            "string": "ids kept exactly as the log writes them"}
# A plain integer of at most 18 digits without leading zeros: its value is its id, and
# `str(value)` gives the log's string back.
CANONICAL_INT = r"^-?(0|[1-9][0-9]{0,17})$"
# Any other id string is encoded as a 62-bit hash at or above HASHED (plain integers lie far
# below, |value| < 10^18 < 2^62), so the pipeline keeps working on int64 ids; the strings of
# the hashed ids travel beside them ({hash: string}) to name the vocabulary.
HASHED = 1 << 62
# Which training sessions validation holds out: a seeded random draw (`sessions`), or the
# newest ones (`time`: the slice nearest the test period, as session-rec tunes; where a shop's
# recent past differs from its older past, it is the validation that looks like the test).
VALIDATION_MODES = ("sessions", "time")
# Session dates outside these years are refused: an epoch in the wrong unit lands far outside.
PLAUSIBLE_YEARS = (1971, 2100)


@dataclasses.dataclass(kw_only=True)
class ClickLog:
    """How to read a click log and which rules `narm_tf.data.rules` applies to it (defaults:
    the reference preprocessing's).

    Columns are header names (CSV with a header, Parquet) or 0-based field positions (CSV
    without a header). `time` dates a session (its latest click); `order` (optional, e.g.
    DIGINETICA's `timeframe`) orders clicks within a session instead of `time`. `time_format`
    also sets the date resolution: whole seconds for `iso`, `epoch_s` and `epoch_ms`, days
    for `date`. Bad values raise ValueError listing the valid choices.
    """

    files: str | None = None  # a glob in the manual dir; default *.csv or *.parquet
    format: str | None = None  # csv or parquet; default parquet for *.parquet files, else csv
    delimiter: str = ","  # CSV only; "\t" for TSV
    header: bool = True  # CSV only
    session: str | int = "session_id"
    item: str | int = "item_id"
    time: str | int = "time"
    order: str | int | None = None
    time_format: str = "iso"  # iso (with a zone), epoch_s, epoch_ms or date (YYYY-MM-DD)
    test_days: int = 1  # test = sessions dated after the last date minus this many days
    min_item_support: int = MIN_ITEM_SUPPORT
    min_session_length: int = 2
    max_len: int = MAX_LEN
    fraction: int = 1  # keep the most recent floor(n / fraction) training prefixes
    validation_share: float = VALIDATION_SHARE  # of the training sessions
    seed: int = 0  # of the validation hold-out
    end_date: str | None = None  # YYYY-MM-DD (UTC): clicks after this day are ignored
    id_type: str = "auto"  # auto, int or string: how session and item ids are read (ID_TYPES)
    validation: str = "sessions"  # sessions (a seeded random draw) or time (the newest)

    def __post_init__(self):
        if self.format is None:
            self.format = "parquet" if str(self.files).endswith(".parquet") else "csv"
        _check_choice("format", self.format, FORMATS)
        if self.files is None:
            self.files = f"*.{self.format}"
        _check_choice("time_format", self.time_format, tuple(TIME_FORMATS))
        _check_choice("id_type", self.id_type, tuple(ID_TYPES))
        _check_choice("validation", self.validation, VALIDATION_MODES)
        if not isinstance(self.files, str) or not self.files or self.files.startswith("/") \
                or ".." in self.files.split("/"):
            raise ValueError(f"files must be a glob inside the manual dir, e.g. 'clicks-*.csv', "
                             f"got {self.files!r}")
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character (',', ';', '\\t'), "
                             f"got {self.delimiter!r}")
        if not isinstance(self.header, bool):
            raise ValueError(f"header must be true or false, got {self.header!r}")
        self._check_columns()
        for key, low, high in (("test_days", 1, None), ("min_item_support", 1, None),
                               ("min_session_length", 2, None), ("max_len", 1, MAX_LEN),
                               ("fraction", 1, None), ("seed", 0, None)):
            _check_int(key, getattr(self, key), low, high)
        if self.end_date is not None:
            _check_end_date(self.end_date)
        share = self.validation_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ValueError(f"validation_share must be a number in (0, 1): the share of "
                             f"training sessions held out for early stopping, got {share!r}")

    def _check_columns(self):
        by_position = self.format == "csv" and not self.header
        kind = "a 0-based field position (int)" if by_position else "a column name (str)"
        columns = {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}
        for role, column in columns.items():
            valid = (isinstance(column, int) and not isinstance(column, bool) and column >= 0
                     if by_position else isinstance(column, str) and column != "")
            if not valid:
                raise ValueError(f"{role} must be {kind} for a {self.format} log"
                                 f"{' without a header' if by_position else ''}, got {column!r}")
        if len(set(columns.values())) != len(columns):
            raise ValueError(f"session, item, time and order must be distinct columns, "
                             f"got {columns}")

    @property
    def date_unit_seconds(self) -> int:
        """Seconds in one unit of a session date: 1 (whole seconds) or 86400 (days)."""
        return TIME_FORMATS[self.time_format][2]

    @property
    def date_limit(self) -> int | None:
        """The first click date (in `date_unit_seconds`) past `end_date`, None without one.

        `end_date` is inclusive and a UTC day: `2014-04-05` keeps the clicks before
        2014-04-06T00:00:00Z (times in whole seconds: a click at 23:59:59.999 stays) and, for
        `date` logs, the clicks dated 2014-04-05 or earlier.
        """
        if self.end_date is None:
            return None
        next_day = datetime.date.fromisoformat(self.end_date) + datetime.timedelta(days=1)
        days = (next_day - datetime.date(1970, 1, 1)).days
        return days * SECONDS_PER_DAY // self.date_unit_seconds


def _check_choice(key, value, choices):
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_end_date(value) -> None:
    try:
        valid = isinstance(value, str) and bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) \
            and bool(datetime.date.fromisoformat(value))
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"end_date must be a day YYYY-MM-DD (UTC; clicks after it are "
                         f"ignored), got {value!r}")


def _check_int(key, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{key} must be an integer {bound}, got {value!r}")


YOOCHOOSE = ClickLog(files="yoochoose-clicks.dat", header=False, session=0, time=1, item=2,
                     time_format="iso", test_days=YOOCHOOSE_TEST_DAYS, id_type="int")
DIGINETICA = ClickLog(files="train-item-views.csv", delimiter=";", session="session_id",
                      item="item_id", time="eventdate", order="timeframe", time_format="date",
                      test_days=DIGINETICA_TEST_DAYS, id_type="int")


def _csv_fields(path: str, log: ClickLog, columns) -> list[str]:
    """Line 1 as fields; checks it against `columns` (the documented header or field count,
    when known) and that the log's columns are there, else an error listing what is."""
    # utf-8-sig: a byte-order mark before the header (Excel's "CSV UTF-8") is not part of it.
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        first = next(csv.reader([f.readline().rstrip("\r\n")], delimiter=log.delimiter))
    shown = log.delimiter.join(first)[:120]
    if columns is not None and log.header and tuple(first) != tuple(columns):
        raise InputError(f"{path}, line 1: expected the header "
                         f"{log.delimiter.join(columns)!r}, got {shown!r}")
    if columns is not None and not log.header and len(first) != len(columns):
        raise InputError(f"{path}, line 1: expected {len(columns)} fields separated by "
                         f"{log.delimiter!r}, got {len(first)}: {shown!r}")
    for role in ROLES:
        column = getattr(log, role)
        if column is None:
            continue
        if log.header and column not in first:
            raise InputError(f"{path}, line 1: no column {column!r} ({role}) in the header; "
                             f"columns: {', '.join(first)}")
        if not log.header and column >= len(first):
            raise InputError(f"{path}, line 1: no field {column} ({role}, 0-based): the line "
                             f"has {len(first)} fields separated by {log.delimiter!r}: "
                             f"{shown!r}")
    return first


def _role_indices(log: ClickLog, fields: list[str]) -> dict:
    """{role: 0-based field index} of the log's columns."""
    return {role: (fields.index(getattr(log, role)) if log.header else getattr(log, role))
            for role in ROLES if getattr(log, role) is not None}


def csv_conversion(log: ClickLog, index: dict) -> tuple[dict, dict]:
    """The pyarrow type each of the log's CSV fields is read as ({"f<i>": type}), and the
    line parsers that name a bad value ({i: (parse, role, what it must hold)})."""
    time_type, time_parser, _, time_expected = TIME_FORMATS[log.time_format]
    by_role = {"time": (time_type, time_parser, time_expected),
               "order": (pa.int64(), _int64, "an integer (the order of clicks in a session)")}
    ids = ((pa.int64(), _int64, INT_ID) if log.id_type == "int"
           else (pa.string(), _id_string, "a non-empty id"))
    types, parsers = {}, {}
    for role, i in index.items():
        kind, parse, expected = by_role.get(role, ids)
        types[f"f{i}"] = kind
        parsers[i] = (parse, role, expected)
    return types, parsers


def read_csv(path: str, log: ClickLog, columns=None, byte_range: tuple | None = None
             ) -> dict | None:
    """A CSV/TSV file -> {role: pyarrow array}, typed; bad lines named by their number in the
    file. With `byte_range` (start, end): only the lines starting in it (the Beam path reads a
    large file in parts), None if no line starts there; a whole file must hold a click."""
    fields = _csv_fields(path, log, columns)
    index = _role_indices(log, fields)
    types, parsers = csv_conversion(log, index)
    if byte_range is None:
        source, skip, block = path, int(log.header), {"block_size": 1 << 26}
    else:
        source, skip, block = _line_range(path, byte_range), int(log.header
                                                                 and byte_range[0] == 0), {}
        if source is None:
            return None
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=[f"f{i}" for i in range(len(fields))],
                                           skip_rows=skip, **block),
            parse_options=pacsv.ParseOptions(delimiter=log.delimiter),
            convert_options=pacsv.ConvertOptions(column_types=types,
                                                 include_columns=list(types),
                                                 null_values=[], strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        _raise_located(path, log.delimiter, len(fields), parsers, log.header, error)
    if table.num_rows == 0 and byte_range is None:
        raise InputError(f"{path}: the file holds a header but no clicks.")
    arrays = {role: table.column(f"f{i}") for role, i in index.items()}
    if log.id_type != "int" and any(pc.any(pc.equal(arrays[role], "")).as_py()
                                    for role in ID_ROLES):
        _raise_located(path, log.delimiter, len(fields), parsers, log.header,
                       InputError("an empty id"))
    return arrays


def _line_range(path: str, byte_range: tuple) -> pa.BufferReader | None:
    """The lines of a file starting in bytes [start, end), or None if no line starts there."""
    with open(path, "rb") as f:
        begin, stop = (_line_start(f, position) for position in byte_range)
        if begin >= stop:
            return None
        f.seek(begin)
        return pa.BufferReader(f.read(stop - begin))


def _line_start(f, position: int) -> int:
    """The start of the first line beginning at or after byte `position`."""
    if position == 0:
        return 0
    f.seek(position - 1)
    f.readline()
    return f.tell()


def _parquet_schema(path: str, log: ClickLog):
    """The file's Parquet metadata, after checking the log's columns are there."""
    try:
        metadata = pq.ParquetFile(path).metadata
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file: {error}") from error
    names = metadata.schema.names
    for role in ROLES:
        column = getattr(log, role)
        if column is not None and column not in names:
            raise InputError(f"{path}: no column {column!r} ({role}); columns: "
                             f"{', '.join(names)}")
    return metadata


def _parquet_column(path, group, role, column, array, log: ClickLog) -> pa.Array:
    """One row group's column -> int64 (order, epoch times), timestamp[ns] or date32 (time),
    int64 or string (ids: strings are encoded by `encode_ids` later)."""
    where = f"{path}, row group {group}, column {column!r} ({role})"
    if array.null_count:
        row = pc.index(pc.is_null(array), True).as_py()
        raise InputError(f"{where}: row {row} of the group is null")
    if role in ID_ROLES and log.id_type != "int":
        if pa.types.is_integer(array.type):
            return array.cast(pa.int64())
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            if pc.any(pc.equal(array, "")).as_py():
                row = pc.index(pc.equal(array, ""), True).as_py()
                raise InputError(f"{where}: row {row} of the group is an empty id")
            return array
        raise InputError(f"{where}: has type {array.type}; ids must be integers or strings")
    kind = log.time_format if role == "time" else "int"
    target = {"iso": TIME_FORMATS["iso"][0], "date": pa.date32()}.get(kind, pa.int64())
    if kind == "iso" and pa.types.is_timestamp(array.type):  # a naive timestamp is UTC
        array = array.cast(pa.timestamp("ns", tz=array.type.tz or "UTC"))
    if kind == "date" and pa.types.is_timestamp(array.type):
        raise InputError(f"{where}: holds timestamps, not dates: use time_format 'iso'")
    allowed = {"iso": pa.types.is_timestamp(array.type) or pa.types.is_string(array.type),
               "date": pa.types.is_date(array.type) or pa.types.is_string(array.type)}
    if not allowed.get(kind, pa.types.is_integer(array.type)):
        hint = (' (string ids need "id_type": "string" or "auto")'
                if role in ID_ROLES and pa.types.is_string(array.type) else "")
        raise InputError(f"{where}: has type {array.type}, which time_format/ids "
                         f"{kind!r} cannot read{hint}")
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        parse, expected = ({"iso": (_zoned_iso_timestamp, TIME_FORMATS["iso"][3]),
                            "date": (_iso_date, TIME_FORMATS["date"][3])}
                           .get(kind, (_int64, "an integer")))
        for row, value in enumerate(array.to_pylist()):
            try:
                parse(str(value))
            except (ValueError, OverflowError):
                raise InputError(f"{where}: row {row} of the group, value {value!r}, is not "
                                 f"{expected}") from error
        raise InputError(f"{where}: could not be read: {error}") from error


def read_row_group(path: str, group: int, log: ClickLog, parquet=None) -> dict:
    """One row group of a Parquet file -> {role: pyarrow array}, typed; a bad value named by
    its row in the group. `parquet`: the file already open (a `pq.ParquetFile`), if it is."""
    roles = {role: getattr(log, role) for role in ROLES if getattr(log, role) is not None}
    table = (parquet or pq.ParquetFile(path)).read_row_group(group, columns=list(roles.values()))
    return {role: _parquet_column(path, group, role, column,
                                  table.column(column).combine_chunks(), log)
            for role, column in roles.items()}


def _read_parquet_log(path: str, log: ClickLog) -> dict:
    """One Parquet file -> {role: pyarrow array}, typed; bad values named by row group."""
    metadata = _parquet_schema(path, log)
    parquet = pq.ParquetFile(path)
    groups = [read_row_group(path, group, log, parquet)
              for group in range(metadata.num_row_groups)]
    if not metadata.num_rows:
        raise InputError(f"{path}: the file holds no clicks.")
    return {role: pa.chunked_array([arrays[role] for arrays in groups]) for role in groups[0]}


class ItemNames(dict):
    """{id: string} of the item ids that are not plain integers; kept in a clicks frame's
    `attrs`, where frames derived from it share it (pandas deep-copies attrs: not this)."""

    def __deepcopy__(self, memo):
        return self


def encode_ids(array, source: str = "ids") -> tuple[np.ndarray, dict]:
    """Ids as read (int64, or strings) -> int64 ids and {id: string} of the non-integer ones.

    A plain integer string (CANONICAL_INT) becomes its value, so an integer log reads the same
    as under id_type int; any other string a 62-bit hash at or above HASHED (the same in every
    process: pandas' fixed-key SipHash), returned with its string. Two strings sharing a hash
    would merge two ids: refused.
    """
    if pa.types.is_integer(array.type):
        return array.to_numpy().astype(np.int64, copy=False), ItemNames()
    if isinstance(array, pa.ChunkedArray):  # one dictionary for all chunks
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    encoded = pc.dictionary_encode(array)
    dictionary, indices = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False)
    broken = pc.match_substring_regex(dictionary, r"[\t\n\r]")
    if pc.any(broken).as_py():
        value = dictionary.filter(broken)[0].as_py()
        raise InputError(f"{source}: id {value!r} holds a tab or line break, which the "
                         f"vocabulary files (one id a line) cannot hold")
    plain = pc.match_substring_regex(dictionary, CANONICAL_INT).to_numpy(zero_copy_only=False)
    values = np.empty(len(dictionary), np.int64)
    values[plain] = pc.cast(dictionary.filter(pa.array(plain)), pa.int64()).to_numpy()
    others = np.asarray(dictionary.filter(pa.array(~plain)).to_pylist(), dtype=object)
    hashed = ((pd.util.hash_array(others) >> np.uint64(2)).astype(np.int64) | HASHED
              if len(others) else np.zeros(0, np.int64))
    values[~plain] = hashed
    names = ItemNames(zip(hashed.tolist(), others.tolist(), strict=True))
    if len(names) != len(others):
        raise InputError("two different ids share a 62-bit hash; set \"id_type\": \"int\" "
                         "if the ids are integers")
    return values[indices], names


def merge_names(names: dict, more: dict) -> dict:
    """{id: string} of two parts of a log, refusing a hash shared by two different strings."""
    merged = ItemNames(names)
    for key, value in more.items():
        if merged.setdefault(key, value) != value:
            raise InputError(f"ids {merged[key]!r} and {value!r} share a 62-bit hash; set "
                             f"\"id_type\": \"int\" if the ids are integers")
    return merged


def vocabulary_ids(vocabulary: np.ndarray, names: dict, id_type: str) -> np.ndarray:
    """Internal int64 ids of the vocabulary -> what the dataset stores: int64 for an integer
    catalogue (id_type int, or auto where every item id read was a plain integer), else the
    log's own strings (an object array of str)."""
    vocabulary = np.asarray(vocabulary, np.int64)
    if id_type == "int" or (id_type == "auto" and not names):
        return vocabulary
    return np.array([names[v] if v >= HASHED else str(v) for v in vocabulary.tolist()],
                    dtype=object)


def _check_dates(date: np.ndarray, raw: np.ndarray, log: ClickLog, source: str) -> None:
    """Refuses session dates outside PLAUSIBLE_YEARS (an epoch in the wrong unit), naming the
    column, a value and the unit it likely is in."""
    if not len(date):
        return
    seconds = date.astype(np.float64) * log.date_unit_seconds

    def year(seconds_since_epoch):
        return 1970 + seconds_since_epoch / (365.2425 * SECONDS_PER_DAY)

    low = year(seconds.min()) < PLAUSIBLE_YEARS[0] and log.time_format == "epoch_ms"
    high = year(seconds.max()) >= PLAUSIBLE_YEARS[1]
    if not (low or high):
        return
    at = int(np.argmin(seconds) if low else np.argmax(seconds))
    value, when = raw[at].item(), year(seconds[at])
    likely = {"epoch_s": ("epoch_ms", 1e-3), "epoch_ms": ("epoch_s", 1e3)}.get(log.time_format)
    if likely and PLAUSIBLE_YEARS[0] <= year(seconds[at] * likely[1]) < PLAUSIBLE_YEARS[1]:
        hint = f'they look like "time_format": "{likely[0]}"'
    elif log.time_format in ("epoch_s", "epoch_ms") and \
            PLAUSIBLE_YEARS[0] <= year(float(value) / 1e6) < PLAUSIBLE_YEARS[1]:
        hint = "they look like microseconds: convert them to epoch_ms"
    else:
        hint = "check the column and time_format"
    raise InputError(f"{source}: column {log.time!r} (time) read as {log.time_format} dates "
                     f"clicks in the year {int(when)} (value {value}); {hint}")


def clicks_frame(columns: dict, log: ClickLog, source: str = "clicks") -> pd.DataFrame:
    """{role: array} -> int64 `session_id`, `item_id` (see `encode_ids`), `time` (orders
    clicks within a session: the `order` column, else the click time) and `date` (seconds or
    days: dates sessions). `attrs["item_names"]`: {id: string} of non-integer item ids."""
    time = columns["time"]
    if log.time_format in ("iso", "date"):
        time = time.cast(pa.int64() if log.time_format == "iso" else pa.int32())
    raw = time.to_numpy()
    time = raw.astype(np.int64)
    if log.time_format == "iso":
        time //= 1_000_000  # nanoseconds -> milliseconds
    date = time // 1000 if log.time_format in ("iso", "epoch_ms") else time
    _check_dates(date, raw, log, source)
    order = columns["order"].to_numpy() if "order" in columns else time
    sessions, _ = encode_ids(columns["session"], f"{source}, column {log.session!r}")
    items, names = encode_ids(columns["item"], f"{source}, column {log.item!r}")
    frame = pd.DataFrame({"session_id": sessions, "item_id": items, "time": order,
                          "date": date})
    frame = before_end(frame, log)
    frame.attrs["item_names"] = names
    return frame


def before_end(clicks: pd.DataFrame, log: ClickLog) -> pd.DataFrame:
    """The clicks dated on or before `log.end_date` (all of them without one): the window
    "the data as of day D". Both readers (in memory and Beam) cut here, before any rule."""
    limit = log.date_limit
    if limit is None:
        return clicks
    return clicks[clicks["date"].to_numpy() < limit].reset_index(drop=True)


def check_log_files(paths: list[str], log: ClickLog, columns=None) -> None:
    """Before any work: every file exists, is plain, and holds the log's columns."""
    for path in paths:
        _check_readable(path)
        if log.format == "csv":
            _csv_fields(path, log, columns)
        else:
            _parquet_schema(path, log)


def read_log(paths: list[str], log: ClickLog, columns=None) -> pd.DataFrame:
    """Reads a click log of one or more files (in the given order) into a clicks frame.

    Args:
      paths: the files, CSV/TSV or Parquet as `log.format` says.
      log: how to read them.
      columns: the documented header (or field names of a headerless file), when the format
        is known, e.g. YOOCHOOSE_COLUMNS: line 1 must match it.
    Returns:
      int64 columns `session_id`, `item_id` (ids as `encode_ids` reads them), `time` (orders
      clicks) and `date` (dates sessions, in `log.date_unit_seconds`); `attrs["item_names"]`
      holds {id: string} of the item ids that are not plain integers.
    """
    check_log_files(paths, log, columns)
    frames = [clicks_frame(read_csv(path, log, columns) if log.format == "csv"
                           else _read_parquet_log(path, log), log, path) for path in paths]
    if len(frames) == 1:
        return frames[0]
    names = ItemNames()
    for frame in frames:
        names = merge_names(names, frame.attrs["item_names"])
    clicks = pd.concat(frames, ignore_index=True)
    clicks.attrs["item_names"] = names
    return clicks


def read_yoochoose_clicks(path: str) -> pd.DataFrame:
    """Reads `yoochoose-clicks.dat` (no header, `SessionId,Timestamp,ItemId,Category`).

    Returns a frame with int64 columns `session_id`, `item_id`, `time` (click time in
    milliseconds since the epoch, orders clicks) and `date` (whole seconds, dates sessions).
    """
    return read_log([path], YOOCHOOSE, YOOCHOOSE_COLUMNS)


def read_diginetica_views(path: str) -> pd.DataFrame:
    """Reads `train-item-views.csv` (header, `session_id;user_id;item_id;timeframe;eventdate`).

    Returns int64 columns `session_id`, `item_id`, `time` (the `timeframe`, orders clicks) and
    `date` (the `eventdate` in days since the epoch, dates sessions).
    """
    return read_log([path], DIGINETICA, DIGINETICA_COLUMNS)


