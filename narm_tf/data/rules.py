"""The preprocessing rules: clicks -> sessions -> date split -> session-prefix examples.

Pure pandas/numpy, no TensorFlow: the TFDS builders call `preprocess_log()` and write what it
returns (`narm_tf.data.examples`); the Beam path (`narm_tf.data.beam`) applies the same rules
per session through the public functions here, and takes its statistics and its errors from
here too. Every step is vectorized over clicks; nothing loops over clicks in Python.

The path, in order (the rules' values come from a `narm_tf.data.clicks.ClickLog`):
  preprocess_log(paths, log)              the one path every builder takes:
    clicks.read_log(paths, log)           CSV/TSV or Parquet files -> clicks frame
    preprocess(clicks, ...)               clicks -> Preprocessed (train/validation/test)
    _sessions_in_time_order  step 1       group by session, order clicks, session date; count
                                          exact duplicate clicks (`duplicate_clicks`: kept,
                                          as the reference does)
    _filter_sessions         step 2-3     short sessions, item support >= 5
    _split_by_date           step 4       test after max_date - `test_span`, train before,
                                          boundary dropped
    _number_items            step 5       vocabulary 1..N in order of first appearance in train
    prefix_examples          step 6-8     ([x1..x_{i-1}], x_i), longest first, last 19; with a
                                          YOOCHOOSE fraction the most recent floor(n/fraction)
    hold_out_validation      step 9       floor(share * sessions) whole sessions to validation
                                          (`held_out_sessions`: a seeded draw, or the newest)
    statistics                            the dataset's statistics, one dict for both paths
  check_filtered, check_date_split, check_test_known, check_validation: a step that leaves
  nothing stops the build with one line naming the log and the rule.
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd

from narm_tf.data.clicks import (
    MIN_ITEM_SUPPORT,
    SECONDS_PER_DAY,
    VALIDATION_SHARE,
    ClickLog,
    InputError,
    read_log,
    vocabulary_ids,
)
from narm_tf.data.examples import MAX_LEN, Prefixes


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
class Preprocessed:
    """What a builder writes: splits, the vocabulary and the dataset statistics."""

    train: Prefixes
    validation: Prefixes
    test: Prefixes
    vocabulary: np.ndarray  # [N] int64: raw item id of vocabulary index i is vocabulary[i - 1]
    statistics: dict


def _sessions_in_time_order(clicks: pd.DataFrame) -> tuple[Sessions, int]:
    """Step 1: clicks grouped by session in time order; sessions in order of first appearance.

    Returns the sessions and the number of exact duplicate clicks (see `duplicate_clicks`),
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
    duplicates = duplicate_clicks(codes, times[order], dates, items)
    return Sessions(np.asarray(session_ids, np.int64), session_dates.astype(np.int64), offsets,
                    items), duplicates


def duplicate_clicks(codes, times, dates, items) -> int:
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


def _keep_clicks(sessions: Sessions, keep: np.ndarray, min_length: int = 2) -> Sessions:
    """Drops the clicks where `keep` is False, then sessions left shorter than `min_length`."""
    session_of_click = np.repeat(np.arange(len(sessions)), sessions.lengths)
    lengths = np.bincount(session_of_click[keep], minlength=len(sessions))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    reduced = Sessions(sessions.session_ids, sessions.dates, offsets, sessions.items[keep])
    return reduced.take(np.flatnonzero(lengths >= min_length))


def _filter_sessions(sessions: Sessions, min_item_support: int = MIN_ITEM_SUPPORT,
                     min_length: int = 2) -> Sessions:
    """Steps 2-3: drop sessions shorter than min_length (2); drop clicks on items seen fewer
    than min_item_support (5) times; drop sessions left shorter than min_length (one pass)."""
    sessions = sessions.take(np.flatnonzero(sessions.lengths >= min_length))
    _, inverse, counts = np.unique(sessions.items, return_inverse=True, return_counts=True)
    return _keep_clicks(sessions, counts[inverse] >= min_item_support, min_length)


def test_span(test_days: int, date_unit_seconds: int) -> int:
    """Step 4's test period in date units: the split date is the last session date minus it."""
    return test_days * SECONDS_PER_DAY // date_unit_seconds


def _split_by_date(sessions: Sessions, span: int) -> tuple[Sessions, Sessions, int]:
    """Step 4: test strictly after max_date - span, train strictly before; boundary dropped."""
    split_date = int(sessions.dates.max()) - span
    train = sessions.take(_stable_date_order(sessions, sessions.dates < split_date))
    test = sessions.take(_stable_date_order(sessions, sessions.dates > split_date))
    return train, test, split_date


def _stable_date_order(sessions: Sessions, selected: np.ndarray) -> np.ndarray:
    index = np.flatnonzero(selected)
    return index[np.argsort(sessions.dates[index], kind="stable")]


def _number_items(train: Sessions, test: Sessions, min_length: int = 2
                  ) -> tuple[Sessions, Sessions, np.ndarray]:
    """Step 5: vocabulary 1..N by first appearance in date-sorted train; unknown test items out."""
    codes, vocabulary = pd.factorize(train.items, sort=False)
    train = Sessions(train.session_ids, train.dates, train.offsets, codes.astype(np.int64) + 1)
    test_codes = pd.Index(vocabulary).get_indexer(test.items)
    known = test_codes >= 0
    test = _keep_clicks(
        Sessions(test.session_ids, test.dates, test.offsets, test_codes.astype(np.int64) + 1),
        known, min_length,
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


def _materialize(sessions: Sessions, label_position, session_index,
                 max_len: int = MAX_LEN) -> Prefixes:
    """Step 7: dense right-padded prefixes [n, max_len] of the most recent max_len clicks."""
    full_length = label_position - sessions.offsets[:-1][session_index]
    kept = np.minimum(full_length, max_len)
    columns = np.arange(max_len)
    gather = (label_position - kept)[:, None] + columns[None, :]
    valid = columns[None, :] < kept[:, None]
    prefixes = np.where(valid, sessions.items[np.where(valid, gather, 0)], 0).astype(np.int32)
    return Prefixes(prefixes, sessions.items[label_position].astype(np.int64),
                    full_length.astype(np.int64), sessions.session_ids[session_index])


def prefix_examples(sessions: Sessions, fraction: int = 1, max_len: int = MAX_LEN) -> Prefixes:
    """Steps 6-8: all prefixes, or the most recent floor(n / fraction) of them."""
    label_position, session_index = _prefix_positions(sessions)
    keep = len(label_position) // fraction
    start = len(label_position) - keep
    return _materialize(sessions, label_position[start:], session_index[start:], max_len)


def hold_out_validation(train: Prefixes, seed: int, share: float = VALIDATION_SHARE,
                        by: str = "sessions") -> tuple[Prefixes, Prefixes]:
    """Step 9: whole sessions to validation; returns (train, validation), both in date order.

    "10%" is floor(0.1 * S) of the S sessions that have a prefix in `train`, in order of first
    appearance (date order). `by="sessions"` draws them without replacement by a seeded
    permutation; `by="time"` takes the newest, the last floor(share * S) (`seed` unused). All
    prefixes of a held-out session go to validation and none to train, so early stopping never
    sees a prefix of a session it trains on. With a YOOCHOOSE fraction, `train` holds only the
    kept prefixes: sessions are chosen among theirs (the session the cut splits counts with its
    kept prefixes only).
    """
    is_valid = np.isin(train.session_ids, held_out_sessions(train.session_ids, seed, share, by))
    return train.take(np.flatnonzero(~is_valid)), train.take(np.flatnonzero(is_valid))


def held_out_sessions(session_ids: np.ndarray, seed: int, share: float = VALIDATION_SHARE,
                      by: str = "sessions") -> np.ndarray:
    """Step 9's choice: the ids of the sessions validation holds out, among the distinct
    `session_ids` in order of first appearance (see `hold_out_validation`)."""
    sessions, first = np.unique(session_ids, return_index=True)
    sessions = sessions[np.argsort(first, kind="stable")]  # order of first appearance
    n_valid = int(len(sessions) * share)
    if by == "time":
        chosen = np.arange(len(sessions) - n_valid, len(sessions))
    else:
        chosen = np.random.default_rng(seed).permutation(len(sessions))[:n_valid]
    return sessions[chosen]


def preprocess_log(paths: list[str], log: ClickLog, columns=None) -> Preprocessed:
    """The one path from raw files to splits: `read_log`, then `preprocess` with the log's
    rules. Every builder (click_log and its YOOCHOOSE/DIGINETICA configs) calls this. A
    dataset needs a validation split (early stopping): a log too small for validation_share
    to hold out a session is refused."""
    clicks = read_log(paths, log, columns)
    if not len(clicks):
        raise InputError(f"{', '.join(paths)}: no click is dated on or before end_date "
                         f"{log.end_date} (UTC).")
    result = preprocess(
        clicks, log.test_days, log.date_unit_seconds, log.fraction, log.seed,
        source=", ".join(paths), min_item_support=log.min_item_support,
        min_session_length=log.min_session_length, max_len=log.max_len,
        validation_share=log.validation_share, id_type=log.id_type,
        validation=log.validation)
    check_validation(result.statistics["kept_train_sessions"], log.validation_share,
                     ", ".join(paths))
    return result


def preprocess(clicks: pd.DataFrame, test_days: int, date_unit_seconds: int,
               fraction: int = 1, seed: int = 0, source: str = "clicks", *,
               min_item_support: int = MIN_ITEM_SUPPORT, min_session_length: int = 2,
               max_len: int = MAX_LEN, validation_share: float = VALIDATION_SHARE,
               id_type: str = "auto", validation: str = "sessions") -> Preprocessed:
    """The rules from a clicks frame (see `narm_tf.data.clicks`) to train/validation/test
    prefixes.

    Exact duplicate clicks (same session, item, time and date) are kept, as in the reference
    preprocessing whose counts these rules reproduce; `statistics["duplicate_clicks"]`
    counts them (clicks repeating an earlier one). Validation: see `hold_out_validation`;
    `statistics["kept_train_sessions"]` counts the sessions of the kept training prefixes and
    `statistics["validation_sessions"]` the floor(share * kept_train_sessions) held out.

    Args:
      clicks: frame with columns session_id, item_id, time, date.
      test_days: 1 (YOOCHOOSE) or 7 (DIGINETICA).
      date_unit_seconds: seconds in one unit of `date` (1 for YOOCHOOSE, 86400 for DIGINETICA).
      fraction: keep the most recent 1/fraction of training prefixes (YOOCHOOSE 64 or 4).
      seed: seed of the validation hold-out.
      source: name used in error messages (the raw file's path).
      min_item_support, min_session_length, max_len, validation_share: the rules of steps
        3, 2, 7 and 9 (defaults 5, 2, 19 and 0.1); see `ClickLog`.
      id_type: how the ids were read (`ClickLog.id_type`): decides whether the vocabulary
        holds integers or the log's strings (`vocabulary_ids`, with `clicks.attrs`).
      validation: `sessions` (a seeded random draw) or `time` (the newest sessions).
    """
    sessions, duplicates = _sessions_in_time_order(clicks)
    sessions = _filter_sessions(sessions, min_item_support, min_session_length)
    check_filtered(len(sessions), source, min_session_length, min_item_support)
    train_sessions, test_sessions, split_date = _split_by_date(
        sessions, test_span(test_days, date_unit_seconds))
    check_date_split(len(train_sessions), len(test_sessions), split_date, source, test_days)
    train_sessions, test_sessions, vocabulary = _number_items(train_sessions, test_sessions,
                                                              min_session_length)
    check_test_known(len(test_sessions), source, min_session_length)
    all_train = prefix_examples(train_sessions, fraction, max_len)
    test = prefix_examples(test_sessions, max_len=max_len)
    train, validation = hold_out_validation(all_train, seed, validation_share, validation)
    stats = statistics(
        clicks=len(clicks), duplicate_clicks=duplicates, train_sessions=len(train_sessions),
        test_sessions=len(test_sessions), vocabulary_size=len(vocabulary),
        train_prefixes=len(all_train), train_items=_items_in(all_train),
        kept_train_sessions=_distinct(all_train.session_ids),
        validation_sessions=_distinct(validation.session_ids),
        validation_prefixes=len(validation), test_prefixes=len(test),
        session_clicks=int(train_sessions.lengths.sum() + test_sessions.lengths.sum()),
        split_date=split_date, fraction=fraction,
        dates=(clicks["date"].min(), clicks["date"].max()), date_unit_seconds=date_unit_seconds)
    vocabulary = vocabulary_ids(vocabulary, clicks.attrs.get("item_names", {}), id_type)
    return Preprocessed(train, validation, test, vocabulary, stats)


def statistics(*, clicks: int, duplicate_clicks: int, train_sessions: int, test_sessions: int,
               vocabulary_size: int, train_prefixes: int, train_items: int,
               kept_train_sessions: int, validation_sessions: int, validation_prefixes: int,
               test_prefixes: int, session_clicks: int, split_date: int, fraction: int,
               dates: tuple, date_unit_seconds: int) -> dict:
    """The dataset's statistics, in the order a build stores and prints them (both paths).

    train_prefixes: before the validation hold-out; kept_train_sessions: the sessions of the
    fraction's prefixes; session_clicks: the clicks of the train and test sessions (their
    average length); dates: the first and last click dates read.
    """
    return {
        "clicks": int(clicks),
        "duplicate_clicks": int(duplicate_clicks),
        "train_sessions": int(train_sessions),
        "test_sessions": int(test_sessions),
        "vocabulary_size": int(vocabulary_size),
        "train_prefixes": int(train_prefixes),
        "train_items": int(train_items),
        "kept_train_sessions": int(kept_train_sessions),
        "validation_sessions": int(validation_sessions),
        "validation_prefixes": int(validation_prefixes),
        "test_prefixes": int(test_prefixes),
        "average_length": float(session_clicks / (train_sessions + test_sessions)),
        "split_date": int(split_date),
        "fraction": int(fraction),
        **date_range(*dates, date_unit_seconds),
    }


def check_filtered(sessions: int, source: str, min_session_length: int,
                   min_item_support: int) -> None:
    """Steps 2-3 must leave a session."""
    if sessions == 0:
        raise InputError(f"{source}: no session is left after dropping sessions shorter than "
                         f"{min_session_length} and items seen fewer than {min_item_support} "
                         f"times.")


def check_date_split(train: int, test: int, split_date: int, source: str,
                     test_days: int) -> None:
    """Step 4 must leave train and test sessions."""
    if train == 0 or test == 0:
        raise InputError(
            f"{source}: the date split at {split_date} leaves {train} train and {test} test "
            f"sessions; both must be non-empty (the log must span more than {test_days} "
            f"day(s)).")


def check_test_known(test: int, source: str, min_session_length: int) -> None:
    """Step 5 must leave a test session (of items known from train)."""
    if test == 0:
        raise InputError(f"{source}: no test session keeps {min_session_length} clicks on "
                         f"training items.")


def check_validation(sessions: int, share: float, source: str) -> None:
    """Refuses a validation_share that holds out no session of `sessions` (floor(share * S))."""
    if int(sessions * share) == 0:
        raise InputError(
            f"{source}: validation_share {share} of the {sessions} training session(s) holds "
            f"out none (early stopping needs at least one): raise validation_share to at "
            f"least {1 / max(sessions, 1):.3g} or use a longer log.")


def date_range(first, last, date_unit_seconds: int) -> dict:
    """The first and last click dates read, as UTC ISO text (days for day-dated logs)."""
    def text(date) -> str:
        moment = datetime.datetime.fromtimestamp(int(date) * date_unit_seconds,
                                                 datetime.timezone.utc)
        if date_unit_seconds == SECONDS_PER_DAY:
            return moment.date().isoformat()
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"first_click": text(first), "last_click": text(last)}


def duplicates_note(stats: dict) -> str:
    """One line for the build output: how many exact duplicate clicks were kept, and why."""
    return (f"Exact duplicate clicks (same session, item and time): "
            f"{stats['duplicate_clicks']:,}, kept, as the reference preprocessing whose "
            f"counts docs/data.md reproduces keeps them.")


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
