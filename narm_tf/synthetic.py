"""The embedded default click log: a deterministic synthetic YOOCHOOSE-format file.

Sessions follow a few latent intents (item clusters). Within an intent, item popularity is
Zipf-like and every item has a few preferred successors, so the next click is predictable from
the session (a model that learns beats popularity by a wide margin); sessions also repeat earlier
clicks and jump within their intent. Sessions start uniformly over `num_days` days, so the
date split (the last day is test) works as on the real data.

Named logs (`--preset`): `repeat_shop` (long sessions browsing co-visited neighbourhoods,
`write_neighbourhood_clicks`) and `drift_shop` (short sessions in a shop whose catalogue,
co-visitation and revisit habit change from day to day, `write_drift_clicks`).

Run: `python -m narm_tf.synthetic --out=DIR [--preset=NAME]` writes DIR/yoochoose-clicks.dat.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

CLICKS_FILE = "yoochoose-clicks.dat"
START_MS = 1_396_310_400_000  # 2014-04-01T00:00:00Z, the YOOCHOOSE era.
MS_PER_DAY = 86_400_000
NUM_INTENTS = 10
SUCCESSOR_WEIGHTS = np.array([0.6, 0.25, 0.15])  # Preferred next items of every item.
REPEAT_SHARE = 0.1  # Click an item seen earlier in the session.
JUMP_SHARE = 0.1  # Click a popular item of the session's intent.
DEFAULT_SESSIONS = 6000  # Sized so `yoochoose_full` builds in seconds and still teaches a model.
DEFAULT_ITEMS = 800
DEFAULT_DAYS = 7
WRITE_CHUNK = 2_000_000  # Rows formatted at once when writing (bounds memory).


def write_clicks(path: str, session_ids: np.ndarray, times_ms: np.ndarray,
                 item_ids: np.ndarray) -> str:
    """Writes clicks [n] (int64 each) as `SessionId,Timestamp,ItemId,Category`, no header."""
    with open(path, "wb") as sink:
        for start in range(0, len(session_ids), WRITE_CHUNK):
            part = slice(start, start + WRITE_CHUNK)
            stamps = pa.array(times_ms[part].astype(np.int64)).cast(pa.timestamp("ms"))
            table = pa.table({
                "SessionId": pa.array(session_ids[part].astype(np.int64)),
                "Timestamp": pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ"),
                "ItemId": pa.array(item_ids[part].astype(np.int64)),
                "Category": pa.array(np.zeros(len(stamps), np.int8)),
            })
            pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False,
                                                            quoting_style="none"))
    return path


def _zipf(n: int, exponent: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _sample_in_intent(rng, intents, members, popularity) -> np.ndarray:
    """One item per session, drawn by popularity from its intent's items. intents: [s] -> [s]."""
    items = np.empty(len(intents), np.int64)
    for intent, (pool, weights) in enumerate(zip(members, popularity, strict=True)):
        chosen = intents == intent
        items[chosen] = rng.choice(pool, size=int(chosen.sum()), p=weights)
    return items


def _item_graph(rng, num_items: int):
    """Intent members, their popularity and every item's preferred successors [num_items, 3]."""
    intent_of_item = rng.permutation(num_items) % NUM_INTENTS
    members = [np.flatnonzero(intent_of_item == c) for c in range(NUM_INTENTS)]
    popularity = [_zipf(len(pool)) for pool in members]
    successors = np.empty((num_items, len(SUCCESSOR_WEIGHTS)), np.int64)
    for pool, weights in zip(members, popularity, strict=True):
        del weights  # Successors are uniform within the intent: popularity cannot predict them.
        successors[pool] = rng.choice(pool, size=(len(pool), len(SUCCESSOR_WEIGHTS)))
    return members, popularity, successors


def _sessions(rng, num_sessions: int, num_items: int, max_length: int = 30):
    """Item indices [num_sessions, max_length] and lengths [num_sessions], one step at a time."""
    members, popularity, successors = _item_graph(rng, num_items)
    intents = rng.choice(NUM_INTENTS, size=num_sessions, p=_zipf(NUM_INTENTS, 0.5))
    lengths = np.minimum(1 + rng.geometric(0.25, size=num_sessions), max_length)
    items = np.zeros((num_sessions, max_length), np.int64)
    items[:, 0] = _sample_in_intent(rng, intents, members, popularity)
    rows = np.arange(num_sessions)
    for step in range(1, max_length):
        action = rng.random(num_sessions)
        successor = successors[items[:, step - 1],
                               rng.choice(len(SUCCESSOR_WEIGHTS), num_sessions,
                                          p=SUCCESSOR_WEIGHTS)]
        repeat = items[rows, rng.integers(0, step, num_sessions)]
        jump = _sample_in_intent(rng, intents, members, popularity)
        items[:, step] = np.where(action < REPEAT_SHARE, repeat,
                                  np.where(action < REPEAT_SHARE + JUMP_SHARE, jump, successor))
    return items, lengths


def write_synthetic_clicks(path: str, num_sessions: int = DEFAULT_SESSIONS,
                           num_items: int = DEFAULT_ITEMS, num_days: int = DEFAULT_DAYS,
                           seed: int = 0) -> str:
    """Writes a deterministic synthetic YOOCHOOSE click file to `path` (a file or a folder).

    Args:
      path: output file, or a folder to write `yoochoose-clicks.dat` into.
      num_sessions: sessions to generate (about 4 clicks each on average).
      num_items: distinct items (a few rare ones fall under the support threshold of 5).
      num_days: days the sessions span; the last one becomes the test split.
      seed: the only source of randomness: equal seeds give byte-identical files.
    Returns:
      The path of the written file.
    """
    if os.path.isdir(path):
        path = os.path.join(path, CLICKS_FILE)
    rng = np.random.default_rng(seed)
    items, lengths = _sessions(rng, num_sessions, num_items)
    return _write_sessions(rng, path, items, lengths, num_items, num_days, id_range=1_000_000)


# ------------------------------------------------------------ neighbourhood sessions (presets)

# Named logs of `write_neighbourhood_clicks` (`--preset=NAME`). `repeat_shop`: a shop whose
# sessions are long, revisit items and browse one neighbourhood of a large catalogue, where
# paper-default NARM loses to session-kNN (docs/results.md, "A log where paper NARM loses
# to session kNN").
PRESETS = {
    "repeat_shop": {"num_sessions": 4000, "num_items": 8000, "repeat_rate": 0.2,
                    "neighbourhood_size": 40, "mean_length": 13, "num_days": 7},
}


def _neighbourhood_sessions(rng, num_sessions, num_items, repeat_rate, neighbourhood_size,
                            mean_length, max_length=60):
    """Item indices [num_sessions, max_length] and lengths [num_sessions].

    Items sit on a ring (a random order); a session browses the `neighbourhood_size` items after
    a random start on it, each drawn by a Zipf weight within the window, so sessions of nearby
    starts share items (co-visited neighbourhoods, what session-kNN finds). With probability
    `repeat_rate` a click instead repeats one of the session's earlier clicks (uniformly over
    them, so items clicked often come back more often).
    """
    ring = rng.permutation(num_items)
    starts = rng.integers(0, num_items, num_sessions)
    # 2 + a geometric count of mean `mean_length - 2`; capped at `max_length`.
    lengths = np.minimum(2 + rng.geometric(1.0 / (mean_length - 2), num_sessions), max_length)
    offsets = rng.choice(neighbourhood_size, size=(num_sessions, max_length),
                         p=_zipf(neighbourhood_size, 0.8))
    items = ring[(starts[:, None] + offsets) % num_items]
    rows = np.arange(num_sessions)
    repeats = rng.random((num_sessions, max_length)) < repeat_rate
    for step in range(1, max_length):
        earlier = items[rows, rng.integers(0, step, num_sessions)]
        items[:, step] = np.where(repeats[:, step], earlier, items[:, step])
    return items, lengths


def write_neighbourhood_clicks(path: str, num_sessions: int, num_items: int, repeat_rate: float,
                               neighbourhood_size: int, mean_length: float, num_days: int = 14,
                               seed: int = 0) -> str:
    """Writes a deterministic YOOCHOOSE-format log of neighbourhood sessions (see
    `_neighbourhood_sessions`) to `path` (a file or a folder); returns the file's path.

    Args:
      num_items: catalogue size; repeat_rate: share of clicks (after the first) that repeat an
      earlier click of the session; neighbourhood_size: items a session browses among;
      mean_length: mean clicks per session (>= 3; each has 2 to 60); num_days: days spanned,
      the last one is the test split; seed: equal seeds give byte-identical files.
    """
    if not 0 <= repeat_rate < 1:
        raise ValueError(f"repeat_rate must be in [0, 1), got {repeat_rate}")
    if not 1 <= neighbourhood_size <= num_items:
        raise ValueError(f"neighbourhood_size must be in 1..num_items ({num_items}), "
                         f"got {neighbourhood_size}")
    if mean_length < 3:
        raise ValueError(f"mean_length must be >= 3, got {mean_length}")
    if os.path.isdir(path):
        path = os.path.join(path, CLICKS_FILE)
    rng = np.random.default_rng(seed)
    items, lengths = _neighbourhood_sessions(rng, num_sessions, num_items, repeat_rate,
                                             neighbourhood_size, mean_length)
    return _write_sessions(rng, path, items, lengths, num_items, num_days)


def _session_starts(rng, num_sessions: int, num_days: int) -> np.ndarray:
    """Start of every session `[s]` in ms after START_MS, uniform over the days, sorted."""
    return np.sort(rng.integers(0, num_days * MS_PER_DAY - 3_600_000, num_sessions))


def _write_sessions(rng, path, items, lengths, num_items, num_days, id_range=10_000_000,
                    starts=None):
    """Times and raw ids (drawn from `id_range` ids) for sessions `[s, max_length]` of item
    indices, then the file. starts: the sessions' sorted start times (`_session_starts`),
    drawn here when None."""
    num_sessions = len(items)
    if starts is None:
        starts = _session_starts(rng, num_sessions, num_days)
    gaps = (5_000 + rng.exponential(60_000, items.shape)).astype(np.int64)
    gaps[:, 0] = 0
    times = START_MS + starts[:, None] + np.cumsum(gaps, axis=1)
    raw_ids = 214_500_000 + rng.choice(id_range, size=num_items, replace=False)
    valid = np.arange(items.shape[1])[None, :] < lengths[:, None]
    session_ids = np.broadcast_to(np.arange(1, num_sessions + 1)[:, None], items.shape)
    return write_clicks(path, session_ids[valid], times[valid], raw_ids[items[valid]])


# ------------------------------------------------------------------ drifting shop (drift_shop)

# `drift_shop`: short sessions in a shop where tomorrow differs from the past (its catalogue,
# co-visitation and revisit habit change day by day), where paper NARM loses to session-kNN
# (measured, Recall@20 / MRR@20 on the test day: SKNN 37.22 / 17.51, NARM 33.73 / 15.97).
DRIFT_PRESETS = {
    "drift_shop": {"num_sessions": 65_000, "num_items": 10_000, "num_days": 14,
                   "mean_length": 4.9, "repeat_start": 0.48, "repeat_end": 0.10, "window": 30,
                   "jump_rate": 0.15, "half_life_days": 3.0, "lead_days": 10.0,
                   "move_share": 0.25},
}
APPEAL_SIGMA = 1.0  # Spread (log scale, lognormal) of the items' base appeal.
LIFETIME_HALF_LIVES = 6  # An item leaves the catalogue this many half lives after its launch.
MAX_DRIFT_LENGTH = 30  # Longest session of `write_drift_clicks`.


def _appeal(rng, num_items, num_days, half_life_days, lead_days) -> np.ndarray:
    """Appeal `[num_days, num_items]` of every item each day: a lognormal base halving every
    `half_life_days` after the item's launch (uniform from `lead_days` before the first day
    to the last day); 0 before the launch and once the item has left the catalogue."""
    launch = rng.uniform(-lead_days, num_days, num_items)
    base = rng.lognormal(0.0, APPEAL_SIGMA, num_items)
    age = np.arange(num_days)[:, None] - launch[None, :]
    live = (age >= 0) & (age < LIFETIME_HALF_LIVES * half_life_days)
    return np.where(live, base * 0.5 ** (np.maximum(age, 0.0) / half_life_days), 0.0)


def _daily_rings(rng, appeal, move_share):
    """Each day's arrangement of its live items on a ring (the shop's listings).

    Every item gets a random place on day 0, and each day a share `move_share` of the items
    moves to a new random place, so an item's neighbours are those of its latest move: they
    change from day to day, and the test day's resemble the last training days' most.
    Returns (ring: item ids day after day, each day's in ring order; starts `[days + 1]`:
    day d is ring[starts[d]:starts[d + 1]]; place `[days, items]`: an item's index in its
    day's ring, -1 when it is not live).
    """
    num_days, num_items = appeal.shape
    moved = rng.random((num_days, num_items)) < move_share
    moved[0] = True
    latest_move = np.maximum.accumulate(np.where(moved, np.arange(num_days)[:, None], 0), axis=0)
    position = rng.random((num_days, num_items))[latest_move, np.arange(num_items)]
    days, items = np.nonzero(appeal > 0)
    order = np.lexsort((position[days, items], days))
    days, items = days[order], items[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(days, minlength=num_days))])
    place = np.full(appeal.shape, -1, np.int64)
    place[days, items] = np.arange(len(items)) - starts[days]
    return items, starts, place


def _by_appeal(rng, appeal, day) -> np.ndarray:
    """One item per session `[s]`, drawn by the appeal of the session's day `day` `[s]`."""
    num_days, num_items = appeal.shape
    cumulative = np.cumsum(appeal, axis=1)
    # Day d's cumulative shares shifted into (d, d + 1]: one search serves every day.
    cumulative = (cumulative / cumulative[:, -1:] + np.arange(num_days)[:, None]).ravel()
    found = np.searchsorted(cumulative, day + rng.random(len(day)), side="right")
    return np.minimum(found - day * num_items, num_items - 1)


def _drift_sessions(rng, starts_ms, num_items, num_days, mean_length, repeat_start, repeat_end,
                    window, jump_rate, half_life_days, lead_days, move_share):
    """Item indices `[s, MAX_DRIFT_LENGTH]` and lengths `[s]` of sessions starting at
    `starts_ms` `[s]` (see `write_drift_clicks`)."""
    appeal = _appeal(rng, num_items, num_days, half_life_days, lead_days)
    live = (appeal > 0).sum(axis=1)
    if live.min() <= 2 * window:
        raise ValueError(f"drift log: day {int(live.argmin())} has {int(live.min())} live "
                         f"items, expected more than 2 * window = {2 * window} (raise "
                         "num_items or half_life_days, or lower window)")
    ring, ring_starts, place = _daily_rings(rng, appeal, move_share)
    day = starts_ms // MS_PER_DAY
    num_sessions = len(day)
    lengths = np.minimum(1 + rng.geometric(1.0 / (mean_length - 1), num_sessions),
                         MAX_DRIFT_LENGTH)
    # Revisits fall linearly with the session's start, from repeat_start to repeat_end.
    repeat_rate = repeat_start + (repeat_end - repeat_start) * starts_ms / (num_days * MS_PER_DAY)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    log_appeal = np.log(np.maximum(appeal, np.finfo(np.float64).tiny))
    log_weights = -np.log(np.abs(offsets))  # a neighbour o places away weighs appeal / |o|
    ring_sizes, ring_firsts = np.diff(ring_starts)[day, None], ring_starts[day, None]
    items = np.zeros((num_sessions, MAX_DRIFT_LENGTH), np.int64)
    items[:, 0] = _by_appeal(rng, appeal, day)
    for step in range(1, int(lengths.max())):
        rows = np.flatnonzero(lengths > step)  # sessions still going
        on = day[rows]
        places = (place[on, items[rows, step - 1]][:, None] + offsets) % ring_sizes[rows]
        candidates = ring[ring_firsts[rows] + places]  # [r, 2 * window] neighbours that day
        scores = (log_weights + log_appeal[on[:, None], candidates]
                  + rng.gumbel(size=candidates.shape))  # Gumbel-max: drawn by weight
        neighbour = candidates[np.arange(len(rows)), np.argmax(scores, axis=1)]
        earlier = items[rows, rng.integers(0, step, len(rows))]
        action = rng.random(len(rows))
        items[rows, step] = np.where(action < repeat_rate[rows], earlier,
                                     np.where(action < repeat_rate[rows] + jump_rate,
                                              _by_appeal(rng, appeal, on), neighbour))
    return items, lengths


def write_drift_clicks(path: str, num_sessions: int, num_items: int, num_days: int,
                       mean_length: float, repeat_start: float, repeat_end: float, window: int,
                       jump_rate: float, half_life_days: float, lead_days: float,
                       move_share: float, seed: int = 0) -> str:
    """Writes a deterministic YOOCHOOSE-format log of a shop that changes from day to day to
    `path` (a file or a folder); returns the file's path.

    Items launch over time and lose appeal (`_appeal`); each day's live items sit on a ring
    that is partly rearranged every day (`_daily_rings`). A session's first click is drawn
    by its day's appeal; each later click repeats an earlier click of the session (uniformly)
    with a probability falling linearly from `repeat_start` on the first day to `repeat_end`
    at the end, else with probability `jump_rate` is drawn by the day's appeal, else is a
    neighbour of the previous click within `window` places on the day's ring, weighed by
    appeal / distance.

    Args:
      num_items: items launched (the support filter drops the rarest); num_days: days spanned,
      the last one is the test split; mean_length: mean clicks per session (>= 2; each has 2
      to 30); half_life_days: days an item's appeal takes to halve; lead_days: launches start
      this many days before the log; move_share: share of the items moved each day; seed:
      equal seeds give byte-identical files.
    """
    for name, value in (("repeat_start", repeat_start), ("repeat_end", repeat_end),
                        ("jump_rate", jump_rate), ("move_share", move_share)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if max(repeat_start, repeat_end) + jump_rate > 1:
        raise ValueError(f"repeat_start, repeat_end ({repeat_start}, {repeat_end}) plus "
                         f"jump_rate ({jump_rate}) must be <= 1")
    if mean_length <= 2:
        raise ValueError(f"mean_length must be > 2, got {mean_length}")
    if os.path.isdir(path):
        path = os.path.join(path, CLICKS_FILE)
    rng = np.random.default_rng(seed)
    starts = _session_starts(rng, num_sessions, num_days)
    items, lengths = _drift_sessions(rng, starts, num_items, num_days, mean_length, repeat_start,
                                     repeat_end, window, jump_rate, half_life_days, lead_days,
                                     move_share)
    return _write_sessions(rng, path, items, lengths, num_items, num_days, starts=starts)


def write_preset_clicks(path: str, preset: str, seed: int = 0) -> str:
    """Writes the named log (`PRESETS`, `DRIFT_PRESETS`) to `path` (a file or a folder)."""
    if preset in DRIFT_PRESETS:
        return write_drift_clicks(path, **DRIFT_PRESETS[preset], seed=seed)
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {preset_names()} or empty, got {preset!r}")
    return write_neighbourhood_clicks(path, **PRESETS[preset], seed=seed)


def preset_names() -> list[str]:
    """Every name `--preset` takes."""
    return sorted({*PRESETS, *DRIFT_PRESETS})


def main(argv) -> None:
    del argv
    os.makedirs(FLAGS.out, exist_ok=True)
    if FLAGS.preset:
        path = write_preset_clicks(FLAGS.out, FLAGS.preset, FLAGS.seed)
    else:
        path = write_synthetic_clicks(FLAGS.out, FLAGS.num_sessions, FLAGS.num_items,
                                      FLAGS.num_days, FLAGS.seed)
    print(f"Wrote {path}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", "synthetic_clicks", "Folder to write yoochoose-clicks.dat into.")
    flags.DEFINE_integer("num_sessions", DEFAULT_SESSIONS, "Sessions to generate.")
    flags.DEFINE_integer("num_items", DEFAULT_ITEMS, "Distinct items.")
    flags.DEFINE_integer("num_days", DEFAULT_DAYS, "Days spanned; the last is the test split.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("preset", "", "A named log instead of the default one: "
                        f"{', '.join(preset_names())} (the other size flags are then ignored).")
    FLAGS = flags.FLAGS
    app.run(main)
