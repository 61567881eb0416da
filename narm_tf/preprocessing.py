"""Raw click logs -> sessions -> date split -> session-prefix examples (SPEC section 1).

Pure pandas/numpy, no TensorFlow: the TFDS builders call `preprocess()` and write what it
returns. Every step is vectorized over clicks; nothing loops over clicks in Python.

The path, in the SPEC's order:
  read_yoochoose_clicks / read_diginetica_views   raw file -> clicks frame
  preprocess(clicks, ...)                         clicks -> Preprocessed (train/test prefixes)
    _sessions_in_time_order  step 1   group by session, order clicks, session date; count
                                      exact duplicate clicks (kept, as the reference does)
    _filter_sessions         step 2-3 length-1 sessions, item support >= 5
    _split_by_date           step 4   test after max_date - split, train before, boundary dropped
    _number_items            step 5   vocabulary 1..N in order of first appearance in train
    _prefix_positions, _materialize  step 6-7 ([x1..x_{i-1}], x_i), longest first, last 19
    prefix_examples          step 8   YOOCHOOSE fractions: the most recent floor(n/fraction)
    hold_out_validation      step 9   floor(0.1 * sessions) whole sessions to validation
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

MAX_LEN = 19  # BPTT truncation of the paper: a prefix keeps its most recent 19 clicks.
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
    """Returns (line_number, message) of the first malformed line, or None. Used only on error."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for lineno, row in enumerate(reader, start=1):
            if skip_header and lineno == 1:
                continue
            if len(row) != n_fields:
                return lineno, (
                    f"expected {n_fields} fields separated by {delimiter!r}, got {len(row)}: "
                    f"{delimiter.join(row)[:120]!r}"
                )
            for index, parse in parsers.items():
                try:
                    parse(row[index])
                except OverflowError:
                    return lineno, (f"field {index + 1} value {row[index]!r} is outside the "
                                    f"int64 range [{INT64_RANGE[0]}, {INT64_RANGE[1]}]")
                except ValueError:
                    return lineno, f"field {index + 1} has an unparsable value {row[index]!r}"
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


def _iso_timestamp(value: str) -> None:
    """Parses like pyarrow: `2014-04-07T10:51:09.277Z`."""
    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso_date(value: str) -> None:
    datetime.date.fromisoformat(value)


def _read_table(path, column_names, column_types, skip_rows, delimiter):
    """Reads a delimited file with pyarrow (multi-threaded, typed); raises on the first bad row."""
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=list(column_names), skip_rows=skip_rows,
                                       block_size=1 << 26),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(column_types=column_types,
                                             include_columns=list(column_types),
                                             null_values=[], strings_can_be_null=False),
    )


def read_yoochoose_clicks(path: str) -> pd.DataFrame:
    """Reads `yoochoose-clicks.dat` (no header, `SessionId,Timestamp,ItemId,Category`).

    Returns a frame with int64 columns `session_id`, `item_id`, `time` (click time in
    milliseconds since the epoch, orders clicks) and `date` (whole seconds, dates sessions).
    """
    _check_readable(path)
    types = {"SessionId": pa.int64(), "Timestamp": pa.timestamp("ms", tz="UTC"),
             "ItemId": pa.int64()}
    try:
        table = _read_table(path, YOOCHOOSE_COLUMNS, types, 0, ",")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        _raise_located(path, ",", 4, {0: _int64, 1: _iso_timestamp, 2: _int64}, False, error)
    millis = table.column("Timestamp").cast(pa.int64()).to_numpy()
    return pd.DataFrame({
        "session_id": table.column("SessionId").to_numpy(),
        "item_id": table.column("ItemId").to_numpy(),
        "time": millis,
        "date": millis // 1000,
    })


def read_diginetica_views(path: str) -> pd.DataFrame:
    """Reads `train-item-views.csv` (header, `session_id;user_id;item_id;timeframe;eventdate`).

    Returns int64 columns `session_id`, `item_id`, `time` (the `timeframe`, orders clicks) and
    `date` (the `eventdate` in days since the epoch, dates sessions).
    """
    _check_readable(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip().split(";")
    if tuple(header) != DIGINETICA_COLUMNS:
        raise InputError(
            f"{path}, line 1: expected the header {';'.join(DIGINETICA_COLUMNS)!r}, "
            f"got {';'.join(header)[:120]!r}")
    types = {"session_id": pa.int64(), "item_id": pa.int64(), "timeframe": pa.int64(),
             "eventdate": pa.date32()}
    try:
        table = _read_table(path, DIGINETICA_COLUMNS, types, 1, ";")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        parsers = {0: _int64, 2: _int64, 3: _int64, 4: _iso_date}
        _raise_located(path, ";", 5, parsers, True, error)
    if table.num_rows == 0:
        raise InputError(f"{path}: the file holds a header but no clicks.")
    return pd.DataFrame({
        "session_id": table.column("session_id").to_numpy(),
        "item_id": table.column("item_id").to_numpy(),
        "time": table.column("timeframe").to_numpy(),
        "date": table.column("eventdate").cast(pa.int32()).to_numpy().astype(np.int64),
    })


# ------------------------------------------------------------------------ preprocessing


@dataclasses.dataclass
class Sessions:
    """Sessions as flat arrays: clicks of session s are `items[offsets[s]:offsets[s+1]]`."""

    session_ids: np.ndarray  # [num_sessions] int64
    dates: np.ndarray  # [num_sessions] int64 (seconds or days)
    offsets: np.ndarray  # [num_sessions + 1] int64
    items: np.ndarray  # [num_clicks] int64, raw ids or vocabulary indices

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.session_ids)

    def take(self, order: np.ndarray) -> Sessions:
        """The sessions at `order` (indices), in that order."""
        lengths = self.lengths[order]
        starts = self.offsets[:-1][order]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        click_index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Sessions(self.session_ids[order], self.dates[order], offsets,
                        self.items[click_index])


@dataclasses.dataclass
class Prefixes:
    """Session-prefix examples ([x1..x_{i-1}], x_i), prefixes right-padded with 0."""

    prefixes: np.ndarray  # [n, MAX_LEN] int32, oldest click first, 0 = padding
    labels: np.ndarray  # [n] int64
    lengths: np.ndarray  # [n] int64, prefix length before truncation
    session_ids: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Prefixes:
        return Prefixes(self.prefixes[index], self.labels[index], self.lengths[index],
                        self.session_ids[index])


@dataclasses.dataclass
class Preprocessed:
    """What a builder writes: splits, the vocabulary and the dataset statistics."""

    train: Prefixes
    validation: Prefixes
    test: Prefixes
    vocabulary: np.ndarray  # [N] int64: raw item id of vocabulary index i is vocabulary[i - 1]
    statistics: dict


def _sessions_in_time_order(clicks: pd.DataFrame) -> tuple[Sessions, int]:
    """Step 1: clicks grouped by session in time order; sessions in order of first appearance.

    Returns the sessions and the number of exact duplicate clicks (see `_duplicate_clicks`),
    which stay in the sessions.
    """
    session_codes, session_ids = pd.factorize(clicks["session_id"].to_numpy(), sort=False)
    times = clicks["time"].to_numpy()
    order = np.lexsort((np.arange(len(clicks)), times, session_codes))
    codes = session_codes[order]
    lengths = np.bincount(codes, minlength=len(session_ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dates = clicks["date"].to_numpy()[order]
    items = clicks["item_id"].to_numpy()[order].astype(np.int64)
    # Session date: its latest click date (YOOCHOOSE: the last click's time; DIGINETICA: the
    # eventdate, the latest in case a session crosses midnight).
    session_dates = np.maximum.reduceat(dates, offsets[:-1])
    duplicates = _duplicate_clicks(codes, times[order], dates, items)
    return Sessions(np.asarray(session_ids, np.int64), session_dates.astype(np.int64), offsets,
                    items), duplicates


def _duplicate_clicks(codes, times, dates, items) -> int:
    """Clicks repeating an earlier one exactly: same session, time, date and item. [n] each,
    sorted by (session, time), so repeats sit in runs of tied (session, time, date)."""
    tied = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1]) & (dates[1:] == dates[:-1])
    if not tied.any():
        return 0
    in_tie = np.zeros(len(codes), bool)
    in_tie[1:] |= tied
    in_tie[:-1] |= tied
    index = np.flatnonzero(in_tie)  # few clicks: the arrays below stay small
    new_run = np.ones(len(index), bool)
    new_run[1:] = ~tied[index[1:] - 1]
    run = np.cumsum(new_run)
    return int(pd.DataFrame({"run": run, "item": items[index]}).duplicated().sum())


def _keep_clicks(sessions: Sessions, keep: np.ndarray) -> Sessions:
    """Drops the clicks where `keep` is False, then sessions left shorter than 2."""
    session_of_click = np.repeat(np.arange(len(sessions)), sessions.lengths)
    lengths = np.bincount(session_of_click[keep], minlength=len(sessions))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    reduced = Sessions(sessions.session_ids, sessions.dates, offsets, sessions.items[keep])
    return reduced.take(np.flatnonzero(lengths >= 2))


def _filter_sessions(sessions: Sessions) -> Sessions:
    """Steps 2-3: drop length-1 sessions; drop clicks on items seen < 5 times; drop short ones."""
    sessions = sessions.take(np.flatnonzero(sessions.lengths >= 2))
    _, inverse, counts = np.unique(sessions.items, return_inverse=True, return_counts=True)
    return _keep_clicks(sessions, counts[inverse] >= MIN_ITEM_SUPPORT)


def _split_by_date(sessions: Sessions, test_span: int) -> tuple[Sessions, Sessions, int]:
    """Step 4: test strictly after max_date - span, train strictly before; boundary dropped."""
    split_date = int(sessions.dates.max()) - test_span
    train = sessions.take(_stable_date_order(sessions, sessions.dates < split_date))
    test = sessions.take(_stable_date_order(sessions, sessions.dates > split_date))
    return train, test, split_date


def _stable_date_order(sessions: Sessions, selected: np.ndarray) -> np.ndarray:
    index = np.flatnonzero(selected)
    return index[np.argsort(sessions.dates[index], kind="stable")]


def _number_items(train: Sessions, test: Sessions) -> tuple[Sessions, Sessions, np.ndarray]:
    """Step 5: vocabulary 1..N by first appearance in date-sorted train; unknown test items out."""
    codes, vocabulary = pd.factorize(train.items, sort=False)
    train = Sessions(train.session_ids, train.dates, train.offsets, codes.astype(np.int64) + 1)
    test_codes = pd.Index(vocabulary).get_indexer(test.items)
    known = test_codes >= 0
    test = _keep_clicks(
        Sessions(test.session_ids, test.dates, test.offsets, test_codes.astype(np.int64) + 1),
        known,
    )
    return train, test, np.asarray(vocabulary, np.int64)


def _prefix_positions(sessions: Sessions) -> tuple[np.ndarray, np.ndarray]:
    """Step 6 order: (label position, session index) of every example, longest prefix first."""
    lengths = sessions.lengths
    counts = lengths - 1
    session_index = np.repeat(np.arange(len(sessions)), counts)
    first_example = np.concatenate([[0], np.cumsum(counts)])[:-1]
    rank_in_session = np.arange(counts.sum()) - np.repeat(first_example, counts)
    # rank 0 -> label is the session's last click (the longest prefix).
    label_position = sessions.offsets[1:][session_index] - 1 - rank_in_session
    return label_position, session_index


def _materialize(sessions: Sessions, label_position, session_index) -> Prefixes:
    """Step 7: dense right-padded prefixes of the most recent MAX_LEN clicks."""
    full_length = label_position - sessions.offsets[:-1][session_index]
    kept = np.minimum(full_length, MAX_LEN)
    columns = np.arange(MAX_LEN)
    gather = (label_position - kept)[:, None] + columns[None, :]
    valid = columns[None, :] < kept[:, None]
    prefixes = np.where(valid, sessions.items[np.where(valid, gather, 0)], 0).astype(np.int32)
    return Prefixes(prefixes, sessions.items[label_position].astype(np.int64),
                    full_length.astype(np.int64), sessions.session_ids[session_index])


def prefix_examples(sessions: Sessions, fraction: int = 1) -> Prefixes:
    """Steps 6-8: all prefixes, or the most recent floor(n / fraction) of them."""
    label_position, session_index = _prefix_positions(sessions)
    keep = len(label_position) // fraction
    start = len(label_position) - keep
    return _materialize(sessions, label_position[start:], session_index[start:])


def hold_out_validation(train: Prefixes, seed: int) -> tuple[Prefixes, Prefixes]:
    """Step 9: whole sessions to validation; returns (train, validation), both in date order.

    "10%" is floor(0.1 * S) of the S sessions that have a prefix in `train`, drawn without
    replacement by a seeded permutation of those sessions in order of first appearance. All
    prefixes of a drawn session go to validation and none to train, so early stopping never
    sees a prefix of a session it trains on. With a YOOCHOOSE fraction, `train` holds only the
    kept prefixes: sessions are drawn among theirs (the session the cut splits counts with its
    kept prefixes only).
    """
    sessions, first = np.unique(train.session_ids, return_index=True)
    sessions = sessions[np.argsort(first, kind="stable")]  # order of first appearance
    n_valid = int(len(sessions) * VALIDATION_SHARE)
    chosen = np.random.default_rng(seed).permutation(len(sessions))[:n_valid]
    is_valid = np.isin(train.session_ids, sessions[chosen])
    return train.take(np.flatnonzero(~is_valid)), train.take(np.flatnonzero(is_valid))


def preprocess(clicks: pd.DataFrame, test_days: int, date_unit_seconds: int,
               fraction: int = 1, seed: int = 0, source: str = "clicks") -> Preprocessed:
    """SPEC section 1 from a clicks frame (see the readers) to train/validation/test prefixes.

    Exact duplicate clicks (same session, item, time and date) are kept, as in the reference
    preprocessing whose counts SPEC section 1 reproduces; `statistics["duplicate_clicks"]`
    counts them (clicks repeating an earlier one). Validation: see `hold_out_validation`;
    `statistics["kept_train_sessions"]` counts the sessions of the kept training prefixes and
    `statistics["validation_sessions"]` the floor(0.1 * kept_train_sessions) held out.

    Args:
      clicks: frame with columns session_id, item_id, time, date.
      test_days: 1 (YOOCHOOSE) or 7 (DIGINETICA).
      date_unit_seconds: seconds in one unit of `date` (1 for YOOCHOOSE, 86400 for DIGINETICA).
      fraction: keep the most recent 1/fraction of training prefixes (YOOCHOOSE 64 or 4).
      seed: seed of the validation hold-out.
      source: name used in error messages (the raw file's path).
    """
    sessions, duplicates = _sessions_in_time_order(clicks)
    sessions = _filter_sessions(sessions)
    if len(sessions) == 0:
        raise InputError(f"{source}: no session is left after dropping sessions shorter than 2 "
                         f"and items seen fewer than {MIN_ITEM_SUPPORT} times.")
    span = test_days * SECONDS_PER_DAY // date_unit_seconds
    train_sessions, test_sessions, split_date = _split_by_date(sessions, span)
    if len(train_sessions) == 0 or len(test_sessions) == 0:
        raise InputError(
            f"{source}: the date split at {split_date} leaves {len(train_sessions)} train and "
            f"{len(test_sessions)} test sessions; both must be non-empty (the log must span "
            f"more than {test_days} day(s)).")
    train_sessions, test_sessions, vocabulary = _number_items(train_sessions, test_sessions)
    if len(test_sessions) == 0:
        raise InputError(f"{source}: no test session keeps 2 clicks on training items.")
    all_train = prefix_examples(train_sessions, fraction)
    test = prefix_examples(test_sessions)
    train, validation = hold_out_validation(all_train, seed)
    statistics = {
        "clicks": int(len(clicks)),
        "duplicate_clicks": duplicates,
        "train_sessions": int(len(train_sessions)),
        "test_sessions": int(len(test_sessions)),
        "vocabulary_size": int(len(vocabulary)),
        "train_prefixes": int(len(all_train)),
        "train_items": _items_in(all_train),
        "kept_train_sessions": _distinct(all_train.session_ids),
        "validation_sessions": _distinct(validation.session_ids),
        "validation_prefixes": int(len(validation)),
        "test_prefixes": int(len(test)),
        "average_length": float(_average_length(train_sessions, test_sessions)),
        "split_date": split_date,
        "fraction": fraction,
    }
    return Preprocessed(train, validation, test, vocabulary, statistics)


def duplicates_note(statistics: dict) -> str:
    """One line for the build output: how many exact duplicate clicks were kept, and why."""
    return (f"Exact duplicate clicks (same session, item and time): "
            f"{statistics['duplicate_clicks']:,}, kept, as the reference preprocessing whose "
            f"counts SPEC section 1 reproduces keeps them.")


def _distinct(values: np.ndarray) -> int:
    return int(len(np.unique(values)))


def _items_in(prefixes: Prefixes) -> int:
    """Distinct items occurring in a set of prefix examples (inputs or labels)."""
    present = np.zeros(int(max(prefixes.prefixes.max(initial=0), prefixes.labels.max(initial=0)))
                       + 1, bool)
    present[prefixes.prefixes.ravel()] = True
    present[prefixes.labels] = True
    present[0] = False
    return int(present.sum())


def _average_length(train: Sessions, test: Sessions) -> float:
    lengths = np.concatenate([train.lengths, test.lengths])
    return float(lengths.mean()) if len(lengths) else 0.0
