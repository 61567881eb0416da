"""Tests for narm_tf.layers: shared embedding + bilinear decode (eq. 10), attention (eq. 6-8)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from narm_tf.layers import (
    PADDING_SCORE,
    ItemEmbedding,
    NarmAttention,
    NarmGRU,
    PaddingScoreMask,
    PhiloxDropout,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _attention_numpy(h, mask, a1, a2, v, normalize):
    """Eq. 6-8 in NumPy: h [b, T, H], mask [b, T] -> (c_l [b, H], alpha [b, T])."""
    h_t = h[np.arange(len(h)), mask.sum(1) - 1]               # final state = last valid step
    alpha = (_sigmoid((h_t @ a1)[:, None, :] + h @ a2) @ v)[..., 0]
    if normalize == "softmax":
        alpha = np.where(mask, np.exp(alpha - alpha.max(1, keepdims=True)), 0.0)
        alpha = alpha / alpha.sum(1, keepdims=True)
    alpha = np.where(mask, alpha, 0.0)
    return (alpha[..., None] * h).sum(1), alpha


def test_decode_scores_every_item_with_the_input_embedding():
    layer = ItemEmbedding(11, 4, mask_zero=True)
    ids = np.array([[3, 1, 0]], "int32")
    embedded = layer(ids)
    query = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    scores = keras.ops.convert_to_numpy(layer(query, mode="decode"))
    table = keras.ops.convert_to_numpy(layer.embeddings)
    assert len(layer.weights) == 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(embedded)[0, 0], table[3])
    np.testing.assert_allclose(scores[:, 1:], (query @ table.T)[:, 1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores[:, 0], PADDING_SCORE)
    assert layer.compute_mask(query) is None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.compute_mask(ids)),
                                  [[True, True, False]])


def test_decode_gradient_reaches_the_embedding():
    layer = ItemEmbedding(11, 4)
    layer.build()
    query = tf.constant(np.ones((2, 4), "float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.softmax(layer(query, mode="decode"))[:, 5])
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings))
    assert np.abs(grad.numpy()[5]).sum() > 0
    np.testing.assert_array_equal(grad.numpy()[0], 0.0)     # padding never scores


def test_decode_rejects_unknown_mode():
    layer = ItemEmbedding(5, 2)
    with pytest.raises(ValueError, match="embed"):
        layer(np.ones((1, 2), "float32"), mode="score")


def test_padding_score_mask_only_touches_column_zero():
    scores = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    masked = keras.ops.convert_to_numpy(PaddingScoreMask()(scores))
    np.testing.assert_array_equal(masked[:, 1:], scores[:, 1:])
    np.testing.assert_array_equal(masked[:, 0], PADDING_SCORE)


@pytest.mark.parametrize("normalize", [None, "softmax"])
def test_attention_equals_numpy_eq_6_to_8(normalize):
    rng = np.random.default_rng(2)
    batch, max_len, hidden, units = 3, 5, 4, 6
    h = rng.normal(size=(batch, max_len, hidden)).astype("float32")
    mask = np.arange(max_len)[None, :] < np.array([[5], [2], [1]])
    layer = NarmAttention(units=units, normalize=normalize)
    a1, a2, v = (rng.normal(size=s).astype("float32") for s in
                 [(hidden, units), (hidden, units), (units, 1)])
    layer.build(h.shape, (batch, hidden))
    layer.set_weights([a1, a2, v])
    final_state = h[np.arange(batch), mask.sum(1) - 1]
    local, alpha = layer(h, final_state, mask=mask)
    want_local, want_alpha = _attention_numpy(h, mask, a1, a2, v, normalize)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(alpha), want_alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(local), want_local, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", [None, "softmax"])
def test_attention_ignores_appended_padding(normalize):
    rng = np.random.default_rng(3)
    h = rng.normal(size=(2, 3, 4)).astype("float32")
    garbage = rng.normal(size=(2, 4, 4)).astype("float32") * 100
    mask = np.array([[True, True, False], [True, True, True]])
    longer_mask = np.concatenate([mask, np.zeros((2, 4), bool)], axis=1)
    layer = NarmAttention(normalize=normalize)
    local, alpha = layer(h, h[:, 0], mask=mask)
    local2, alpha2 = layer(np.concatenate([h, garbage], 1), h[:, 0], mask=longer_mask)
    np.testing.assert_allclose(local2, local, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha2)[:, :3], alpha, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(alpha2)[:, 3:], 0.0)
    np.testing.assert_array_equal(np.asarray(alpha)[0, 2], 0.0)


def test_attention_config_round_trip():
    layer = NarmAttention(units=7, normalize="softmax", name="attention")
    clone = NarmAttention.from_config(layer.get_config())
    assert (clone.units, clone.normalize, clone.name) == (7, "softmax", "attention")
    with pytest.raises(ValueError, match="normalize"):
        NarmAttention(normalize="sparsemax")


def test_philox_dropout_is_inverted_dropout():
    layer = PhiloxDropout(0.25, seed=1)
    inputs = np.ones((64, 19, 50), "float32")
    np.testing.assert_array_equal(layer(inputs, training=False), inputs)
    step = tf.function(lambda x: layer(x, training=True), jit_compile=True)
    first, second = step(inputs).numpy(), step(inputs).numpy()
    assert set(np.unique(first)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((first == 0).mean() - 0.25) < 0.01
    assert (first != second).any()                          # fresh noise every step


def _gru_outputs(layer, inputs, mask, jit_compile):
    """(sequence, final state, gradients of a weighted sum w.r.t. inputs and weights)."""
    weights = tf.constant(np.linspace(0.5, 1.5, layer.units, dtype="float32"))

    @tf.function(jit_compile=jit_compile)
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            sequence, final = layer(x, mask=mask)
            total = tf.reduce_sum(sequence * weights) + tf.reduce_sum(final)
        return [sequence, final, *tape.gradient(total, [x, *layer.trainable_variables])]

    return [t.numpy() for t in run(tf.constant(inputs))]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("rows,row_blocks", [(7, 2), (7, 3), (1, 2), (6, 1)])
def test_narm_gru_equals_keras_gru(rows, row_blocks, jit_compile):
    rng = np.random.default_rng(rows + row_blocks)
    lengths = rng.integers(1, 6, size=rows)
    mask = tf.constant(np.arange(5)[None, :] < lengths[:, None])    # right-padded, never empty
    inputs = rng.normal(size=(rows, 5, 3)).astype("float32")
    keras_gru = keras.layers.GRU(4, return_sequences=True, return_state=True)
    narm_gru = NarmGRU(4, row_blocks=row_blocks, return_sequences=True, return_state=True)
    for layer in (keras_gru, narm_gru):
        layer(inputs[:1], mask=mask[:1])
    # Non-zero biases, so both bias rows are exercised.
    narm_gru.set_weights([w + rng.normal(size=w.shape).astype("float32")
                          for w in keras_gru.get_weights()])
    keras_gru.set_weights(narm_gru.get_weights())
    expected = _gru_outputs(keras_gru, inputs, mask, jit_compile)
    found = _gru_outputs(narm_gru, inputs, mask, jit_compile)
    for name, a, b in zip(["sequence", "final", "d_inputs", "d_kernel", "d_recurrent", "d_bias"],
                          found, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    # The final state is the state at each row's last click.
    np.testing.assert_allclose(found[1], found[0][np.arange(rows), lengths - 1], atol=1e-6)


def test_narm_gru_config_and_bad_row_blocks():
    layer = NarmGRU(4, row_blocks=3, return_sequences=True)
    assert NarmGRU.from_config(layer.get_config()).row_blocks == 3
    with pytest.raises(ValueError, match="row_blocks"):
        NarmGRU(4, row_blocks=0)
