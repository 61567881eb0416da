"""Synthetic session prefixes at catalogue scale (up to millions of items), made
directly as `Prefixes` arrays: no click file, no TFDS build.

The same generative story as `narm_tf.synthetic`, vectorized: items fall into latent intents of
about `ITEMS_PER_INTENT` items; within an intent, popularity is Zipf-like (so the catalogue's
label counts are long-tailed); every item has one preferred successor in its intent. A session
picks an intent, starts on a popular item of it, then at each click follows the previous item's
successor (`SUCCESSOR_SHARE`), repeats an earlier click (`REPEAT_SHARE`) or jumps to a popular
item of the intent. Sessions of 2-20 clicks yield prefixes ([x1..x_{i-1}], x_i).
"""

from __future__ import annotations

import numpy as np

from narm_tf.data.examples import MAX_LEN, Prefixes

ITEMS_PER_INTENT = 1000
SUCCESSOR_SHARE = 0.5
REPEAT_SHARE = 0.1
ZIPF_EXPONENT = 1.1


def make_splits(num_items: int, train_sessions: int, test_sessions: int,
                seed: int = 0) -> tuple[Prefixes, Prefixes]:
    """(train, test) prefixes over items 1..num_items from independent sessions of one
    catalogue (the same intents, popularity and successors)."""
    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng, num_items)
    train = _prefixes(*_sessions(rng, catalogue, train_sessions))
    test = _prefixes(*_sessions(rng, catalogue, test_sessions))
    return train, test


def _catalogue(rng, num_items: int) -> dict:
    """Intent members `[intents, size]` (items 1..N, most popular first), the within-intent
    Zipf cdf `[size]` and every item's preferred successor `[N + 1]`."""
    if num_items < 2:
        raise ValueError(f"num_items must be >= 2, got {num_items}")
    intents = max(1, num_items // ITEMS_PER_INTENT)
    size = num_items // intents
    members = (rng.permutation(num_items)[:intents * size] + 1).reshape(intents, size)
    weights = 1.0 / np.arange(1, size + 1) ** ZIPF_EXPONENT
    cdf = np.cumsum(weights / weights.sum())
    successor = np.zeros(num_items + 1, np.int64)
    successor[members] = members[np.arange(intents)[:, None], rng.integers(0, size, members.shape)]
    intent_weights = 1.0 / np.arange(1, intents + 1) ** 0.5
    return {"members": members, "cdf": cdf, "successor": successor,
            "intent_cdf": np.cumsum(intent_weights / intent_weights.sum())}


def _popular(rng, catalogue: dict, intents: np.ndarray) -> np.ndarray:
    """One item per session `[s]`, by Zipf popularity within its intent."""
    rank = np.minimum(np.searchsorted(catalogue["cdf"], rng.random(len(intents))),
                      catalogue["members"].shape[1] - 1)
    return catalogue["members"][intents, rank]


def _sessions(rng, catalogue: dict, num_sessions: int):
    """Items `[s, MAX_LEN + 1]` (0 after the end) and lengths `[s]` in 2..MAX_LEN + 1."""
    width = MAX_LEN + 1
    intents = np.minimum(np.searchsorted(catalogue["intent_cdf"], rng.random(num_sessions)),
                         catalogue["members"].shape[0] - 1)
    lengths = np.minimum(1 + rng.geometric(0.25, num_sessions), width)
    items = np.zeros((num_sessions, width), np.int64)
    items[:, 0] = _popular(rng, catalogue, intents)
    rows = np.arange(num_sessions)
    for step in range(1, width):
        action = rng.random(num_sessions)
        follow = catalogue["successor"][items[:, step - 1]]
        repeat = items[rows, rng.integers(0, step, num_sessions)]
        jump = _popular(rng, catalogue, intents)
        items[:, step] = np.where(action < SUCCESSOR_SHARE, follow,
                                  np.where(action < SUCCESSOR_SHARE + REPEAT_SHARE, repeat, jump))
    items[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return items, lengths


def _prefixes(items: np.ndarray, lengths: np.ndarray) -> Prefixes:
    """Every prefix of every session: prefixes `[n, MAX_LEN]` right-padded, labels `[n]`."""
    parts, labels, prefix_lengths, sessions = [], [], [], []
    for i in range(1, items.shape[1]):
        rows = np.flatnonzero(lengths > i)
        block = np.zeros((len(rows), MAX_LEN), np.int32)
        block[:, :i] = items[rows, :i]
        parts.append(block)
        labels.append(items[rows, i])
        prefix_lengths.append(np.full(len(rows), i))
        sessions.append(rows)
    return Prefixes(np.concatenate(parts), *(np.concatenate(x).astype(np.int64)
                                             for x in (labels, prefix_lengths, sessions)))
