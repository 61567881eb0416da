"""Tests for narm_tf.model.narm: build_narm variants, masking, weight sharing, save/reload,
learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from narm_tf.model.gru import phases_for
from narm_tf.model.layers import PADDING_SCORE
from narm_tf.model.narm import attention_model, build_narm, compile_narm, cross_entropy

NUM_ITEMS = 30
SMALL = {"embedding_dim": 8, "hidden_units": 12}


def _right_padded(rows, max_len):
    """Item id lists -> right-padded `[len(rows), max_len]` int32."""
    out = np.zeros((len(rows), max_len), "int32")
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


ROWS = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [30, 1]]


def _scores(model, ids):
    return keras.ops.convert_to_numpy(model(ids, training=False))


@pytest.mark.parametrize("decoder", ["bilinear", "dense"])
@pytest.mark.parametrize("variant", ["global", "local", "hybrid"])
def test_variants_build_with_right_shapes_and_padding_never_ranked(variant, decoder):
    model = build_narm(NUM_ITEMS, variant=variant, decoder=decoder, max_len=5, **SMALL)
    scores = _scores(model, _right_padded(ROWS, 5))
    assert model.output_names == ["scores"] and scores.shape == (4, NUM_ITEMS + 1)
    np.testing.assert_array_equal(scores[:, 0], PADDING_SCORE)
    assert (scores[:, 0:1] < scores[:, 1:]).all()
    top = keras.ops.convert_to_numpy(keras.ops.top_k(scores, NUM_ITEMS).indices)
    assert (top != 0).all()
    outputs = attention_model(model)(_right_padded(ROWS, 5))
    np.testing.assert_allclose(outputs["scores"], scores, rtol=1e-6)
    assert outputs["attention_weights"].shape == (4, 5)
    session_size = {"global": 12, "local": 12, "hybrid": 24}[variant]
    assert model.get_layer("session_representation").output.shape == (None, session_size)
    gru = model.get_layer("gru")                      # cuDNN-eligible on GPU
    assert (gru.unroll, gru.reset_after, gru.use_cudnn) == (False, True, "auto")


def test_unknown_choices_raise():
    for kwargs in ({"variant": "both"}, {"decoder": "mlp"}, {"attention": "sparse"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            build_narm(NUM_ITEMS, **kwargs)


@pytest.mark.parametrize("variant", ["local", "hybrid"])
def test_appending_padding_never_changes_outputs(variant):
    short = build_narm(NUM_ITEMS, variant=variant, attention="softmax", max_len=5, **SMALL)
    long = build_narm(NUM_ITEMS, variant=variant, attention="softmax", max_len=9, **SMALL)
    long.set_weights(short.get_weights())
    np.testing.assert_allclose(_scores(long, _right_padded(ROWS, 9)),
                               _scores(short, _right_padded(ROWS, 5)), rtol=1e-5, atol=1e-5)
    weights = keras.ops.convert_to_numpy(
        attention_model(long)(_right_padded(ROWS, 9))["attention_weights"])
    np.testing.assert_array_equal(weights[_right_padded(ROWS, 9) == 0], 0.0)


def test_left_padding_gives_the_same_scores_on_cpu():
    """Documented behaviour: right padding is the supported layout (cuDNN's GRU needs it on
    GPU); on CPU the masked GRU skips leading padding too, so left padding scores the same."""
    model = build_narm(NUM_ITEMS, max_len=5, **SMALL)
    right = _right_padded(ROWS, 5)
    left = np.stack([np.roll(row, (row == 0).sum()) for row in right])
    np.testing.assert_allclose(_scores(model, left), _scores(model, right), rtol=1e-5, atol=1e-5)


def test_bilinear_decoder_shares_the_embedding_variable():
    model = build_narm(NUM_ITEMS, max_len=5, **SMALL)
    embedding = model.get_layer("item_embedding")
    tables = [w for w in model.weights if tuple(w.shape) == (NUM_ITEMS + 1, 8)]
    assert len(tables) == 1 and tables[0] is embedding.embeddings
    assert tuple(model.get_layer("bilinear_decoder").kernel.shape) == (24, 8)   # B: D x 2H
    ids = _right_padded([[1, 2]], 5)                  # item 17 is not in the input
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(
            np.array([17]), model(ids), from_logits=True)
    grad = tf.convert_to_tensor(tape.gradient(loss, embedding.embeddings)).numpy()
    assert np.abs(grad[17]).sum() > 0                 # reached only through the decoder
    np.testing.assert_array_equal(grad[0], 0.0)


@pytest.mark.parametrize("variant,decoder", [("hybrid", "bilinear"), ("global", "dense")])
def test_keras_save_and_reload_give_identical_outputs(tmp_path, variant, decoder):
    # Without XLA (three compiles a test): the property is the same; test_learns_* runs XLA.
    model = compile_narm(build_narm(NUM_ITEMS, variant=variant, decoder=decoder, max_len=5,
                                    **SMALL), jit_compile=False)
    ids = _right_padded(ROWS, 5)
    targets = np.array([4, 5, 6, 7])
    model.fit(ids, targets, epochs=1, verbose=0)
    path = tmp_path / "narm.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(_scores(restored, ids), _scores(model, ids))
    evaluated = restored.evaluate(ids, targets, verbose=0, return_dict=True)
    assert evaluated == model.evaluate(ids, targets, verbose=0, return_dict=True)
    assert set(evaluated) == {"loss", "recall@20", "mrr@20"}
    restored_outputs = attention_model(restored)(ids)
    np.testing.assert_array_equal(restored_outputs["attention_weights"],
                                  attention_model(model)(ids)["attention_weights"])


def test_global_variant_attention_weights_are_zeros():
    model = build_narm(NUM_ITEMS, variant="global", max_len=5, **SMALL)
    weights = attention_model(model)(_right_padded(ROWS, 5))["attention_weights"]
    np.testing.assert_array_equal(weights, 0.0)


def test_learns_a_synthetic_next_item_rule():
    """Next item = perm(last item): NARM trained with fit reaches Recall@20 > 90%.

    The XLA training of this module. Whole batches only (4096 = 32 x 128 examples trained,
    1024 = 32 x 32 evaluated): XLA compiles a partial last batch again (~8 s for the train
    step, ~3 s for the test step here); test_train's XLA run (its first test) trains with one.
    4096 examples x 4 epochs reach 1.0, 1.0 and 0.999 with seeds 0, 1 and 2."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    num_items, max_len = 200, 5
    successor = rng.permutation(num_items) + 1

    def examples(n):
        lengths = rng.integers(1, max_len + 1, size=n)
        ids = rng.integers(1, num_items + 1, size=(n, max_len))
        ids = np.where(np.arange(max_len)[None] < lengths[:, None], ids, 0).astype("int32")
        return ids, successor[ids[np.arange(n), lengths - 1] - 1]

    model = compile_narm(build_narm(num_items, 16, 32, max_len=max_len), learning_rate=1e-2)
    model.fit(*examples(4096), batch_size=128, epochs=4, verbose=0)
    results = model.evaluate(*examples(1024), verbose=0, return_dict=True)
    assert results["recall@20"] > 0.9, results



def test_default_model_takes_any_width_with_the_same_outputs():
    model = build_narm(NUM_ITEMS, attention="softmax", **SMALL)  # max_len=None: any width
    wide = _right_padded(ROWS, 19)
    for width in (5, 8):
        np.testing.assert_allclose(_scores(model, wide[:, :width]), _scores(model, wide),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_cross_entropy_equals_keras_value_and_gradient(jit_compile):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 41)).astype(np.float32) * 4
    logits[:, 0] = PADDING_SCORE
    labels = rng.integers(1, 41, 6)
    weights = tf.constant(rng.uniform(0.5, 2.0, 6).astype(np.float32))  # a non-unit upstream
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def value_and_gradient(loss):
        @tf.function(jit_compile=jit_compile)
        def run(scores):
            with tf.GradientTape() as tape:
                tape.watch(scores)
                value = loss(tf.constant(labels[:, None]), scores)
                total = tf.reduce_sum(value * weights)
            return value, tape.gradient(total, scores)

        return [t.numpy() for t in run(tf.constant(logits))]

    value, grad = value_and_gradient(cross_entropy)
    expected_value, expected_grad = value_and_gradient(reference)
    np.testing.assert_allclose(value, reference(labels, logits).numpy(), rtol=1e-5)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)
    assert grad[:, 0].max() == 0.0  # the padding column takes no gradient


def test_fit_reports_training_batch_metrics_only_when_asked():
    ids = _right_padded(ROWS, 5)
    targets = np.array([4, 5, 6, 7])
    histories, models = {}, {}
    for train_metrics in (False, True):
        keras.utils.set_random_seed(0)
        # Without XLA (a compile per model costs ~20 s here): the property is the same. The
        # GRU's row sets train builds for these batches (one: fewer loops to trace; each phase
        # adds a forward and a backward loop); test_layers compares the phases.
        model = compile_narm(build_narm(NUM_ITEMS, max_len=5, gru_phases=phases_for(32),
                                        **SMALL),
                             train_metrics=train_metrics, jit_compile=False)
        histories[train_metrics] = model.fit(ids, targets, validation_data=(ids, targets),
                                             epochs=2, verbose=0).history
        models[train_metrics] = model
    validation = {"loss", "val_loss", "val_recall@20", "val_mrr@20"}
    assert set(histories[False]) == validation
    assert set(histories[True]) == validation | {"recall@20", "mrr@20"}
    # Skipping them changes nothing else: same losses, same validation metrics.
    for key in sorted(validation):
        np.testing.assert_allclose(histories[False][key], histories[True][key], rtol=1e-6)
    evaluated = models[False].evaluate(ids, targets, verbose=0, return_dict=True)
    assert evaluated["recall@20"] == pytest.approx(histories[False]["val_recall@20"][-1])


def test_compile_narm_defaults():
    model = compile_narm(build_narm(NUM_ITEMS, max_len=5, **SMALL))
    assert model.jit_compile                          # XLA on a single device
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.loss is cross_entropy
    assert model.steps_per_execution == 16 and not model.train_metrics
    without_xla = compile_narm(build_narm(NUM_ITEMS, max_len=5, **SMALL), jit_compile=False)
    assert not without_xla.jit_compile


def test_steps_per_execution_changes_nothing_but_speed():
    rng = np.random.default_rng(3)
    ids = _right_padded([rng.integers(1, NUM_ITEMS + 1, size=n) for n in
                         rng.integers(1, 6, size=40)], 5)
    targets = rng.integers(1, NUM_ITEMS + 1, size=40)
    histories = {}
    for steps in (1, 3, 16):  # 10 batches an epoch: 16 > 10, and 3 does not divide it
        keras.utils.set_random_seed(0)
        # No XLA compile per model, the GRU's row sets train builds for 4-row batches: the
        # same property, fewer loops to trace (see test_fit_reports_training_batch_metrics_*).
        model = compile_narm(build_narm(NUM_ITEMS, max_len=5, gru_phases=phases_for(4), **SMALL),
                             steps_per_execution=steps, jit_compile=False)
        histories[steps] = model.fit(ids, targets, batch_size=4, epochs=2, shuffle=False,
                                     validation_data=(ids, targets), verbose=0).history
    for steps in (3, 16):
        for key, values in histories[1].items():
            np.testing.assert_allclose(histories[steps][key], values, rtol=1e-5, err_msg=key)
