"""Tests for narm_tf.metrics: Keras Recall@K / MRR@K against the NumPy reference (SPEC 3)."""

import json
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from narm_tf.metrics import MrrAtK, RecallAtK, ranks_numpy, recall_mrr_from_ranks

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tied_scores(seed, n=64, num_items=30):
    """Integer scores in a small range (many ties) `[n, num_items + 1]` and targets `[n]`."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=(n, num_items + 1)).astype("float32")
    labels = rng.integers(1, num_items + 1, size=n)
    return scores, labels


def _keras_values(scores, labels, k, batch_size=16, sample_weight=None):
    recall, mrr = RecallAtK(k), MrrAtK(k)
    for start in range(0, len(labels), batch_size):
        part = slice(start, start + batch_size)
        weight = None if sample_weight is None else sample_weight[part]
        recall.update_state(labels[part], scores[part], sample_weight=weight)
        mrr.update_state(labels[part], scores[part], sample_weight=weight)
    return float(recall.result()), float(mrr.result())


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_keras_metrics_equal_numpy_reference_with_ties(k, seed):
    scores, labels = _tied_scores(seed)
    want = recall_mrr_from_ranks(ranks_numpy(scores, labels), k)
    np.testing.assert_allclose(_keras_values(scores, labels, k), want, rtol=1e-6)


def test_ties_count_in_the_targets_favour():
    scores = np.array([[0.0, 1.0, 1.0, 1.0, 2.0]], "float32")     # target 2 ties with 1 and 3
    np.testing.assert_allclose(_keras_values(scores, np.array([2]), k=2), [1.0, 0.5])
    np.testing.assert_allclose(_keras_values(scores, np.array([2]), k=1), [0.0, 0.0])


def test_padding_column_never_counts():
    scores, labels = _tied_scores(2)
    high_padding = scores.copy()
    high_padding[:, 0] = 1e6
    np.testing.assert_allclose(_keras_values(high_padding, labels, 5),
                               _keras_values(scores, labels, 5), rtol=1e-6)


def test_sample_weight_and_reset():
    scores, labels = _tied_scores(3, n=32)
    weight = np.r_[np.ones(16), np.zeros(16)].astype("float32")
    want = recall_mrr_from_ranks(ranks_numpy(scores[:16], labels[:16]), 5)
    np.testing.assert_allclose(_keras_values(scores, labels, 5, sample_weight=weight), want,
                               rtol=1e-6)
    metric = RecallAtK(5)
    metric.update_state(labels, scores)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_names_and_config_round_trip():
    assert RecallAtK(20).name == "recall_at_20"
    assert MrrAtK(10, name="mrr@10").name == "mrr@10"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(MrrAtK(7)))
    assert isinstance(clone, MrrAtK) and clone.k == 7


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from narm_tf.metrics import MrrAtK, RecallAtK
    from narm_tf.model import build_narm, compile_narm, xla_supported

    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 6, size=(96, 4)).astype("float32")
    labels = rng.integers(1, 31, size=96)

    def evaluate(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(31)])
            model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=[RecallAtK(5, name="recall"), MrrAtK(5, name="mrr")])
        values = model.evaluate(inputs, labels, batch_size=32, return_dict=True, verbose=0)
        return values, model.predict(inputs, verbose=0)

    def train_narm(strategy):
        data_rng = np.random.default_rng(1)
        ids = data_rng.integers(1, 31, size=(64, 5)).astype("int32")
        ids[::2, 3:] = 0
        targets = ids[:, 0] % 30 + 1                    # learnable: the loss moves
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = compile_narm(build_narm(30, 8, 12, max_len=5, embedding_dropout=0.0,
                                            representation_dropout=0.0),
                                 learning_rate=1e-2)
        history = model.fit(ids, targets, batch_size=32, epochs=3, shuffle=False, verbose=0)
        return history.history["loss"]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    values, scores = evaluate(mirrored)
    single, _ = evaluate(single_device)
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "mirrored": values,
                      "single": single, "scores": scores.tolist(), "labels": labels.tolist(),
                      "xla": [xla_supported(mirrored), xla_supported(single_device)],
                      "narm_loss": [train_narm(mirrored), train_narm(single_device)]}))
""")


def test_metrics_and_narm_training_under_mirrored_strategy_equal_single_device():
    """Two logical CPU devices must be configured before any TF op: run in a fresh process.

    compile_narm's default turns XLA off for the replicas on CPU devices (it cannot reach them).
    """
    done = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    ranks = ranks_numpy(np.array(out["scores"]), np.array(out["labels"]))
    want = recall_mrr_from_ranks(ranks, 5)
    for values in (out["mirrored"], out["single"]):
        np.testing.assert_allclose([values["recall"], values["mrr"]], want, rtol=1e-5)
    assert out["xla"] == [False, True]
    mirrored_loss, single_loss = out["narm_loss"]
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-4)
    assert mirrored_loss[-1] < mirrored_loss[0] - 1e-3
