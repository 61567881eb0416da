"""narm_tf.data.examples: one schema for what the builders write and what the readers parse."""

import subprocess
import sys

import numpy as np
import tensorflow as tf

from narm_tf.data import examples
from narm_tf.data.examples import MAX_LEN, Prefixes

from conftest import ROOT


def three_prefixes() -> Prefixes:
    """Prefixes of lengths 1, 19 and 25 (kept: its last 19), padded to MAX_LEN."""
    rows = np.zeros((3, MAX_LEN), np.int32)
    rows[0, 0] = 7
    rows[1] = np.arange(1, 20)
    rows[2] = np.arange(101, 120)
    return Prefixes(rows, np.array([3, 4, 5]), np.array([1, 19, 25]),
                    np.array([2**40, -1, 0]))


def test_as_examples_cut_each_prefix_to_the_clicks_it_keeps():
    records = list(examples.as_examples(three_prefixes()))
    assert [r["prefix"].tolist() for r in records] == [[7], list(range(1, 20)),
                                                       list(range(101, 120))]
    assert [(r["label"], r["length"], r["session_id"]) for r in records] == \
        [(3, 1, 2**40), (4, 19, -1), (5, 25, 0)]
    assert all(r["prefix"].dtype == np.int64 for r in records)
    assert [set(r) for r in records] == [{f.name for f in examples.SCHEMA}] * 3


def test_records_tfds_writes_parse_back_with_the_parse_spec():
    """What the builders' TFDS features serialize, `parse_spec` reads back: every feature,
    the prefix as a list of the kept clicks; `from_columns` makes them `Prefixes` again."""
    features = examples.tfds_features()
    assert set(features.keys()) == {f.name for f in examples.SCHEMA}
    for feature in examples.SCHEMA:  # a sequence is a list, the rest single integers
        assert features.get_serialized_info()[feature.name].shape == \
            ((None,) if feature.sequence else ())
    prefixes = three_prefixes()
    serialized = [features.serialize_example(r) for r in examples.as_examples(prefixes)]
    parsed = tf.io.parse_example(tf.constant(serialized), examples.parse_spec())
    columns = {name: value.numpy() for name, value in parsed.items()}
    columns["prefix"] = parsed["prefix"].to_tensor(0, shape=[None, MAX_LEN]).numpy()
    back = examples.from_columns(columns)
    for field in ("prefixes", "labels", "lengths", "session_ids"):
        np.testing.assert_array_equal(getattr(back, field), getattr(prefixes, field))


def test_prefixes_concatenate_take_and_empty():
    prefixes = three_prefixes()
    both = Prefixes.concatenate(prefixes, prefixes.take(np.array([2, 0])))
    assert both.labels.tolist() == [3, 4, 5, 5, 3] and both.prefixes.shape == (5, MAX_LEN)
    empty = Prefixes.empty()
    assert len(empty) == 0 and empty.prefixes.shape == (0, MAX_LEN)
    assert empty.prefixes.dtype == np.int32 and empty.labels.dtype == np.int64


def test_serving_and_reading_need_neither_pandas_nor_pyarrow():
    """Only building a dataset reads click logs: with pandas and pyarrow unimportable, the
    export graph and the dataset reader still import (Keras uses pandas only if present)."""
    code = ("import sys; sys.modules['pandas'] = sys.modules['pyarrow'] = None; "
            "import narm_tf.serving.signatures, narm_tf.serving.export_lib, "
            "narm_tf.data.dataset, narm_tf.data.examples")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
