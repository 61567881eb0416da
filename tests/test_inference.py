"""export/inference.py: the lean serving pass equals the Keras model for every model setting
(scores, attention weights and their share, which the Keras fallback's `scoring_model` gives too).
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from export.export_saved_model import scoring_model
from export.inference import NarmInference, UnsupportedModel
from narm_tf.layers import PADDING_SCORE
from narm_tf.model import ATTENTIONS, DECODERS, VARIANTS, attention_model, build_narm

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
    # The share of c_l per click (issue 11.5), from the Keras model's GRU states in NumPy.
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
