"""Built TFDS session-prefix datasets -> numpy splits and tf.data batches, through one handle.

The builders (`tfds_builders/`, schema in `narm_tf/data/examples.py`) write; this module reads
what they wrote and feeds it to training and evaluation:

  Dataset(name, data_dir, input)   the built dataset, its builder looked up once (a dataset
                                   not built there: one line naming what data_dir holds)
    vocabulary, num_items          raw item id of every index 1..N
    statistics, version, sizes     the build's statistics, TFDS version, examples per split
    split(split)                   a split in memory, read once ("train+validation": both)
    batches(split, batch_size)     (item_ids [b, w] int32, label [b] int32) batches, held in
                                   memory or streamed from the record files as `input` says
                                   (auto: `choose_input`, streamed when it would not fit)
    label_counts(split)            each item's occurrences as a label
    with_split(split, prefixes)    the same dataset with one split replaced in memory
  make_dataset(prefixes, ...)      the in-memory engine: any `Prefixes` -> batches
  build_dataset                    programmatic `tfds build`

The two engines (in memory: `make_dataset`; streamed: `_stream_batches`) batch alike: the
same `bucket_widths`, length grouping in pools of `GROUP_POOL` batches, one width cut
(`_cut_to_width`). Each example: `prefix` (item indices 1..N, oldest first, at most MAX_LEN),
`label`, `length` (prefix length before truncation) and `session_id`; the vocabulary and the
statistics are in the dataset's metadata.
"""

from __future__ import annotations

import copy
import functools
import glob
import importlib
import os
import re
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from narm_tf.data import examples
from narm_tf.data.examples import MAX_LEN, Prefixes
from narm_tf.serving import contract

BUILDER_MODULES = (
    "tfds_builders.yoochoose.yoochoose_dataset_builder",
    "tfds_builders.diginetica.diginetica_dataset_builder",
    "tfds_builders.click_log.click_log_dataset_builder",
)
READ_BATCH = 65_536  # Examples parsed per tf.io.parse_example call in Dataset.split.
INPUTS = ("auto", "memory", "stream")  # --input
# Estimated resident bytes per prefix when a split is read whole: the numpy arrays of
# Dataset.split (19 int32 + 3 int64 = 100 B) and make_dataset's tf.constant copy (80 B), ~2x
# headroom.
BYTES_PER_PREFIX = 400
MEMORY_SHARE = 0.5  # `auto` reads in memory while the estimate stays below this share.
SHUFFLE_BUFFER = 262_144  # Serialized examples held by the streamed shuffle (~30 MB).


# -------------------------------------------------------------------------------- read


def register_builders() -> None:
    """Imports the builders so `tfds.builder('yoochoose/yoochoose1_64', data_dir=...)` works.

    `tfds_builders` sits beside `narm_tf` (a clone's root, or site-packages once installed).
    """
    for module in BUILDER_MODULES:
        importlib.import_module(module)


def _prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    register_builders()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as error:  # a config neither named nor built there (TFDS's long list)
        if name in built_datasets(data_dir):
            raise
        raise _not_built(name, data_dir) from error
    if not builder.is_prepared():
        raise _not_built(name, data_dir)
    return builder


def _not_built(name: str, data_dir: str) -> FileNotFoundError:
    """The one-line error for a dataset `data_dir` does not hold: what it holds, how to build."""
    held = built_datasets(data_dir)
    holds = (f"it holds {', '.join(held)}" if held else "it holds no built dataset"
             if os.path.isdir(data_dir) else "that folder does not exist")
    return FileNotFoundError(
        f"Dataset {name} is not built in {data_dir} ({holds}); build it first, e.g. "
        f"`tfds build tfds_builders/{name.split('/')[0]} --manual_dir=... "
        f"--data_dir={data_dir}` or narm_tf.data.dataset.build_dataset(...).")


def built_datasets(data_dir: str) -> list[str]:
    """The datasets built in `data_dir`, as `--dataset` names them (`name/config` or `name`):
    the folders holding a finished version (`1.2.0/dataset_info.json`)."""
    names = set()
    for depth in (2, 3):
        pattern = os.path.join(glob.escape(data_dir), *["*"] * depth, "dataset_info.json")
        for info in glob.glob(pattern):
            *parts, version = os.path.relpath(os.path.dirname(info), data_dir).split(os.sep)
            if re.fullmatch(r"\d+\.\d+\.\d+", version) and parts[0] != "downloads":
                names.add("/".join(parts))
    return sorted(names)


def _parse_batch(serialized: tf.Tensor) -> dict:
    """A batch of records -> {feature: [b]}, `prefix` dense `[b, MAX_LEN]` int32 padded with 0."""
    features = tf.io.parse_example(serialized, examples.parse_spec())
    features["prefix"] = tf.cast(features["prefix"].to_tensor(0, shape=[None, MAX_LEN]), tf.int32)
    return features


def _read_records(files: list[str]) -> Prefixes:
    """Record files -> dense arrays, in the order written: prefixes `[n, MAX_LEN]` int32
    right-padded with 0, labels/lengths/session_ids `[n]` int64."""
    # Batched parse_example over the raw TFRecords: ~50x faster than per-example decoding.
    dataset = (tf.data.TFRecordDataset(files).batch(READ_BATCH)
               .map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    parts = {feature.name: [] for feature in examples.SCHEMA}
    for batch in dataset.as_numpy_iterator():
        for key, value in batch.items():
            parts[key].append(value)
    if not parts["label"]:
        return Prefixes.empty()
    return examples.from_columns({key: np.concatenate(value) for key, value in parts.items()})


class Dataset:
    """A built dataset, its TFDS builder looked up once (FileNotFoundError in one line if
    `data_dir` does not hold it): what it holds, and batches of a split.

    Args:
      name: 'yoochoose/yoochoose1_64', 'diginetica', 'click_log/<config>', ... (`--dataset`).
      data_dir: the TFDS data dir the dataset was built into.
      input: where `batches` reads a split from (`--input`): 'memory' (the split read once,
        then batched from memory), 'stream' (batch by batch from the record files) or 'auto'
        (`choose_input`: stream when all splits would not fit in memory).
    A split is 'train', 'validation' or 'test'; "train+validation" joins two, in that order.
    """

    def __init__(self, name: str, data_dir: str, input: str = "auto"):
        if input not in INPUTS:
            raise ValueError(f"--input must be auto, memory or stream, got {input!r}")
        self.name, self.data_dir, self.setting = name, data_dir, input
        self.info = _prepared_builder(name, data_dir).info
        self._read = {}  # split -> Prefixes read from its files (shared by with_split copies)
        self._given = {}  # split -> Prefixes that replace it (with_split)

    @functools.cached_property
    def vocabulary(self) -> np.ndarray:
        """Raw item id of every vocabulary index, index i (1..N) -> vocabulary[i - 1]: [N]
        int64 for an integer catalogue, else [N] object array of the log's own strings (SKUs,
        zero-padded numbers kept as written; see `contract.vocabulary_array`). Index 0 is
        padding and has no raw id. Exports use this to speak raw item ids."""
        return contract.vocabulary_array(self.info.metadata["vocabulary"])

    @property
    def num_items(self) -> int:
        """N, the vocabulary size (indices 1..N; 0 is padding)."""
        return len(self.vocabulary)

    @property
    def version(self) -> str:
        """The built dataset's TFDS version, e.g. '2.1.0' (part of a training run's identity)."""
        return str(self.info.version)

    @property
    def statistics(self) -> dict:
        """The build's statistics (`narm_tf.data.rules.statistics`): clicks, duplicate_clicks,
        train/test sessions, vocabulary_size, train_prefixes (before the validation hold-out),
        train_items, kept_train_sessions, validation sessions and prefixes, test_prefixes,
        average_length, split_date, fraction, first_click, last_click."""
        return dict(self.info.metadata["statistics"])

    @property
    def sizes(self) -> dict:
        """Examples per built split from the TFDS info, without reading the records."""
        splits = self.info.splits
        return {split: splits[split].num_examples for split in splits.keys()}

    @functools.cached_property
    def input(self) -> str:
        """'memory' or 'stream': `input` resolved (auto: `choose_input` on all splits)."""
        return choose_input(self.setting, sum(self.sizes.values()))

    def files(self, split: str) -> list[str]:
        """The record files of a split ("a+b": a's, then b's)."""
        return [os.fspath(path) for part in split.split("+")
                for path in self.info.splits[part].filepaths]

    def split(self, split: str) -> Prefixes:
        """A split in memory, in the order it was written (date order); each part read from
        its files once and kept (or the prefixes `with_split` gave it)."""
        parts = [self._given[part] if part in self._given else self._read_part(part)
                 for part in split.split("+")]
        return parts[0] if len(parts) == 1 else Prefixes.concatenate(*parts)

    def _read_part(self, part: str) -> Prefixes:
        if part not in self._read:
            self._read[part] = _read_records(self.files(part))
        return self._read[part]

    def with_split(self, split: str, prefixes: Prefixes) -> Dataset:
        """This dataset with `split` replaced by `prefixes`, held in memory whatever `input`
        says (e.g. the validation a warm start keeps); the other splits are shared."""
        other = copy.copy(self)
        other._given = {**self._given, split: prefixes}
        return other

    def _streams(self, split: str) -> bool:
        """Whether `split` is read from its files batch by batch (none of it given)."""
        return self.input == "stream" and not any(part in self._given
                                                  for part in split.split("+"))

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                repeat: bool = False, length_buckets=None, shuffle_buffer: int = SHUFFLE_BUFFER,
                input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Batches of (item_ids [b, w] int32 right-padded, label [b] int32) of a split: from
        memory (`make_dataset`) or streamed (`_stream_batches`) as `input` says; the same
        batches either way, but for the order of a shuffle (the streamed one is bounded by
        `shuffle_buffer`). A finite dataset has a new seeded order each time Keras iterates it;
        `repeat` gives endless epochs seeded by (seed, epoch).

        input_context: under a multi-worker strategy, this pipeline's shard (streamed only:
        open the dataset with input='stream').
        """
        options = dict(shuffle=shuffle, seed=seed, repeat=repeat, length_buckets=length_buckets)
        if self._streams(split):
            return _stream_batches(self.files(split), sum(self.sizes[part] for part in
                                                          split.split("+")),
                                   batch_size, shuffle_buffer=shuffle_buffer,
                                   input_context=input_context, **options)
        if input_context is not None and input_context.num_input_pipelines > 1:
            raise ValueError(f"{self.name}: multi-worker input is streamed; open the dataset "
                             f"with input='stream', not {self.input!r}")
        return make_dataset(self.split(split), batch_size, **options)

    def label_counts(self, split: str) -> np.ndarray:
        """Occurrences of each item 1..N as a label in a split: `[N]` int64, counted in memory
        or over the streamed records as `input` says."""
        counts = np.zeros(self.num_items + 1, np.int64)
        if not self._streams(split):
            counts += np.bincount(self.split(split).labels, minlength=self.num_items + 1)
            return counts[1:]
        for batch in (tf.data.TFRecordDataset(self.files(split)).batch(READ_BATCH)
                      .map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
                      .as_numpy_iterator()):
            counts += np.bincount(batch["label"], minlength=self.num_items + 1)
        return counts[1:]


# -------------------------------------------------------------------------------- feed


GROUP_POOL = 64  # Batches whose examples are sorted together when grouping by length.
# Batch widths when grouping by length (19 implied last): ~1.2x the real clicks on uniform
# lengths 1..19, against 1.9x for fixed 19-wide batches; 8 widths, 8 XLA compilations.
DEFAULT_LENGTH_BUCKETS = (2, 3, 4, 6, 8, 11, 15)


def make_dataset(prefixes: Prefixes, batch_size: int, shuffle: bool = False, seed: int = 0,
                 repeat: bool = False, length_buckets=None) -> tf.data.Dataset:
    """In-memory prefixes -> batches of (item_ids [b, w] int32 right-padded, label [b] int32):
    the memory engine of `Dataset.batches`, for any `Prefixes`.

    Batches row indices (a reshuffle each epoch when `shuffle`) and gathers whole batches, so the
    per-example tf.data overhead is avoided. The last partial batch is kept.

    Without `length_buckets`, every batch is `[b, 19]`. With them (ascending widths, e.g.
    `(2, 4, 8, 12)`; 19 is implied last), each batch holds prefixes of similar lengths and is cut
    to the smallest bucket width that holds its longest prefix: the GRU then runs over fewer
    padded steps (the model's outputs do not depend on the padding). Examples are sorted by
    length within pools of `GROUP_POOL` batches of the (shuffled) order, and the batches are
    then shuffled, so each epoch still visits every example once in a new order. Few distinct
    widths keep the number of XLA compilations small.
    """
    if len(prefixes) and not (prefixes.prefixes[:, 0] > 0).all():
        raise ValueError("every prefix must hold at least one item (prefixes[:, 0] > 0)")
    items = tf.constant(prefixes.prefixes.astype(np.int32))
    labels = tf.constant(prefixes.labels.astype(np.int32))
    n = len(prefixes)
    widths = bucket_widths(length_buckets, items.shape[1])

    if widths is not None:
        lengths = tf.constant(np.count_nonzero(prefixes.prefixes, axis=1).astype(np.int32))
        if repeat:
            dataset = tf.data.Dataset.range(sys.maxsize).flat_map(
                lambda epoch: _grouped_batches(lengths, batch_size, shuffle,
                                               tf.stack([tf.constant(seed, tf.int64), epoch])))
        else:
            # A new seed each time Keras re-iterates the dataset (each epoch), reproducibly.
            dataset = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
            dataset = dataset.flat_map(
                lambda draw: _grouped_batches(lengths, batch_size, shuffle,
                                              tf.stack([tf.constant(seed, tf.int64), draw])))
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(
                -(-n // batch_size)))
    elif repeat:
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

    def gather(index):
        batch = tf.gather(items, index)
        if widths is not None:
            batch = _cut_to_width(batch, widths)
        return batch, tf.gather(labels, index)

    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def bucket_widths(length_buckets, max_len: int = MAX_LEN) -> tf.Tensor | None:
    """`examples.bucket_widths` (the checked widths, `max_len` last) as an int32 tensor."""
    widths = examples.bucket_widths(length_buckets, max_len)
    return None if widths is None else tf.constant(widths, tf.int32)


def _cut_to_width(batch: tf.Tensor, widths: tf.Tensor) -> tf.Tensor:
    """A batch `[b, MAX_LEN]` cut to the smallest bucket width holding its longest prefix (both
    engines cut here: their batches of the same examples are the same tensors)."""
    longest = tf.reduce_max(tf.math.count_nonzero(batch, axis=1, dtype=tf.int32))
    width = tf.gather(widths, tf.searchsorted(widths, longest[None])[0])
    return batch[:, :width]


def _grouped_batches(lengths: tf.Tensor, batch_size: int, shuffle: bool,
                     seed: tf.Tensor) -> tf.data.Dataset:
    """One epoch of index batches `[b]` (int64), each of similar prefix lengths.

    Shuffled (stateless, `seed`) when `shuffle`; the pools of `GROUP_POOL` batches are sorted
    by length (stable); full batches are then shuffled and the partial one, if any, comes last.
    """
    n = lengths.shape[0]
    indices = tf.range(n, dtype=tf.int64)
    if shuffle:
        indices = tf.random.experimental.stateless_shuffle(indices, seed=seed)
    pool = tf.range(n, dtype=tf.int64) // (batch_size * GROUP_POOL)
    key = pool * 1024 + tf.cast(tf.gather(lengths, indices), tf.int64)  # lengths <= 19
    indices = tf.gather(indices, tf.argsort(key, stable=True))
    full = n // batch_size
    batches = tf.reshape(indices[: full * batch_size], [full, batch_size])
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(full, dtype=tf.int64), seed=seed + tf.constant([0, 1 << 32], tf.int64))
        batches = tf.gather(batches, order)
    dataset = tf.data.Dataset.from_tensor_slices(batches)
    if n % batch_size:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(indices[full * batch_size:]))
    return dataset


# ------------------------------------------------------------------------------ stream


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_input(setting: str, num_examples: int, memory: int | None = None) -> str:
    """`--input`: 'memory', 'stream', or for 'auto' the rule: stream when `num_examples` (all the
    splits', from the TFDS info) x BYTES_PER_PREFIX exceed MEMORY_SHARE of the available
    memory (`memory` bytes; default: `available_memory()` now)."""
    if setting in ("memory", "stream"):
        return setting
    if setting != "auto":
        raise ValueError(f"--input must be auto, memory or stream, got {setting!r}")
    needed = num_examples * BYTES_PER_PREFIX
    return "stream" if needed > MEMORY_SHARE * (memory or available_memory()) else "memory"


def _stream_batches(files: list[str], num_examples: int, batch_size: int,
                    shuffle: bool = False, seed: int = 0, repeat: bool = False,
                    length_buckets=None, shuffle_buffer: int = SHUFFLE_BUFFER,
                    input_context: tf.distribute.InputContext | None = None
                    ) -> tf.data.Dataset:
    """Record files (`num_examples` in all) -> batches of (item_ids [b, w] int32, label [b]
    int32), as make_dataset gives them, without holding the split in memory: the streamed
    engine of `Dataset.batches`.

    Records are parsed a batch at a time (`tf.io.parse_example`). With `shuffle`, the file
    order is permuted and the records are permuted within blocks of `shuffle_buffer` (bounded
    memory; the order is local, not a full permutation), by stateless shuffles seeded by
    (seed, pass): a new order each epoch, the same on every worker and after a resume. Without
    `length_buckets` every batch is `[b, 19]`; with them, each pool of `GROUP_POOL` batches is
    sorted by length, cut into batches, each cut to its bucket width (the full batches of a pool
    shuffled, a partial batch last), as make_dataset does. Shuffle off: make_dataset's batches.

    input_context: under a multi-worker strategy, this input pipeline keeps every k-th record
    of the (shuffled) stream, k = the number of pipelines: sharding by data, after a shuffle
    seeded alike on every worker, so the workers' batches of a step together hold what one
    reader's global batch would. Every worker reads all the files (parses only its share).
    """
    widths = bucket_widths(length_buckets)
    shards = input_context.num_input_pipelines if input_context else 1

    def one_pass(draw: tf.Tensor) -> tf.data.Dataset:
        """One pass over the split, its shuffles seeded by (seed, draw) only."""
        def seed_of(index):
            return tf.stack([tf.constant(seed, tf.int64), draw * 1_000_003 + index])

        names = tf.constant(files)
        if shuffle:
            names = tf.gather(names, tf.random.experimental.stateless_shuffle(
                tf.range(len(files)), seed=seed_of(0)))
        records = tf.data.Dataset.from_tensor_slices(names).interleave(
            tf.data.TFRecordDataset, cycle_length=4 if shuffle else 1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:  # a bounded shuffle: permute each block of `shuffle_buffer` records
            records = records.batch(shuffle_buffer).enumerate(1).map(
                lambda i, block: tf.random.experimental.stateless_shuffle(
                    block, seed=seed_of(i))).unbatch()
        if shards > 1:
            records = records.shard(shards, input_context.input_pipeline_id)
        pool = batch_size * (GROUP_POOL if widths is not None else 1)
        dataset = records.batch(pool).map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True)
        if widths is None:
            return dataset.map(lambda f: (f["prefix"], tf.cast(f["label"], tf.int32)))
        return dataset.enumerate(1 << 40).flat_map(
            lambda i, f: _pool_batches(f, batch_size, shuffle, widths, seed_of(i)))

    if repeat:
        # Pass e is seeded by (seed, e): a new iterator (Keras makes more than one), another
        # worker or a resumed run replays the same passes.
        dataset = tf.data.Dataset.range(sys.maxsize).flat_map(one_pass)
    else:  # Keras re-iterates a finite dataset each epoch: a new seeded draw each time.
        dataset = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        dataset = dataset.flat_map(one_pass)
        if shards == 1:
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(
                -(-num_examples // batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _pool_batches(features: dict, batch_size: int, shuffle: bool, widths: tf.Tensor,
                  seed: tf.Tensor) -> tf.data.Dataset:
    """A parsed pool (at most GROUP_POOL batches) -> its batches of similar lengths, each cut
    to its bucket width: make_dataset's grouping applied to one pool."""
    items = features["prefix"]
    lengths = tf.math.count_nonzero(items, axis=1, dtype=tf.int32)
    order = tf.argsort(lengths, stable=True)
    items, labels = tf.gather(items, order), tf.gather(tf.cast(features["label"], tf.int32), order)
    n = tf.shape(labels)[0]
    full = n // batch_size
    starts = tf.range(full, dtype=tf.int32) * batch_size
    if shuffle:
        starts = tf.random.experimental.stateless_shuffle(starts, seed=seed)
    starts = tf.concat([starts, tf.fill([tf.minimum(n % batch_size, 1)], full * batch_size)], 0)

    def cut(start):
        return (_cut_to_width(items[start:start + batch_size], widths),
                labels[start:start + batch_size])

    return tf.data.Dataset.from_tensor_slices(starts).map(cut)


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
