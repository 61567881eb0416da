"""narm_tf/serving/inference.py: the lean serving pass equals the Keras model for every model
setting (scores, attention weights and their share, which the Keras fallback's `scoring_model`
gives too), and refuses, naming why, a model it cannot reproduce.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from narm_tf.model.layers import PADDING_SCORE
from narm_tf.model.narm import ATTENTIONS, DECODERS, VARIANTS, attention_model, build_narm
from narm_tf.serving.inference import NarmInference, UnsupportedModel
from narm_tf.serving.signatures import scoring_model

NUM_ITEMS, MAX_LEN = 90, 19


def right_padded(rng, batch, lengths=None):
    lengths = rng.integers(1, MAX_LEN + 1, batch) if lengths is None else np.asarray(lengths)
    items = rng.integers(1, NUM_ITEMS + 1, (batch, MAX_LEN))
    return np.where(np.arange(MAX_LEN) < lengths[:, None], items, 0).astype(np.int32)


@pytest.mark.parametrize("variant,decoder,attention",
                         list(itertools.product(VARIANTS, DECODERS, ATTENTIONS)))
def test_matches_keras_model(variant, decoder, attention):
    keras.utils.set_random_seed(3)
    model = build_narm(NUM_ITEMS, embedding_dim=8, hidden_units=12, variant=variant,
                       decoder=decoder, attention=attention, max_len=MAX_LEN)
    # Non-zero biases, so that a misplaced input/recurrent bias would show.
    gru = model.get_layer("gru").cell
    gru.bias.assign(np.random.default_rng(0).normal(size=gru.bias.shape).astype(np.float32))
    rng = np.random.default_rng(1)
    x = right_padded(rng, 40, lengths=np.r_[1, MAX_LEN, rng.integers(1, MAX_LEN + 1, 38)])
    expected = attention_model(model)(x, training=False)
    keras_share = scoring_model(model)(x, training=False)["attention_share"].numpy()
    scores, weights, share = NarmInference(model)(tf.constant(x))
    np.testing.assert_allclose(scores.numpy()[:, 1:], expected["scores"].numpy()[:, 1:],
                               atol=1e-5, rtol=1e-5)
    assert np.all(scores.numpy()[:, 0] < PADDING_SCORE / 2)
    np.testing.assert_allclose(weights.numpy(), expected["attention_weights"].numpy(),
                               atol=1e-6)
    assert np.all(weights.numpy()[x == 0] == 0)
    # The share of c_l per click, from the Keras model's GRU states in NumPy.
    states = np.asarray(keras.Model(model.inputs[0], model.get_layer("gru").output[0])(x))
    contribution = np.abs(weights.numpy()) * np.linalg.norm(states, axis=-1) * (x > 0)
    for found in (share.numpy(), keras_share):  # the lean pass, the Keras graph's fallback
        if variant == "global":
            np.testing.assert_array_equal(found, 0.0)
        else:
            np.testing.assert_allclose(found, contribution / contribution.sum(1)[:, None],
                                       atol=1e-6)
            np.testing.assert_allclose(found.sum(1), 1.0, rtol=1e-5)


def test_holds_the_models_variables_not_copies():
    model = build_narm(NUM_ITEMS, embedding_dim=8, hidden_units=12)
    inference = NarmInference(model)
    x = tf.constant(right_padded(np.random.default_rng(2), 4))
    before = inference(x)[0].numpy()
    table = model.get_layer("item_embedding").embeddings
    table.assign(table.numpy() * 2.0)
    after = inference(x)[0].numpy()
    assert not np.allclose(before[:, 1:], after[:, 1:])
    np.testing.assert_allclose(after[:, 1:], model(x, training=False).numpy()[:, 1:], atol=1e-5)


def test_refuses_what_it_does_not_reproduce():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_narm(NUM_ITEMS, embedding_dim=8, hidden_units=12)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    with pytest.raises(UnsupportedModel, match="bfloat16"):
        NarmInference(model)


def test_refuses_a_model_that_does_not_declare_its_parts():
    model = build_narm(NUM_ITEMS, embedding_dim=8, hidden_units=12, variant="global")
    assert model.narm == {"variant": "global", "decoder": "bilinear",
                          "attention": "unnormalized"}
    with pytest.raises(UnsupportedModel, match="declares no NARM settings"):
        NarmInference(keras.Model(model.inputs, model.outputs))     # built by hand
    model.narm = {**model.narm, "variant": "hybrid"}    # a part it does not hold (or renamed)
    with pytest.raises(UnsupportedModel, match="has no layer 'attention'"):
        NarmInference(model)


def test_undeclared_model_is_served_through_the_keras_graph(tmp_path):
    """A model NarmInference cannot reproduce is exported and served by its Keras graph: the
    same top-k, scores and attention as the declared model's lean pass and as Keras."""
    from narm_tf.serving import contract, export_lib
    from narm_tf.serving.signatures import ServingModule

    keras.utils.set_random_seed(5)
    model = build_narm(NUM_ITEMS, embedding_dim=8, hidden_units=12, max_len=MAX_LEN)
    undeclared = keras.Model(model.inputs, model.outputs, name="by_hand")  # same weights
    vocabulary = np.arange(1, NUM_ITEMS + 1, dtype=np.int64) * 10 + 3
    popularity = np.arange(NUM_ITEMS) + 1
    path = export_lib.export_model(undeclared, vocabulary, popularity, str(tmp_path), k=5)
    served = tf.saved_model.load(path).signatures[contract.SIGNATURE_INT64]
    x = right_padded(np.random.default_rng(6), 6)
    raw = np.where(x > 0, vocabulary[np.maximum(x, 1) - 1], 0)
    out = {name: value.numpy() for name, value in served(item_ids=tf.constant(raw)).items()}
    lean = ServingModule(model, vocabulary, popularity, path + "/assets/vocabulary.txt", 5,
                         False, MAX_LEN)
    assert lean.inference is not None
    assert ServingModule(undeclared, vocabulary, popularity, path + "/assets/vocabulary.txt", 5,
                         False, MAX_LEN).inference is None
    expected = lean.recommend(tf.constant(raw), None)
    for name in contract.OUTPUTS:
        np.testing.assert_allclose(out[name], expected[name].numpy(), atol=1e-5, err_msg=name)
    logits = model(x, training=False).numpy()
    top = np.argsort(-logits[:, 1:], axis=1, kind="stable")[:, :5] + 1   # column 0: padding
    np.testing.assert_array_equal(out["top_k_item_ids"], vocabulary[top - 1])
