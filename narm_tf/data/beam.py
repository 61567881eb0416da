"""The preprocessing rules as Apache Beam transforms: the same dataset as `rules.preprocess_log`.

`tfds build ... --beam_pipeline_options=...` runs this (see `tfds_builders/session_prefixes.py`);
the launching process only builds the graph. It reads through the public readers of
`narm_tf.data.clicks`, applies the public rules of `narm_tf.data.rules` to one-session
`Sessions` (ordering, duplicates, prefixes, truncation, the validation draw), takes the
statistics and the errors of a step that leaves nothing from there, and emits the records of
`narm_tf.data.examples`: the two paths share the rules. Every step is a transform or combiner:

  read        one task per Parquet row group or CSV byte range, clicks keyed by session, each
              with its global row position (file index, row) as tie-breaker; clicks after the
              log's `end_date` are cut as in memory (`clicks.before_end`)
  step 1      GroupByKey(session): clicks ordered by (time, row); date = latest click date;
              first_row = the session's first row in the log (the in-memory session order)
  step 2-3    item counts: CombinePerKey(sum); the supported items: a side input
  step 4      max date: CombineGlobally(max), a side input (one integer)
  step 5      vocabulary: CombinePerKey(min) of each item's first (date, first_row, position)
              in train, then one sort of those keys: a side input of N items (raw ids)
  step 6-9    per split, one sort of per-session keys (date, first_row, clicks): 4 integers
              a session, in one worker (with the vocabulary's, the only global sorts); it
              places every session's prefixes (the fraction cut, the validation draw of
              `rules.held_out_sessions` on the kept sessions, each example's
              position in its split) and is joined back by session id.

Reading is parallel over Parquet row groups and 64 MiB line-aligned byte ranges of CSV files
(a smaller CSV file is one task, read by `clicks.read_log`); errors name file and line
or row group as in memory. (Quoted fields holding newlines are not supported in CSV ranges.)
The DirectRunner keeps shuffled data in the launching process; a cluster runner (Dataflow,
Flink, Spark) keeps it in its shuffle service.

Side inputs, all small global facts: the supported item ids (at most the distinct items), the
max date (1 integer), the vocabulary (N raw ids). The per-session plans (a few integers per
session) are a keyed PCollection joined with CoGroupByKey, not a side input.
"""

from __future__ import annotations

import collections
import os

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq

from narm_tf.data import clicks, examples, rules

SPLITS = ("train", "validation", "test")
ROW_BITS = 40  # global row position = file index << ROW_BITS | position in file
CSV_CHUNK_BYTES = 64 << 20  # a larger CSV file is read as byte ranges of this size


# ------------------------------------------------------------------------------ reading


def _read_tasks(paths: list[str], log: clicks.ClickLog) -> list[tuple]:
    """At launch, from file sizes and Parquet footers only: (file index, path, part, first
    row position of the part in its file). part: None (a whole CSV file), a Parquet row
    group, or a (start, end) byte range of a CSV file larger than CSV_CHUNK_BYTES."""
    tasks = []
    for index, path in enumerate(paths):
        if log.format != "parquet":
            size = os.path.getsize(path)
            if size <= CSV_CHUNK_BYTES:
                tasks.append((index, path, None, 0))
            else:  # positions: the range's first byte, + row; rows < bytes keeps them ordered
                tasks += [(index, path, (start, min(start + CSV_CHUNK_BYTES, size)), start)
                          for start in range(0, size, CSV_CHUNK_BYTES)]
            continue
        metadata = pq.ParquetFile(path).metadata
        if not metadata.num_rows:
            raise clicks.InputError(f"{path}: the file holds no clicks.")
        starts = np.cumsum([0] + [metadata.row_group(g).num_rows
                                  for g in range(metadata.num_row_groups)])
        tasks += [(index, path, g, int(starts[g])) for g in range(metadata.num_row_groups)]
    return tasks


def _read_file(task, log: clicks.ClickLog, columns):
    """A read task -> ('clicks', n), ('dates', (first, last)), ('names', (id, string)) of its
    non-integer item ids, then (session id, clicks of it in this task).

    A session's clicks in one task: (time [k], row [k], date [k], item [k]) as int lists.
    """
    index, path, part, first_row = task
    if part is None:
        frame = clicks.read_log([path], log, columns)
    elif isinstance(part, tuple):  # the lines starting in a byte range
        arrays = clicks.read_csv(path, log, columns, part)
        if arrays is None:
            yield beam.pvalue.TaggedOutput("clicks", 0)
            return
        frame = clicks.clicks_frame(arrays, log, path)
    else:
        frame = clicks.clicks_frame(clicks.read_row_group(path, part, log), log, path)
    yield beam.pvalue.TaggedOutput("clicks", len(frame))
    for name in frame.attrs["item_names"].items():
        yield beam.pvalue.TaggedOutput("names", name)
    if not len(frame):  # a byte range holding only the header
        return
    yield beam.pvalue.TaggedOutput("dates", (int(frame["date"].min()),
                                             int(frame["date"].max())))
    rows = (index << ROW_BITS) + first_row + np.arange(len(frame), dtype=np.int64)
    sessions = frame["session_id"].to_numpy()
    order = np.argsort(sessions, kind="stable")
    sorted_sessions = sessions[order]
    starts = np.flatnonzero(np.r_[True, sorted_sessions[1:] != sorted_sessions[:-1]])
    ends = np.r_[starts[1:], len(order)]
    columns_ = [frame["time"].to_numpy()[order], rows[order], frame["date"].to_numpy()[order],
                frame["item_id"].to_numpy()[order]]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(sorted_sessions[start]), tuple(c[start:end].tolist() for c in columns_)


# ------------------------------------------------------------------------------ step 1


def _session(keyed_parts):
    """(session id, [file parts]) -> (session id, date, first_row, items, duplicates).

    Items stay a tuple of ints between steps (cheap to encode; numpy only within a step).
    """
    session_id, parts = keyed_parts
    times, rows, dates, items = (np.concatenate([np.asarray(p[i], np.int64) for p in parts])
                                 for i in range(4))
    order = np.lexsort((rows, times))
    duplicates = rules.duplicate_clicks(np.zeros(len(order), np.int64), times[order],
                                        dates[order], items[order])
    return (session_id, int(dates.max()), int(rows.min()), tuple(items[order].tolist()),
            duplicates)


def _one_session(session, items=None) -> rules.Sessions:
    """A session record as a one-session `rules.Sessions`."""
    session_id, date, _, session_items = session[:4]
    session_items = session_items if items is None else items
    return rules.Sessions(np.array([session_id], np.int64), np.array([date], np.int64),
                          np.array([0, len(session_items)], np.int64),
                          np.asarray(session_items, np.int64))


# ------------------------------------------------------------------------------ step 2-5


def _keep_supported(session, supported: frozenset, min_length: int):
    """Step 3: the session without clicks on unsupported items, if still long enough."""
    items = tuple(item for item in session[3] if item in supported)
    if len(items) >= min_length:
        yield (*session[:3], items)


def _first_appearances(session):
    """(item, (date, first_row, position)) of each distinct item of a train session."""
    seen = set()
    for position, item in enumerate(session[3]):
        if item not in seen:
            seen.add(item)
            yield item, (session[1], session[2], position)


def _vocabulary(firsts: list) -> list[int]:
    """[(item, first key)] -> raw ids [N] in order of first appearance (one sort of N keys)."""
    firsts.sort(key=lambda pair: pair[1])
    return [item for item, _ in firsts]


def _number_items(session, index: dict, min_length: int):
    """Step 5: items -> indices 1..N; unknown (test) items dropped; short sessions dropped."""
    items = tuple(index[item] for item in session[3] if item in index)
    if len(items) >= min_length:
        yield (*session[:3], items)


# ------------------------------------------------------------------------------ step 6-9


def _plan(summaries: list, split: str, fraction: int, seed: int, share: float, by: str,
          source: str):
    """One sort of (date, first_row) over a split's sessions -> each session's place.

    summaries: [(session id, date, first_row, clicks)]. Returns ({session id: [(split,
    first key, first kept rank, kept count)]}, counts) where the session's kept prefixes,
    longest first, are ranks first_kept..clicks-2 and take keys first_key, first_key + 1, ...
    """
    table = np.array(summaries, np.int64).reshape(-1, 4)
    table = table[np.lexsort((table[:, 2], table[:, 1]))]
    session_ids, counts = table[:, 0], table[:, 3] - 1
    offsets = np.cumsum(counts) - counts
    start = counts.sum() - counts.sum() // fraction  # the fraction keeps the last n // fraction
    kept = np.clip(offsets + counts - start, 0, counts)
    is_valid = np.zeros(len(table), bool)
    if split == "train":
        kept_sessions = session_ids[kept > 0]  # in date order, as the in-memory prefixes
        held_out = rules.held_out_sessions(kept_sessions, seed, share, by)
        rules.check_validation(len(kept_sessions), share, source)
        is_valid = np.isin(session_ids, held_out)
    places = {}
    for name, members in (("validation", is_valid), (split, ~is_valid)):
        in_split = np.where(members, kept, 0)
        keys = np.cumsum(in_split) - in_split
        for i in np.flatnonzero(in_split).tolist():
            places[int(session_ids[i])] = (name, int(keys[i]), int(counts[i] - kept[i]),
                                           int(kept[i]))
    facts = {"sessions": len(table), "clicks": int(table[:, 3].sum()),
             "prefixes": int(kept.sum()), "kept_sessions": int((kept > 0).sum()),
             "validation_sessions": int((is_valid & (kept > 0)).sum()),
             "validation_prefixes": int(kept[is_valid].sum())}
    return places, facts


def _examples(joined, max_len: int):
    """(session id, {session, place}) -> (split, (key, example)) of its kept prefixes, and
    the distinct items of those prefixes (tag 'items', train sessions only)."""
    _, grouped = joined
    if not grouped["place"] or not grouped["session"]:
        return
    (split, first_key, first_rank, count), = grouped["place"]
    session, = grouped["session"]
    prefixes = rules.prefix_examples(_one_session(session), 1, max_len)
    prefixes = prefixes.take(np.arange(first_rank, first_rank + count))
    for i, example in enumerate(examples.as_examples(prefixes)):
        yield split, (first_key + i, example)
    if split != "test":
        items = np.union1d(prefixes.prefixes[prefixes.prefixes > 0], prefixes.labels)
        for item in items.tolist():
            yield beam.pvalue.TaggedOutput("items", item)


def _statistics(facts: dict, n_clicks, duplicates, vocabulary, train_items, split_date, dates,
                fraction: int, date_unit_seconds: int) -> dict:
    """`rules.statistics` from the pipeline's counts."""
    train, test = facts["train"], facts["test"]
    return rules.statistics(
        clicks=n_clicks, duplicate_clicks=duplicates, train_sessions=train["sessions"],
        test_sessions=test["sessions"], vocabulary_size=len(vocabulary),
        train_prefixes=train["prefixes"], train_items=train_items,
        kept_train_sessions=train["kept_sessions"],
        validation_sessions=train["validation_sessions"],
        validation_prefixes=train["validation_prefixes"], test_prefixes=test["prefixes"],
        session_clicks=train["clicks"] + test["clicks"], split_date=split_date,
        fraction=fraction, dates=dates, date_unit_seconds=date_unit_seconds)


def _check_split(max_date, span: int, source: str, log: clicks.ClickLog) -> int:
    """The split date; `rules.check_filtered`'s error when steps 2-3 left no session (no
    session dates a max_date)."""
    rules.check_filtered(0 if max_date is None else 1, source, log.min_session_length,
                         log.min_item_support)
    return max_date - span


def _check_counts(counts: dict, split_date: int, source: str, log: clicks.ClickLog):
    """`rules.check_date_split` and `rules.check_test_known` on the split's session counts."""
    rules.check_date_split(counts.get("train_before", 0), counts.get("test_before", 0),
                           split_date, source, log.test_days)
    rules.check_test_known(counts.get("test", 0), source, log.min_session_length)


class Preprocess(beam.PTransform):
    """PBegin -> {split: PCollection of (key, example)} plus 'vocabulary' and 'statistics'
    (one-element PCollections): `rules.preprocess_log(paths, log, columns)` on Beam."""

    def __init__(self, paths: list[str], log: clicks.ClickLog, columns=None):
        super().__init__()
        clicks.check_log_files(paths, log, columns)  # before any work: files and columns exist
        self.paths, self.log, self.columns = list(paths), log, columns
        self.tasks = _read_tasks(self.paths, log)

    def expand(self, pbegin):
        log, source = self.log, ", ".join(self.paths)
        span = rules.test_span(log.test_days, log.date_unit_seconds)
        read = (pbegin | "Files" >> beam.Create(self.tasks)
                | "Reshuffle" >> beam.Reshuffle()
                | "Read" >> beam.FlatMap(_read_file, log, self.columns).with_outputs(
                    "clicks", "names", "dates", main="parts"))
        n_clicks = read.clicks | "CountClicks" >> beam.CombineGlobally(sum)
        dates = read.dates | "DateRange" >> beam.CombineGlobally(_date_range)
        names = (read.names | "DistinctNames" >> beam.Distinct()
                 | "NameList" >> beam.combiners.ToList()
                 | "Names" >> beam.Map(_names))
        sessions = (read.parts | "BySession" >> beam.GroupByKey()
                    | "Order" >> beam.Map(_session))
        duplicates = (sessions | "Duplicates" >> beam.Map(lambda s: s[4])
                      | "SumDuplicates" >> beam.CombineGlobally(sum))
        long_enough = sessions | "MinLength" >> beam.Filter(
            lambda s, n: len(s[3]) >= n, log.min_session_length)
        supported = (long_enough
                     | "ItemCounts" >> beam.FlatMap(
                         lambda s: collections.Counter(s[3]).items())
                     | "SumCounts" >> beam.CombinePerKey(sum)
                     | "Supported" >> beam.Filter(lambda kv, n: kv[1] >= n,
                                                  log.min_item_support)
                     | "SupportedIds" >> beam.Keys()
                     | "SupportedList" >> beam.combiners.ToList()
                     | "SupportedSet" >> beam.Map(frozenset))
        filtered = long_enough | "ItemSupport" >> beam.FlatMap(
            _keep_supported, beam.pvalue.AsSingleton(supported), log.min_session_length)
        max_date = (filtered | "Dates" >> beam.Map(lambda s: s[1])
                    | "MaxDate" >> beam.CombineGlobally(lambda dates: max(dates, default=None)))
        split_date = max_date | "SplitDate" >> beam.Map(_check_split, span, source, log)
        split_view = beam.pvalue.AsSingleton(split_date)
        train_raw = filtered | "Train" >> beam.Filter(lambda s, d: s[1] < d, split_view)
        test_raw = filtered | "Test" >> beam.Filter(lambda s, d: s[1] > d, split_view)
        vocabulary = (train_raw | "FirstSeen" >> beam.FlatMap(_first_appearances)
                      | "FirstOfItem" >> beam.CombinePerKey(min)
                      | "AllFirsts" >> beam.combiners.ToList()
                      | "Vocabulary" >> beam.Map(_vocabulary))
        raw_ids = vocabulary | "RawIds" >> beam.Map(
            lambda v, n: clicks.vocabulary_ids(np.asarray(v, np.int64), n,
                                               log.id_type).tolist(),
            beam.pvalue.AsSingleton(names))
        vocab_view = beam.pvalue.AsSingleton(vocabulary | "Index" >> beam.Map(
            lambda v: {item: i + 1 for i, item in enumerate(v)}))
        numbered = {
            name: raw | f"Number{name}" >> beam.FlatMap(_number_items, vocab_view,
                                                        log.min_session_length)
            for name, raw in (("train", train_raw), ("test", test_raw))}
        counts = ({"train_before": train_raw, "test_before": test_raw, "test": numbered["test"]}
                  | "Tag counts" >> _CountEach())
        split_date = split_date | "CheckCounts" >> beam.Map(
            lambda d, c: (_check_counts(c, d, source, log), d)[1], beam.pvalue.AsSingleton(counts))
        plans, facts = {}, {}
        for name, fraction in (("train", log.fraction), ("test", 1)):
            planned = (numbered[name]
                       | f"Summary{name}" >> beam.Map(lambda s: (s[0], s[1], s[2], len(s[3])))
                       | f"Summaries{name}" >> beam.combiners.ToList()
                       | f"Plan{name}" >> beam.Map(_plan, name, fraction, log.seed,
                                                   log.validation_share, log.validation,
                                                   source))
            plans[name] = planned | f"Places{name}" >> beam.FlatMap(lambda p: p[0].items())
            facts[name] = planned | f"Facts{name}" >> beam.Map(lambda p, n: (n, p[1]), name)
        keyed_sessions = (
            (numbered["train"], numbered["test"]) | "AllSessions" >> beam.Flatten()
            | "KeySessions" >> beam.Map(lambda s: (s[0], s)))
        keyed_places = (plans["train"], plans["test"]) | "AllPlaces" >> beam.Flatten()
        emitted = ({"session": keyed_sessions, "place": keyed_places}
                   | "Join" >> beam.CoGroupByKey()
                   | "Examples" >> beam.FlatMap(_examples, log.max_len).with_outputs(
                       "items", main="examples"))
        train_items = (emitted.items | "DistinctItems" >> beam.Distinct()
                       | "CountItems" >> beam.combiners.Count.Globally())
        all_facts = ((facts["train"], facts["test"]) | "AllFacts" >> beam.Flatten()
                     | "FactsList" >> beam.combiners.ToDict())
        statistics = all_facts | "Statistics" >> beam.Map(
            _statistics, *(beam.pvalue.AsSingleton(p) for p in
                           (n_clicks, duplicates, vocabulary, train_items, split_date, dates)),
            log.fraction, log.date_unit_seconds)
        by_split = emitted.examples | "Partition" >> beam.Partition(
            lambda e, n: SPLITS.index(e[0]), len(SPLITS))
        result = {split: by_split[i] | f"Keyed{split}" >> beam.Values()
                  for i, split in enumerate(SPLITS)}
        result["vocabulary"] = raw_ids
        result["statistics"] = statistics
        return result


def _date_range(ranges) -> tuple | None:
    """The first and last click date over the read tasks' (first, last) pairs."""
    ranges = list(ranges)
    if not ranges:
        return None
    return min(first for first, _ in ranges), max(last for _, last in ranges)


def _names(pairs: list) -> dict:
    """The distinct (id, string) pairs of the log as {id: string}; two strings sharing one id
    (a hash collision) are refused as in memory."""
    names = clicks.ItemNames(pairs)
    if len(names) != len(pairs):
        seen = clicks.ItemNames()
        for pair in pairs:
            seen = clicks.merge_names(seen, dict([pair]))
    return names


class _CountEach(beam.PTransform):
    """{name: PCollection} -> one dict {name: element count} (a one-element PCollection)."""

    def expand(self, named):
        counted = [pcoll | f"Count{name}" >> beam.combiners.Count.Globally()
                   | f"Name{name}" >> beam.Map(lambda n, k: (k, n), name)
                   for name, pcoll in named.items()]
        return tuple(counted) | "CountsFlatten" >> beam.Flatten() | beam.combiners.ToDict()
