"""narm_tf.data.dataset: a built dataset's handle reads back exactly what was preprocessed; its
batches, in memory or streamed, are the same examples cut alike."""


import numpy as np
import pytest

from narm_tf import synthetic
from narm_tf.data import dataset as data
from narm_tf.data.clicks import read_yoochoose_clicks
from narm_tf.data.examples import Prefixes
from narm_tf.data.rules import preprocess

NAME = "yoochoose/yoochoose_full"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(data_dir, Preprocessed) of a small synthetic yoochoose_full build."""
    manual = tmp_path_factory.mktemp("manual")
    path = synthetic.write_synthetic_clicks(str(manual), num_sessions=600, num_items=120)
    out = tmp_path_factory.mktemp("tfds")
    data.build_dataset("yoochoose", str(manual), str(out), config="yoochoose_full")
    expected = preprocess(read_yoochoose_clicks(path), 1, 1, seed=0)
    return str(out), expected


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_a_split_reads_back_in_written_order(built, split):
    data_dir, expected = built
    loaded = data.Dataset(NAME, data_dir).split(split)
    want = getattr(expected, split)
    assert loaded.prefixes.dtype == np.int32 and loaded.prefixes.shape == (len(want), 19)
    np.testing.assert_array_equal(loaded.prefixes, want.prefixes)
    np.testing.assert_array_equal(loaded.labels, want.labels)
    np.testing.assert_array_equal(loaded.lengths, want.lengths)
    np.testing.assert_array_equal(loaded.session_ids, want.session_ids)


def test_vocabulary_statistics_version_and_sizes(built):
    data_dir, expected = built
    dataset = data.Dataset(NAME, data_dir)
    assert dataset.vocabulary.dtype == np.int64
    np.testing.assert_array_equal(dataset.vocabulary, expected.vocabulary)
    assert dataset.num_items == len(expected.vocabulary)
    assert dataset.statistics == expected.statistics
    assert dataset.version == "2.1.0"
    assert dataset.sizes == {split: len(getattr(expected, split))
                             for split in ("train", "validation", "test")}


def test_a_split_is_read_once_and_joined_splits_follow_each_other(built):
    data_dir, expected = built
    dataset = data.Dataset(NAME, data_dir)
    assert dataset.split("validation") is dataset.split("validation")
    both = dataset.split("train+validation")
    np.testing.assert_array_equal(both.labels, np.concatenate([expected.train.labels,
                                                               expected.validation.labels]))
    assert dataset.files("train+validation") == dataset.files("train") + \
        dataset.files("validation")


def test_loading_an_unbuilt_dataset_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not built in"):
        data.Dataset("diginetica", str(tmp_path))


@pytest.mark.parametrize("name", ["click_log/x", "yoochoose/yoochoose1_4"])
def test_a_dataset_not_built_names_the_data_dir_and_what_it_holds(built, tmp_path, name):
    """A config TFDS does not know (a click log's own) fails as a named one does: one line
    naming the data_dir and the datasets built there, not TFDS's list of close matches."""
    data_dir, _ = built
    with pytest.raises(FileNotFoundError) as error:
        data.Dataset(name, data_dir)
    message = str(error.value)
    assert message.startswith(f"Dataset {name} is not built in {data_dir} (it holds {NAME}); ")
    assert "\n" not in message and "closely match" not in message
    assert f"tfds build tfds_builders/{name.split('/')[0]} " in message
    with pytest.raises(FileNotFoundError, match=r"\(it holds no built dataset\)"):
        data.Dataset(name, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"\(that folder does not exist\)"):
        data.Dataset(name, str(tmp_path / "typo"))


def small_prefixes(n: int) -> Prefixes:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 25, n)
    kept = np.minimum(lengths, 19)
    prefixes = np.where(np.arange(19)[None, :] < kept[:, None],
                        rng.integers(1, 50, (n, 19)), 0).astype(np.int32)
    return Prefixes(prefixes, np.arange(n, dtype=np.int64), lengths,
                    np.arange(n, dtype=np.int64))


def test_make_dataset_batches_in_order():
    prefixes = small_prefixes(10)
    batches = list(data.make_dataset(prefixes, batch_size=4).as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    items, labels = batches[0]
    assert items.dtype == np.int32 and labels.dtype == np.int32 and items.shape == (4, 19)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), prefixes.prefixes)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(10))


def test_make_dataset_shuffles_each_epoch_reproducibly():
    prefixes = small_prefixes(50)

    def epochs(seed):
        dataset = data.make_dataset(prefixes, 10, shuffle=True, seed=seed, repeat=True)
        labels = [b[1] for b in dataset.take(10).as_numpy_iterator()]
        return np.concatenate(labels[:5]), np.concatenate(labels[5:])

    first, second = epochs(0)
    assert sorted(first) == sorted(second) == list(range(50))  # every example once an epoch
    assert first.tolist() != second.tolist() != list(range(50))
    assert epochs(0)[0].tolist() == first.tolist()
    assert epochs(1)[0].tolist() != first.tolist()
    items = next(iter(data.make_dataset(prefixes, 50, shuffle=True).as_numpy_iterator()))[0]
    assert sorted(map(tuple, items)) == sorted(map(tuple, prefixes.prefixes))


def test_finite_dataset_reshuffles_on_each_keras_epoch_with_known_length():
    prefixes = small_prefixes(50)
    dataset = data.make_dataset(prefixes, 10, shuffle=True, seed=0)
    assert int(dataset.cardinality()) == 5
    first, second = ([b[1] for b in dataset.as_numpy_iterator()] for _ in range(2))
    first, second = np.concatenate(first), np.concatenate(second)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first.tolist() != second.tolist()
    again = data.make_dataset(prefixes, 10, shuffle=True, seed=0)
    assert np.concatenate([b[1] for b in again.as_numpy_iterator()]).tolist() == first.tolist()


def _grouped_epochs(prefixes, repeat, seed=0, batch_size=16, buckets=(2, 4, 8, 12)):
    dataset = data.make_dataset(prefixes, batch_size, shuffle=True, seed=seed, repeat=repeat,
                                length_buckets=buckets)
    per_epoch = -(-len(prefixes) // batch_size)
    if repeat:
        batches = list(dataset.take(2 * per_epoch).as_numpy_iterator())
        return [batches[:per_epoch], batches[per_epoch:]]
    assert int(dataset.cardinality()) == per_epoch
    return [list(dataset.as_numpy_iterator()) for _ in range(2)]


@pytest.mark.parametrize("repeat", [False, True])
def test_grouped_batches_are_cut_to_their_bucket_and_cover_every_example(repeat):
    prefixes = small_prefixes(1000)
    lengths = np.count_nonzero(prefixes.prefixes, axis=1)
    epochs = _grouped_epochs(prefixes, repeat)
    orders = []
    for batches in epochs:
        labels = np.concatenate([b[1] for b in batches])
        assert sorted(labels) == list(range(1000))  # every example once an epoch
        orders.append(labels.tolist())
        cells = 0
        for items, batch_labels in batches:
            longest = lengths[batch_labels].max()
            assert items.shape[1] == min(w for w in (2, 4, 8, 12, 19) if w >= longest)
            # Rows intact: the prefix of each label, cut only where it is padding.
            np.testing.assert_array_equal(items, prefixes.prefixes[batch_labels, :items.shape[1]])
            cells += items.size
        assert cells < 0.75 * prefixes.prefixes.size  # fixed 19-wide batches: 1.0
    assert orders[0] != orders[1]
    assert [b[1].tolist() for b in _grouped_epochs(prefixes, repeat)[0]] == \
        [b[1].tolist() for b in epochs[0]]  # reproducible from the seed
    assert [b[1].tolist() for b in _grouped_epochs(prefixes, repeat, seed=1)[0]] != \
        [b[1].tolist() for b in epochs[0]]


@pytest.mark.parametrize("buckets", [["4", "2"], ["0"], ["20"], ["a"], [3, 3]])
def test_bad_length_buckets_are_named(buckets):
    with pytest.raises(ValueError, match="length buckets must be ascending"):
        data.make_dataset(small_prefixes(10), 4, length_buckets=buckets)


def test_make_dataset_rejects_empty_prefixes():
    prefixes = small_prefixes(5)
    prefixes.prefixes[2] = 0
    with pytest.raises(ValueError, match="at least one item"):
        data.make_dataset(prefixes, 2)




# ------------------------------------------------------------------------------ stream


def _batches(dataset):
    return [(items, labels) for items, labels in dataset.as_numpy_iterator()]


def _rows(batches):
    """The (prefix without padding, label) of every example: a multiset as a sorted list."""
    return sorted((tuple(row[row > 0]), int(label)) for items, labels in batches
                  for row, label in zip(items, labels, strict=True))


def _opened(data_dir, *inputs):
    return [data.Dataset(NAME, data_dir, input=setting) for setting in inputs]


@pytest.mark.parametrize("buckets", [None, (2, 4, 8, 12)])
def test_streamed_epoch_holds_the_in_memory_examples(built, buckets):
    data_dir, _ = built
    memory, streamed = _opened(data_dir, "memory", "stream")
    in_memory = memory.batches("train", 16, shuffle=True, length_buckets=buckets)
    stream = streamed.batches("train", 16, shuffle=True, shuffle_buffer=100,
                              length_buckets=buckets)
    first, second = _batches(stream), _batches(stream)
    assert _rows(first) == _rows(second) == _rows(_batches(in_memory))
    assert len(first) == int(stream.cardinality())
    assert [b[1].tolist() for b in first] != [b[1].tolist() for b in second]  # reshuffled
    if buckets:
        for items, _ in first:
            longest = np.count_nonzero(items, axis=1).max()
            assert items.shape[1] == min(w for w in (2, 4, 8, 12, 19) if w >= longest)


@pytest.mark.parametrize("buckets", [None, (2, 4, 8, 12)])
@pytest.mark.parametrize("split", ["train", "train+validation"])
def test_streamed_batches_without_shuffling_are_the_in_memory_batches(built, buckets, split):
    """The two engines, same examples in the same order: the same tensors, each batch cut to
    the same width."""
    data_dir, _ = built
    memory, streamed = _opened(data_dir, "memory", "stream")
    in_memory = _batches(memory.batches(split, 16, length_buckets=buckets))
    stream = _batches(streamed.batches(split, 16, length_buckets=buckets))
    assert len(stream) == len(in_memory) == -(-len(memory.split(split)) // 16)
    for (items, labels), (want_items, want_labels) in zip(stream, in_memory, strict=True):
        np.testing.assert_array_equal(items, want_items)
        np.testing.assert_array_equal(labels, want_labels)


def test_one_epoch_on_streamed_or_in_memory_batches_gives_the_same_metrics(built):
    import keras

    from narm_tf.model import gru
    from narm_tf.model import narm as narm_model

    data_dir, _ = built
    memory, streamed = _opened(data_dir, "memory", "stream")

    def one_epoch(dataset):
        keras.utils.set_random_seed(7)
        # The GRU's row sets train builds for 32-row batches (one: fewer loops to trace).
        model = narm_model.build_narm(dataset.num_items, embedding_dim=8, hidden_units=8,
                                      gru_phases=gru.phases_for(32))
        narm_model.compile_narm(model, jit_compile=False, steps_per_execution=1)
        model.fit(dataset.batches("train", 32), epochs=1, verbose=0)
        return model.evaluate(memory.batches("validation", 256), return_dict=True, verbose=0)

    in_memory, stream = one_epoch(memory), one_epoch(streamed)
    assert in_memory.keys() == stream.keys() and "recall@20" in in_memory
    for key in in_memory:
        assert stream[key] == pytest.approx(in_memory[key], rel=1e-6), key


def test_auto_input_streams_when_the_splits_would_not_fit(built):
    data_dir, expected = built
    examples = len(expected.train) + len(expected.validation) + len(expected.test)
    needed = examples * data.BYTES_PER_PREFIX  # the rule: stream above half the free memory
    assert data.choose_input("auto", examples, memory=2 * needed + 2) == "memory"
    assert data.choose_input("auto", examples, memory=2 * needed - 2) == "stream"
    assert data.choose_input("memory", examples, memory=1) == "memory"
    assert data.Dataset(NAME, data_dir).input == "memory"  # a small dataset, auto
    assert data.Dataset(NAME, data_dir, input="stream").input == "stream"
    with pytest.raises(ValueError, match="--input must be auto, memory or stream, got 'disk'"):
        data.Dataset(NAME, data_dir, input="disk")


def test_label_counts_streamed_and_in_memory(built):
    data_dir, expected = built
    want = np.bincount(expected.train.labels, minlength=len(expected.vocabulary) + 1)[1:]
    for dataset in _opened(data_dir, "memory", "stream"):
        counts = dataset.label_counts("train")
        assert counts.shape == (len(expected.vocabulary),)
        np.testing.assert_array_equal(counts, want)


def test_a_split_given_in_memory_replaces_the_built_one(built):
    """`with_split` (a warm start's filtered validation): that split's examples, counts and
    batches come from memory even when the dataset streams; the others are untouched."""
    data_dir, expected = built
    streamed = data.Dataset(NAME, data_dir, input="stream")
    first_ten = expected.validation.take(np.arange(10))
    narrowed = streamed.with_split("validation", first_ten)
    assert narrowed.split("validation") is first_ten
    assert len(streamed.split("validation")) == len(expected.validation)
    assert narrowed.label_counts("validation").sum() == 10
    assert _rows(_batches(narrowed.batches("validation", 4))) == _rows(
        _batches(data.make_dataset(first_ten, 4)))
    both = narrowed.batches("train+validation", 16)  # in memory: part of it is given
    assert sum(len(labels) for _, labels in _batches(both)) == len(expected.train) + 10
    assert _rows(_batches(narrowed.batches("train", 16))) == _rows(
        _batches(streamed.batches("train", 16)))


def test_each_worker_streams_its_own_shard(built):
    import tensorflow as tf

    data_dir, expected = built
    memory, streamed = _opened(data_dir, "memory", "stream")
    shards = [_batches(streamed.batches(
        "train", 16, input_context=tf.distribute.InputContext(2, worker, 16)))
        for worker in (0, 1)]
    both = _rows(shards[0] + shards[1])
    assert both == _rows(_batches(streamed.batches("train", 16)))
    assert abs(len(_rows(shards[0])) - len(_rows(shards[1]))) <= 1
    with pytest.raises(ValueError, match="multi-worker input is streamed"):
        memory.batches("train", 16, input_context=tf.distribute.InputContext(2, 0, 16))
