"""The co-visitation prior: the table, the prior of a prefix, the model it is attached to, the
weight chosen on held-out data, a training run with --covisit and its export."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from narm_tf.data.examples import Prefixes
from narm_tf.model import covisit
from narm_tf.model.narm import build_narm, compile_narm

# Two sessions over items 1..4: 1 -> 2 -> 3 and 2 -> 3 -> 4.
SESSIONS = np.array([[1, 2, 3, 0], [2, 3, 4, 0]], np.int32)


def test_table_sums_one_over_distance_strongest_first():
    ids, strengths = covisit.build_table(SESSIONS, num_items=4, neighbours=3, window=3)
    # C[1] = {2: 1, 3: 1/2}; C[2] = {3: 1 + 1, 4: 1/2}; C[3] = {4: 1}; C[4] = {}.
    np.testing.assert_array_equal(ids, [[0, 0, 0], [2, 3, 0], [3, 4, 0], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(strengths, [[0, 0, 0], [1, 0.5, 0], [2, 0.5, 0], [1, 0, 0],
                                           [0, 0, 0]])
    ids, strengths = covisit.build_table(SESSIONS, num_items=4, neighbours=1, window=1)
    np.testing.assert_array_equal(ids[:, 0], [0, 2, 3, 4, 0])  # window 1: the next click only
    np.testing.assert_allclose(strengths[:, 0], [0, 1, 2, 1, 0])
    tied = covisit.build_table(np.array([[5, 3], [5, 2]]), num_items=5, neighbours=1)[0]
    assert tied[5, 0] == 2  # equal strengths: the lower id first
    with pytest.raises(ValueError, match="item 9 but the catalogue has 4"):
        covisit.build_table(np.array([[1, 9]]), num_items=4)


def test_sessions_are_each_longest_prefix_with_its_label():
    # Session 7: 1 2 3 (prefixes [1] -> 2, [1 2] -> 3); session 8: 4 5 (prefix [4] -> 5).
    prefixes = Prefixes(np.array([[1, 2, 0], [4, 0, 0], [1, 0, 0]], np.int32),
                        np.array([3, 5, 2]), np.array([2, 1, 1]), np.array([7, 8, 7]))
    np.testing.assert_array_equal(covisit.sessions_of(prefixes),
                                  [[1, 2, 3, 0], [4, 5, 0, 0]])
    full = Prefixes(np.array([[1, 2, 3]], np.int32), np.array([4]), np.array([5]),
                    np.array([1]))  # longer than the width: its last clicks, then the label
    np.testing.assert_array_equal(covisit.sessions_of(full), [[1, 2, 3, 4]])


def test_prior_of_a_prefix_by_hand():
    ids, strengths = covisit.build_table(SESSIONS, num_items=4, neighbours=3)
    prefix = np.array([[1, 2, 0]], np.int32)
    # p = 0.7 C[1] + 1 C[2]: p_2 = 0.7, p_3 = 0.35 + 2 = 2.35, p_4 = 0.5; normalized by 2.35.
    p = np.array([0, 0, 0.7, 2.35, 0.5]) / 2.35
    expected = 2.0 * np.log(covisit.EPS + p)
    got = covisit.prior_scores(prefix, ids, strengths, 2.0, False).numpy()[0]
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-5)
    outside = covisit.prior_scores(prefix, ids, strengths, 2.0, True).numpy()[0]
    np.testing.assert_allclose(outside[[1, 2]], 2.0 * np.log(1 + covisit.EPS), rtol=1e-5)
    np.testing.assert_allclose(outside[3:], expected[3:], rtol=1e-5)
    nothing = covisit.prior_scores(np.array([[4, 0, 0]], np.int32), ids, strengths, 2.0, False)
    assert np.ptp(nothing.numpy()[0, 1:]) == 0  # no co-visits: the same shift for every item


def _model_and_table(num_items=30, seed=0):
    keras.utils.set_random_seed(seed)
    model = compile_narm(build_narm(num_items, 8, 8, max_len=5), jit_compile=False)
    rng = np.random.default_rng(seed)
    # Sessions where item i is followed by i + 1 (mod N): the table knows the rule.
    starts = rng.integers(1, num_items + 1, 400)
    sessions = ((starts[:, None] + np.arange(6)[None, :] - 1) % num_items + 1).astype(np.int32)
    return model, covisit.build_table(sessions, num_items, neighbours=4), sessions


def test_attached_prior_adds_to_the_scores_and_survives_save_and_reload(tmp_path):
    model, (ids, strengths), sessions = _model_and_table()
    x = sessions[:50, :5] * (np.arange(5)[None, :] < 3)  # three clicks, right-padded
    attached = covisit.attach(model, ids, strengths)
    assert attached.narm["covisit"] == 4 and covisit.has_prior(attached)
    np.testing.assert_allclose(attached.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-4)  # weight 0: the model as it was
    covisit.set_weight(attached, 0.5, True)
    expected = (model.predict(x, verbose=0)
                + covisit.prior_scores(x, ids, strengths, 0.5, True).numpy())
    np.testing.assert_allclose(attached.predict(x, verbose=0)[:, 1:], expected[:, 1:],
                               rtol=1e-5, atol=1e-4)
    attached.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), attached.predict(x, verbose=0),
                               rtol=1e-6)
    again = covisit.attach(reloaded, ids[:, :2], strengths[:, :2])  # replaces, not stacks
    assert [layer.name for layer in again.layers].count(covisit.LAYER) == 1
    assert again.narm["covisit"] == 2


def test_weight_is_chosen_on_held_out_data_and_zero_when_the_table_misleads():
    model, (ids, strengths), sessions = _model_and_table()
    attached = covisit.attach(model, ids, strengths)
    prefixes = np.zeros([200, 5], np.int32)
    prefixes[:, :2] = sessions[200:400, :2]
    follows = Prefixes(prefixes, sessions[200:400, 2].astype(np.int64),
                       np.full(200, 2), np.arange(200))
    chosen = covisit.choose_weight(attached, follows, batch_size=64)
    assert chosen["weight"] > 0 and chosen["recall"] == 1.0  # the rule: every target found
    assert chosen["grid"][0]["weight"] == 0 and chosen["grid"][0]["recall"] < 0.9
    assert float(attached.get_layer(covisit.LAYER).weight.numpy()) == chosen["weight"]
    # Labels the table never saw follow: the prior only pushes them down, weight 0 is kept.
    misleading = Prefixes(prefixes, (sessions[200:400, 2] + 9) % 30 + 1,
                          np.full(200, 2), np.arange(200))
    assert covisit.choose_weight(attached, misleading, batch_size=64)["weight"] == 0


def test_train_with_covisit_chooses_the_weight_on_validation(tmp_path, synthetic_data_dir):
    """A real run with --covisit and --refit: the selected model (table from train) and the
    refit model (table from train + validation) carry the prior with the weight chosen on
    validation."""
    from narm_tf import config as config_lib
    from narm_tf.training import trainer

    assert config_lib.default_config()["covisit"] == 0
    with pytest.raises(ValueError, match="--covisit=-1: must be an integer >= 0"):
        config_lib.check_config({**config_lib.default_config(), "covisit": -1})
    config = config_lib.default_config(
        dataset="yoochoose/yoochoose_full", data_dir=synthetic_data_dir,
        model_dir=str(tmp_path / "run"), batch_size=64, embedding_dim=16, hidden_units=16,
        eval_batch_size=256, epochs=1, covisit=20, refit=True, jit_compile="off")
    metrics = trainer.train(config)
    chosen = metrics["covisit"]
    assert chosen["weight"] in (0.0, *covisit.WEIGHTS)
    assert chosen["recall"] + chosen["mrr"] == max(p["recall"] + p["mrr"]
                                                   for p in chosen["grid"])
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["covisit"]["weight"] == chosen["weight"]
    tables = {}
    for name in ("best.keras", "final.keras"):
        model = keras.models.load_model(tmp_path / "run" / name)
        layer = model.get_layer(covisit.LAYER)
        assert float(layer.weight.numpy()) == chosen["weight"]
        assert layer.ids.shape[1] == 20
        tables[name] = np.count_nonzero(layer.ids.numpy())
    assert 0 < tables["best.keras"] < tables["final.keras"]  # more sessions, more co-visits

    # The evaluate command, a fresh process that never imported the prior's module itself,
    # loads the delivered model with its prior and reports the run's test figures.
    evaluated = subprocess.run([sys.executable, "-m", "narm_tf.evaluate",
                                f"--model_dir={tmp_path / 'run'}"], capture_output=True,
                               text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    assert f"{metrics['test']['recall@20']:6.2f}%" in evaluated.stdout
    assert "Warning" not in evaluated.stderr, evaluated.stderr  # no optimizer state read


def test_export_serves_the_prior_through_the_keras_graph(tmp_path):
    """Exported and run in an isolated process by the TF1 loader (as TF Serving): the top-k equals
    the Keras model's with its prior."""
    from test_export import MAX_LEN, encode, reference, serve_isolated, session_rows

    from narm_tf.serving import contract, export_lib
    from narm_tf.serving.signatures import ServingModule

    num_items = 60
    keras.utils.set_random_seed(3)
    model = compile_narm(build_narm(num_items, 8, 12, max_len=MAX_LEN))
    rng = np.random.default_rng(0)
    sessions = rng.integers(1, num_items + 1, (300, 6)).astype(np.int32)
    ids, strengths = covisit.build_table(sessions, num_items, neighbours=10)
    model = covisit.attach(model, ids, strengths, weight=1.5, outside=True)
    vocabulary = rng.choice(np.arange(10**10, 10**10 + 10**6), num_items, replace=False)
    popularity = rng.permutation(num_items) * 3 + 1
    path = export_lib.export_model(model, vocabulary, popularity, str(tmp_path / "e"), k=20)
    serving = ServingModule(model, vocabulary, popularity, path + "/assets/vocabulary.txt", 20,
                            False, MAX_LEN)
    assert serving.inference is None  # the lean pass does not reproduce it: the Keras graph
    rows = session_rows(vocabulary)
    results = serve_isolated(
        {path: {"int64": (contract.SIGNATURE_INT64, {"item_ids": encode(rows, "int64")})}},
        tmp_path)
    ids, scores, _, _, _ = reference((model, vocabulary, popularity), rows,
                                     np.zeros(len(rows), bool))
    np.testing.assert_array_equal(results["int64"]["top_k_item_ids"], ids)
    np.testing.assert_allclose(results["int64"]["top_k_scores"], scores, atol=1e-5, rtol=0)
