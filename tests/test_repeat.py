"""The repeat-aware option (`build_narm(repeat=True)`, `narm_tf.model.layers.RepeatExplore`,
`--repeat`): its scores against NumPy and by hand, its gate, training through `narm_tf.train`,
and its export served through the Keras graph, reloaded by the TF1 loader in an isolated process."""

import json

import keras
import numpy as np
import pytest

from narm_tf.model.gru import phases_for
from narm_tf.model.layers import PADDING_SCORE, RepeatExplore
from narm_tf.model.narm import (
    EXPLORE_SCALES,
    REPEAT_EXPLORE,
    REPEAT_SCALES,
    build_narm,
    compile_narm,
)

ITEM_IDS = np.array([[2, 4, 2, 0], [5, 0, 0, 0], [1, 3, 5, 3]], np.int32)  # right-padded
NUM_ITEMS, HIDDEN, CONTEXT, UNITS = 5, 3, 4, 2
# The GRU's row sets of the models fitted here in 64-row batches, as narm_tf.train builds them
# (one: fewer loops to trace); test_layers compares the phases, test_export exports them.
PHASES_64 = phases_for(64)


def layer_with(weights, explore="all", scales=(1.0, 1.0)):
    """A built RepeatExplore with the given (W, U, v, w, b) and (explore, repeat) scales."""
    layer = RepeatExplore(units=UNITS, explore=explore)
    layer.build((None, NUM_ITEMS + 1), (None, 4), (None, 4, HIDDEN), (None, CONTEXT))
    layer.set_weights([np.asarray(w, np.float32) for w in [*weights, *scales]])
    return layer


def inputs(rng):
    explore = rng.normal(size=(3, NUM_ITEMS + 1)).astype(np.float32)
    explore[:, 0] = PADDING_SCORE
    hidden = rng.normal(size=(3, 4, HIDDEN)).astype(np.float32)
    session = rng.normal(size=(3, CONTEXT)).astype(np.float32)
    return explore, hidden, session


def numpy_reference(explore, item_ids, hidden, session, weights, mode="all", scales=(1.0, 1.0)):
    """log(g P_repeat + (1 - g) P_explore) in float64, one row at a time; column 0 dropped.
    `mode="new"`: P_explore is the softmax over the items not in the row's clicks. `scales`
    multiply the explore logits and the attention energies."""
    w_h, u_c, v, gate_kernel, gate_bias = (np.asarray(w, np.float64) for w in weights)
    explore_scale, repeat_scale = scales
    out, gates = [], []
    for row in range(len(item_ids)):
        clicks = item_ids[row][item_ids[row] > 0]
        energy = repeat_scale * np.array([np.tanh(hidden[row, j] @ w_h + session[row] @ u_c)
                                          @ v[:, 0] for j in range(len(clicks))])
        attention = np.exp(energy - energy.max())
        attention /= attention.sum()
        repeat = np.zeros(NUM_ITEMS + 1)
        for item, weight in zip(clicks, attention, strict=True):
            repeat[item] += weight
        gate = 1 / (1 + np.exp(-(session[row] @ gate_kernel[:, 0] + gate_bias[0])))
        logits = explore_scale * explore[row, 1:].astype(np.float64)
        allowed = np.ones(NUM_ITEMS, bool)
        if mode == "new":
            allowed[clicks - 1] = False
        explore_p = np.where(allowed, np.exp(logits - logits.max()), 0.0)
        explore_p /= explore_p.sum()
        out.append(np.log(gate * repeat[1:] + (1 - gate) * explore_p))
        gates.append(gate)
    return np.array(out), np.array(gates)


@pytest.mark.parametrize("mode,scales", [("all", (1.0, 1.0)), ("new", (1.0, 1.0)),
                                         ("all", (0.5, 0.25)), ("new", (0.67, 0.0))])
def test_scores_match_numpy_reference(mode, scales):
    rng = np.random.default_rng(0)
    explore, hidden, session = inputs(rng)
    weights = [rng.normal(size=s) for s in ((HIDDEN, UNITS), (CONTEXT, UNITS), (UNITS, 1),
                                            (CONTEXT, 1), (1,))]
    scores, gate = layer_with(weights, mode, scales)(explore, ITEM_IDS, hidden, session)
    expected, expected_gate = numpy_reference(explore, ITEM_IDS, hidden, session, weights, mode,
                                              scales)
    np.testing.assert_allclose(scores.numpy()[:, 1:], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gate.numpy()[:, 0], expected_gate, rtol=1e-6)
    assert (scores.numpy()[:, 0] < PADDING_SCORE / 2).all()  # padding never scores
    # Log-probabilities: they sum to 1 over the catalogue, so they are logits as they stand.
    np.testing.assert_allclose(np.exp(scores.numpy()).sum(1), 1.0, rtol=1e-5)


def test_hand_computed_repeat_and_explore_extremes():
    """Zero attention weights: uniform over the clicks, so row [2, 4, 2] repeats item 2 with
    2/3 and item 4 with 1/3. Gate bias +40: all repeat; -40: all explore (zero logits: 1/5)."""
    rng = np.random.default_rng(1)
    _, hidden, session = inputs(rng)
    explore = np.zeros((3, NUM_ITEMS + 1), np.float32)
    explore[:, 0] = PADDING_SCORE
    zeros = [np.zeros((HIDDEN, UNITS)), np.zeros((CONTEXT, UNITS)), np.zeros((UNITS, 1)),
             np.zeros((CONTEXT, 1))]
    scores, gate = layer_with(zeros + [np.array([40.0])])(explore, ITEM_IDS, hidden, session)
    np.testing.assert_allclose(gate.numpy(), 1.0)
    np.testing.assert_allclose(np.exp(scores.numpy()[0, 1:]), [0, 2 / 3, 0, 1 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(np.exp(scores.numpy()[1, 1:]), [0, 0, 0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(np.exp(scores.numpy()[2, 1:]), [.25, 0, .5, 0, .25], atol=1e-6)
    assert np.isfinite(scores.numpy()).all()  # log(0) is floored, never -inf
    scores, gate = layer_with(zeros + [np.array([-40.0])])(explore, ITEM_IDS, hidden, session)
    np.testing.assert_allclose(gate.numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(scores.numpy()[:, 1:], np.log(0.2), rtol=1e-5)


def test_hand_computed_explore_new_only():
    """`explore="new"` (RepeatNet's): zero weights, gate 1/2. Row [2, 4, 2]: repeat gives item 2
    1/2 * 2/3 and item 4 1/2 * 1/3; explore splits 1/2 over items 1, 3, 5. Row [5]: item 5 1/2,
    the other four 1/8 each. A row without clicks only explores: gate 0, 1/5 each."""
    rng = np.random.default_rng(1)
    _, hidden, session = inputs(rng)
    explore = np.zeros((3, NUM_ITEMS + 1), np.float32)
    explore[:, 0] = PADDING_SCORE
    item_ids = np.array([[2, 4, 2, 0], [5, 0, 0, 0], [0, 0, 0, 0]], np.int32)
    zeros = [np.zeros((HIDDEN, UNITS)), np.zeros((CONTEXT, UNITS)), np.zeros((UNITS, 1)),
             np.zeros((CONTEXT, 1)), np.zeros(1)]
    scores, gate = layer_with(zeros, "new")(explore, item_ids, hidden, session)
    np.testing.assert_allclose(gate.numpy()[:, 0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(np.exp(scores.numpy()[:, 1:]),
                               [[1 / 6, 1 / 3, 1 / 6, 1 / 6, 1 / 6],
                                [1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 2],
                                [1 / 5, 1 / 5, 1 / 5, 1 / 5, 1 / 5]], rtol=1e-5)
    assert (scores.numpy()[:, 0] < PADDING_SCORE / 2).all()
    # A session item gets nothing from explore however high its logit: gate bias -40.
    explore[0, 2] = 30.0
    scores, _ = layer_with(zeros[:4] + [np.array([-40.0])], "new")(explore, item_ids, hidden,
                                                                     session)
    assert np.exp(scores.numpy()[0, 2]) < 1e-12
    np.testing.assert_allclose(np.exp(scores.numpy()[0, [1, 3, 5]]), 1 / 3, rtol=1e-5)


def test_hand_computed_scales():
    """repeat_scale 0: attention uniform over the clicks whatever its weights, so row [2, 4, 2]
    repeats item 2 with 2/3 and item 4 with 1/3 (gate bias +40). explore_scale 1/2 on logits
    (0, 2 ln 2, 0, 0, 0) gives (0, ln 2, 0, 0, 0): item 2 2/6, the others 1/6 (bias -40)."""
    rng = np.random.default_rng(4)
    _, hidden, session = inputs(rng)
    explore = np.zeros((3, NUM_ITEMS + 1), np.float32)
    explore[:, 0] = PADDING_SCORE
    explore[:, 2] = 2 * np.log(2.0)
    weights = [rng.normal(size=s) for s in ((HIDDEN, UNITS), (CONTEXT, UNITS), (UNITS, 1))]
    gate = [np.zeros((CONTEXT, 1))]
    scores, _ = layer_with(weights + gate + [np.array([40.0])], "all", (1.0, 0.0))(
        explore, ITEM_IDS, hidden, session)
    np.testing.assert_allclose(np.exp(scores.numpy()[0, 1:]), [0, 2 / 3, 0, 1 / 3, 0], atol=1e-6)
    scores, _ = layer_with(weights + gate + [np.array([-40.0])], "all", (0.5, 1.0))(
        explore, ITEM_IDS, hidden, session)
    np.testing.assert_allclose(np.exp(scores.numpy()[:, 1:]),
                               np.tile([1 / 6, 2 / 6, 1 / 6, 1 / 6, 1 / 6], (3, 1)), rtol=1e-5)


def test_layer_saved_without_scales_loads_with_scales_one():
    """A `.keras` file written before the scales existed holds the 5 trained weights only."""
    rng = np.random.default_rng(5)
    weights = [rng.normal(size=s).astype(np.float32) for s in (
        (HIDDEN, UNITS), (CONTEXT, UNITS), (UNITS, 1), (CONTEXT, 1), (1,))]
    layer = layer_with([np.zeros_like(w) for w in weights], "all", (0.5, 0.5))
    layer.load_own_variables({str(i): w for i, w in enumerate(weights)})
    for got, want in zip(layer.get_weights(), [*weights, 1.0, 1.0], strict=True):
        np.testing.assert_array_equal(got, want)


def test_calibrate_repeat_sets_the_least_loss_grid_point_and_saves_it(tmp_path):
    from narm_tf.model.narm import calibrate_repeat

    keras.utils.set_random_seed(6)
    # Without XLA (a compile per function here): the calibration's choice is the same.
    model = compile_narm(build_narm(30, 8, 12, repeat=True, repeat_explore="new",
                                    gru_phases=PHASES_64), jit_compile=False)
    rng = np.random.default_rng(6)
    x = rng.integers(1, 31, (512, 6)).astype(np.int32)
    model.fit(x, x[:, 0], batch_size=64, epochs=2, verbose=0)
    held_x, held_y = x[:128], np.where(np.arange(128) % 2 == 0, x[:128, 0], x[:128, 5])
    layer = model.get_layer(REPEAT_EXPLORE)
    losses = {}
    for explore_scale in (1.0, 0.5):
        for repeat_scale in (1.0, 0.0):
            layer.explore_scale.assign(explore_scale)
            layer.repeat_scale.assign(repeat_scale)
            losses[explore_scale, repeat_scale] = model.evaluate(held_x, held_y, verbose=0)[0]
    chosen = calibrate_repeat(model, held_x, held_y, explore_scales=(1.0, 0.5),
                              repeat_scales=(1.0, 0.0))
    least = min(losses, key=losses.get)
    assert (chosen["explore_scale"], chosen["repeat_scale"]) == least
    assert chosen["loss"] == pytest.approx(losses[least], rel=1e-5)
    assert (float(layer.explore_scale.numpy()), float(layer.repeat_scale.numpy())) == least
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").get_layer(REPEAT_EXPLORE)
    assert (float(loaded.explore_scale.numpy()), float(loaded.repeat_scale.numpy())) == least
    # Only trained weights are trainable: fit never moves the scales.
    assert len(layer.trainable_weights) == 5 and len(layer.non_trainable_weights) == 2
    with pytest.raises(ValueError, match="compiled"):
        calibrate_repeat(build_narm(30, 8, 12, repeat=True), held_x, held_y)


def test_explore_mode_is_checked_and_saved():
    with pytest.raises(ValueError, match="explore must be one of .* got 'old'"):
        RepeatExplore(explore="old")
    layer = RepeatExplore.from_config(RepeatExplore(units=2, explore="new").get_config())
    assert layer.explore == "new" and RepeatExplore().explore == "all"


@pytest.mark.parametrize("mode", ["all", "new"])
def test_gate_is_a_probability_for_any_session(mode):
    rng = np.random.default_rng(2)
    explore, hidden, _ = inputs(rng)
    session = rng.normal(scale=100.0, size=(3, CONTEXT)).astype(np.float32)  # saturating
    weights = [rng.normal(size=s) for s in ((HIDDEN, UNITS), (CONTEXT, UNITS), (UNITS, 1),
                                            (CONTEXT, 1), (1,))]
    scores, gate = layer_with(weights, mode)(explore, ITEM_IDS, hidden, session)
    assert ((gate.numpy() >= 0) & (gate.numpy() <= 1)).all()
    assert np.isfinite(scores.numpy()).all()


def test_repeat_model_trains_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(3)
    model = compile_narm(build_narm(30, 8, 12, repeat=True, gru_phases=PHASES_64),
                         jit_compile=False)  # no XLA compile
    assert model.narm["repeat"] is True and model.get_layer(REPEAT_EXPLORE)
    assert "repeat" not in build_narm(30, 8, 12).narm  # off by default: the paper's model
    rng = np.random.default_rng(0)
    # The label is always the session's first click: only the repeat path can learn it fast.
    x = rng.integers(1, 31, (512, 6)).astype(np.int32)
    history = model.fit(x, x[:, 0], batch_size=64, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x[:8]), model(x[:8]), rtol=1e-6)
    gate = keras.Model(model.inputs, model.get_layer(REPEAT_EXPLORE).output[1])(x[:64])
    assert float(np.mean(gate)) > 0.5  # it learned to repeat


def test_train_with_repeat_flag(tmp_path, synthetic_data_dir):
    """`--repeat --repeat_explore=new` through `trainer.train`: a real build and fit; `repeat` is
    part of the run's identity (a run with it cannot be resumed without it)."""
    from narm_tf import config as config_lib
    from narm_tf.training import run_dir, trainer

    config = config_lib.default_config(
        dataset="yoochoose/yoochoose_full", data_dir=synthetic_data_dir,
        model_dir=str(tmp_path / "run"), batch_size=64, embedding_dim=16, hidden_units=16,
        eval_batch_size=256, epochs=2, repeat=True, repeat_explore="new", repeat_calibrate=True,
        jit_compile="off")
    assert config_lib.default_config()["repeat"] is False
    assert config_lib.default_config()["repeat_explore"] == "all"
    assert config_lib.default_config()["repeat_calibrate"] is False
    for name, value in (("repeat_explore", "new"), ("repeat_calibrate", True)):
        with pytest.raises(ValueError, match=f"--{name}={value!r} needs --repeat"):
            config_lib.check_config({**config_lib.default_config(), name: value})
    metrics = trainer.train(config)
    assert metrics["test"]["recall@20"] > metrics["popularity_baseline"]["recall@20"]
    with open(tmp_path / "run" / "config.json") as f:
        saved = json.load(f)
    assert saved["repeat"] is True and saved["repeat_explore"] == "new"
    model = keras.models.load_model(tmp_path / "run" / "best.keras")
    layer = model.get_layer(REPEAT_EXPLORE)
    assert layer.explore == "new"
    calibration = metrics["repeat_calibration"]  # fitted on validation, saved into best.keras
    assert calibration["explore_scale"] in EXPLORE_SCALES
    assert calibration["repeat_scale"] in REPEAT_SCALES
    assert float(layer.explore_scale.numpy()) == pytest.approx(calibration["explore_scale"])
    assert float(layer.repeat_scale.numpy()) == pytest.approx(calibration["repeat_scale"])
    with pytest.raises(run_dir.RunFolderError, match="--repeat: True there, False now"):
        trainer.train({**config, "repeat": False, "repeat_explore": "all",
                       "repeat_calibrate": False})


def test_export_is_served_through_keras_graph_and_reloads_equal(tmp_path):
    """Exported and run in an isolated process by the TF1 loader (as TF Serving): the top-k equals
    the Keras model's, for known, unknown, empty, padded and over-long sessions; both explore
    modes, served by one isolated process."""
    from test_export import MAX_LEN, encode, reference, serve_isolated, session_rows

    from narm_tf.serving import contract, export_lib
    from narm_tf.serving.signatures import ServingModule

    def repeat_model(mode):
        return build_narm(num_items, 8, 12, max_len=MAX_LEN, repeat=True, repeat_explore=mode,
                          gru_phases=PHASES_64)

    keras.utils.set_random_seed(7)
    num_items = 60
    trained = compile_narm(repeat_model("all"), jit_compile=False)  # no XLA
    rng = np.random.default_rng(0)
    x = rng.integers(1, num_items + 1, (256, MAX_LEN)).astype(np.int32)
    trained.fit(x, x[:, 3], batch_size=64, epochs=2, verbose=0)
    vocabulary = rng.choice(np.arange(10**10, 10**10 + 10**6), num_items, replace=False)
    popularity = rng.permutation(num_items) * 3 + 1
    exported, jobs = {}, {}
    for mode in ("all", "new"):
        # One fit for both modes: the "new" model takes the trained weights (the same
        # variables; what is served depends on the weights and the mode, not on how the
        # weights were reached). Training in mode "new": test_train_with_repeat_flag.
        model = trained if mode == "all" else repeat_model(mode)
        model.set_weights(trained.get_weights())
        assert model.get_layer(REPEAT_EXPLORE).explore == mode
        path = export_lib.export_model(model, vocabulary, popularity, str(tmp_path / mode),
                                       k=20)
        serving = ServingModule(model, vocabulary, popularity,
                                path + "/assets/vocabulary.txt", 20, False, MAX_LEN)
        assert serving.inference is None  # the lean pass does not reproduce it: the Keras graph
        rows = session_rows(vocabulary)
        exported[mode] = (model, vocabulary, popularity, rows)
        jobs[path] = {mode: (contract.SIGNATURE_INT64, {"item_ids": encode(rows, "int64")})}
    results = serve_isolated(jobs, tmp_path)
    for mode, (model, vocabulary, popularity, rows) in exported.items():
        ids, scores, _, _, _ = reference((model, vocabulary, popularity), rows,
                                         np.zeros(len(rows), bool))
        np.testing.assert_array_equal(results[mode]["top_k_item_ids"], ids, err_msg=mode)
        np.testing.assert_allclose(results[mode]["top_k_scores"], scores, atol=1e-5, rtol=0,
                                   err_msg=mode)
