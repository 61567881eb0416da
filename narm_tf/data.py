"""TFDS session-prefix splits -> padded tf.data batches; the example format; vocabulary access.

One module owns the on-disk example format, so what the builders write and what training reads
cannot drift apart:
  write  example_features / generate_examples / split_generators  (used by tfds_builders/*)
  read   load_split / load_vocabulary / load_statistics            (a built dataset -> numpy)
  feed   make_dataset                                              (numpy -> tf.data batches)
  build  build_dataset                                             (programmatic `tfds build`)

Each example: `prefix` (item indices 1..N, oldest first, at most MAX_LEN), `label`, `length`
(prefix length before truncation) and `session_id`. The vocabulary (raw item id of every index)
and the statistics (SPEC section 1 table columns) live in the dataset's `metadata.json`, written
inside TFDS's incomplete dir, so they appear atomically with the splits.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from narm_tf import preprocessing
from narm_tf.preprocessing import MAX_LEN, Prefixes

BUILDER_MODULES = (
    "tfds_builders.yoochoose.yoochoose_dataset_builder",
    "tfds_builders.diginetica.diginetica_dataset_builder",
)
SPLITS = ("train", "validation", "test")
READ_BATCH = 65_536  # Examples parsed per tf.io.parse_example call in load_split.


# ------------------------------------------------------------------------------- write


def example_features() -> tfds.features.FeaturesDict:
    """The feature spec of one session-prefix example (shared by all builders)."""
    return tfds.features.FeaturesDict({
        "prefix": tfds.features.Sequence(np.int64),
        "label": np.int64,
        "length": np.int64,
        "session_id": np.int64,
    })


def info_arguments() -> dict:
    """DatasetInfo arguments every session-prefix builder shares: features, metadata, order."""
    return {
        "features": example_features(),
        "supervised_keys": ("prefix", "label"),
        "metadata": tfds.core.MetadataDict(),  # vocabulary + statistics, see split_generators
        "disable_shuffling": True,  # Keep the date order of the prefixes.
    }


def generate_examples(prefixes: Prefixes) -> Iterator[tuple[int, dict]]:
    """Yields (key, example) in the split's order; keys are positions (shuffling is disabled)."""
    rows = prefixes.prefixes.astype(np.int64)
    kept = np.minimum(prefixes.lengths, MAX_LEN)
    labels, lengths, session_ids = (prefixes.labels.tolist(), prefixes.lengths.tolist(),
                                    prefixes.session_ids.tolist())
    for i, (row, n) in enumerate(zip(rows, kept.tolist(), strict=True)):
        yield i, {"prefix": row[:n], "label": labels[i], "length": lengths[i],
                  "session_id": session_ids[i]}


def split_generators(result: preprocessing.Preprocessed, info: tfds.core.DatasetInfo,
                     generate=generate_examples) -> dict:
    """Stores vocabulary + statistics in `info.metadata`; returns `generate(split)` per split."""
    info.metadata["vocabulary"] = [int(v) for v in result.vocabulary]
    info.metadata["statistics"] = dict(result.statistics)
    return {"train": generate(result.train), "validation": generate(result.validation),
            "test": generate(result.test)}


def manual_file(dl_manager, filename: str, instructions: str):
    """Path of `filename` in the manual dir, or FileNotFoundError naming the exact expected path."""
    # TFDS raises a generic AssertionError for a missing or empty manual dir; name the file.
    manual_dir = getattr(dl_manager, "_manual_dir", None)
    path = None if manual_dir is None else manual_dir / filename
    if path is None or not path.exists():
        raise FileNotFoundError(
            f"Raw click file not found: expected {path if path else filename} "
            f"(set --manual_dir to the folder holding {filename}).\n{instructions}")
    return path


def format_statistics(name: str, statistics: dict) -> str:
    """A readable table of the dataset statistics (printed at the end of a build)."""
    lines = [f"Statistics of {name}:"]
    lines += [f"  {key:<20} {value:,}" if isinstance(value, int) else
              f"  {key:<20} {value:.4f}" if isinstance(value, float) else
              f"  {key:<20} {value}" for key, value in statistics.items()]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- read


def register_builders() -> None:
    """Imports the builders so `tfds.builder('yoochoose/yoochoose1_64', data_dir=...)` works."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.append(root)
    for module in BUILDER_MODULES:
        importlib.import_module(module)


def _prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    register_builders()
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"Dataset {name} is not built in {data_dir}; build it first, e.g. "
            f"`tfds build tfds_builders/{name.split('/')[0]} --manual_dir=... "
            f"--data_dir={data_dir}` or narm_tf.data.build_dataset(...).")
    return builder


def _parse_batch(serialized: tf.Tensor) -> dict:
    spec = {"prefix": tf.io.RaggedFeature(tf.int64),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "length": tf.io.FixedLenFeature([], tf.int64),
            "session_id": tf.io.FixedLenFeature([], tf.int64)}
    features = tf.io.parse_example(serialized, spec)
    features["prefix"] = tf.cast(features["prefix"].to_tensor(0, shape=[None, MAX_LEN]), tf.int32)
    return features


def load_split(name: str, split: str, data_dir: str) -> Prefixes:
    """Reads a built split once into dense arrays, in the order it was written (date order).

    Args:
      name: 'yoochoose/yoochoose1_64', 'yoochoose/yoochoose1_4', 'yoochoose/yoochoose_full'
        or 'diginetica'.
      split: 'train', 'validation' or 'test'.
      data_dir: the TFDS data dir the dataset was built into.
    Returns:
      Prefixes: prefixes [n, 19] int32 right-padded with 0, labels/lengths/session_ids [n] int64.
    """
    builder = _prepared_builder(name, data_dir)
    files = [os.fspath(path) for path in builder.info.splits[split].filepaths]
    # Batched parse_example over the raw TFRecords: ~50x faster than per-example decoding.
    dataset = (tf.data.TFRecordDataset(files).batch(READ_BATCH)
               .map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    parts = {key: [] for key in ("prefix", "label", "length", "session_id")}
    for batch in dataset.as_numpy_iterator():
        for key, value in batch.items():
            parts[key].append(value)
    if not parts["label"]:
        return Prefixes(np.zeros([0, MAX_LEN], np.int32), *(np.zeros([0], np.int64),) * 3)
    return Prefixes(*(np.concatenate(parts[key]) for key in
                      ("prefix", "label", "length", "session_id")))


def load_vocabulary(name: str, data_dir: str) -> np.ndarray:
    """Raw item id of every vocabulary index: [N] int64, index i (1..N) -> vocabulary[i - 1].

    Index 0 is padding and has no raw id. Exports use this to speak raw item ids.
    """
    metadata = _prepared_builder(name, data_dir).info.metadata
    return np.asarray(metadata["vocabulary"], np.int64)


def load_statistics(name: str, data_dir: str) -> dict:
    """The build's statistics: clicks, train/test sessions, vocabulary_size, train_prefixes
    (before the validation hold-out), train_items (items in the fraction), validation_prefixes,
    test_prefixes, average_length, split_date, fraction."""
    return dict(_prepared_builder(name, data_dir).info.metadata["statistics"])


# -------------------------------------------------------------------------------- feed


def make_dataset(prefixes: Prefixes, batch_size: int, shuffle: bool = False, seed: int = 0,
                 repeat: bool = False) -> tf.data.Dataset:
    """In-memory prefixes -> batches of (item_ids [b, 19] int32 right-padded, label [b] int32).

    Batches row indices (a reshuffle each epoch when `shuffle`) and gathers whole batches, so the
    per-example tf.data overhead is avoided. The last partial batch is kept.
    """
    if len(prefixes) and not (prefixes.prefixes[:, 0] > 0).all():
        raise ValueError("every prefix must hold at least one item (prefixes[:, 0] > 0)")
    items = tf.constant(prefixes.prefixes.astype(np.int32))
    labels = tf.constant(prefixes.labels.astype(np.int32))
    n = len(prefixes)

    if repeat:
        # One stateless shuffle per epoch number: reproducible wherever the stream is resumed.
        def epoch_indices(epoch):
            indices = tf.range(n, dtype=tf.int64)
            if shuffle:
                indices = tf.random.experimental.stateless_shuffle(
                    indices, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            return tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)

        dataset = tf.data.Dataset.range(sys.maxsize).flat_map(epoch_indices)
    else:
        # Keras re-iterates a finite dataset each epoch: reshuffle_each_iteration gives each
        # epoch a new (seeded) order, and the known cardinality lets Keras count the steps.
        dataset = tf.data.Dataset.range(n)
        if shuffle:
            dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda index: (tf.gather(items, index), tf.gather(labels, index)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------- build


def build_dataset(name: str, manual_dir: str, data_dir: str, config: str | None = None) -> None:
    """Builds a dataset like `tfds build` does and prints its statistics.

    Args:
      name: 'yoochoose' or 'diginetica' (or 'yoochoose/<config>').
      manual_dir: folder holding the raw click file.
      data_dir: TFDS data dir to build into.
      config: builder config, e.g. 'yoochoose_full'; default: the builder's default.
    """
    register_builders()
    full_name = f"{name}/{config}" if config else name
    builder = tfds.builder(full_name, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
