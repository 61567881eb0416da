"""The session-prefix example: what the builders write and every reader reads.

One schema (`SCHEMA`, plain data) from which the TFDS features of the builders
(`tfds_features`, in `tfds_builders/session_prefixes.py`), the records the in-memory and Beam
paths emit (`as_examples`) and the parse spec of `narm_tf.data.dataset` (`parse_spec`) are all
derived. Also the types the stages share: `MAX_LEN` and `Prefixes` (examples as dense arrays).

Numpy only: serving and training import this without pandas or pyarrow; TensorFlow and TFDS are
imported by the functions that need them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

MAX_LEN = 19  # BPTT truncation of the paper: a prefix keeps its most recent 19 clicks.


def bucket_widths(length_buckets, max_len: int = MAX_LEN) -> list[int] | None:
    """`length_buckets` (ascending widths in 1..max_len; None or empty: no grouping) -> the
    widths with `max_len` last, or ValueError naming the bad value. Numpy only, as this module
    is: `narm_tf.config` checks the `--length_buckets` setting without TensorFlow."""
    if not length_buckets:
        return None
    try:
        widths = [int(width) for width in length_buckets]
    except ValueError:
        widths = []
    if not widths or widths != sorted(set(widths)) or widths[0] < 1 or widths[-1] > max_len:
        raise ValueError(f"length buckets must be ascending distinct widths in 1..{max_len}, "
                         f"got {list(length_buckets)}")
    if widths[-1] != max_len:
        widths.append(max_len)
    return widths


@dataclasses.dataclass(frozen=True)
class Feature:
    """One feature of an example record: an int64, or a list of int64 (`sequence`)."""

    name: str  # in the record
    field: str  # the `Prefixes` field holding it
    sequence: bool  # a variable-length list (at most MAX_LEN), else one integer
    meaning: str


SCHEMA = (
    Feature("prefix", "prefixes", True, "item indices 1..N, oldest first, the last MAX_LEN"),
    Feature("label", "labels", False, "the item clicked next (index 1..N)"),
    Feature("length", "lengths", False, "the prefix length before truncation"),
    Feature("session_id", "session_ids", False, "the session's id in the log (int64)"),
)
SUPERVISED_KEYS = ("prefix", "label")  # TFDS's (input, target)


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

    @staticmethod
    def concatenate(*parts: Prefixes) -> Prefixes:
        """The examples of `parts`, one after another."""
        return Prefixes(*(np.concatenate([getattr(part, field.name) for part in parts])
                          for field in dataclasses.fields(Prefixes)))

    @staticmethod
    def empty(max_len: int = MAX_LEN) -> Prefixes:
        """No example: prefixes `[0, max_len]` int32, the rest `[0]` int64."""
        return Prefixes(np.zeros([0, max_len], np.int32), *(np.zeros([0], np.int64),) * 3)


def as_examples(prefixes: Prefixes) -> Iterator[dict]:
    """Each example as the record a builder writes, in order: `prefix` cut to the clicks it
    keeps (at most the rules' max_len, the padded width), the rest as integers."""
    rows = prefixes.prefixes.astype(np.int64)
    kept = np.minimum(prefixes.lengths, prefixes.prefixes.shape[1]).tolist()
    labels, lengths, session_ids = (prefixes.labels.tolist(), prefixes.lengths.tolist(),
                                    prefixes.session_ids.tolist())
    for i, row in enumerate(rows):
        yield {"prefix": row[:kept[i]], "label": labels[i], "length": lengths[i],
               "session_id": session_ids[i]}


def tfds_features():
    """The schema as TFDS features (`tfds.features.FeaturesDict`), for the builders' info."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        feature.name: tfds.features.Sequence(np.int64) if feature.sequence else np.int64
        for feature in SCHEMA})


def parse_spec() -> dict:
    """The schema as a `tf.io.parse_example` spec of the records TFDS writes from
    `tfds_features` (a sequence: one int64 list; else one int64)."""
    import tensorflow as tf

    return {feature.name: tf.io.RaggedFeature(tf.int64) if feature.sequence
            else tf.io.FixedLenFeature([], tf.int64) for feature in SCHEMA}


def from_columns(columns: dict) -> Prefixes:
    """{feature name: array} (the prefix padded to `[n, MAX_LEN]`) -> `Prefixes`."""
    return Prefixes(**{feature.field: columns[feature.name] for feature in SCHEMA})
