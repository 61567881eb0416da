"""Tests for narm_tf.model.layers: shared embedding + bilinear decode (eq. 10), attention (eq. 6-8),
and narm_tf.model.gru: the GRU step and NarmGRU's CPU loop against Keras' GRU."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from narm_tf.model.layers import (
    PADDING_SCORE,
    ItemEmbedding,
    NarmAttention,
    NarmGRU,
    PaddingScoreMask,
    PhiloxDropout,
    attention_share,
    bilinear_scores,
    session_representation,
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


@pytest.mark.parametrize("padding_in_product", [True, False])
def test_bilinear_scores_by_hand(padding_in_product):
    """Both ways of adding the padding score (training's, serving's) give eq. 10's scores."""
    table = tf.constant([[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [1.0, -1.0]])   # row 0: padding
    query = tf.constant([[2.0, 3.0], [-1.0, 0.5]])
    scores = bilinear_scores(query, table, padding_in_product=padding_in_product).numpy()
    np.testing.assert_allclose(scores[:, 1:], [[2.0, 6.0, -1.0], [-1.0, 1.0, -1.5]])
    np.testing.assert_allclose(scores[:, 0], PADDING_SCORE, rtol=1e-6)


def test_gru_step_equals_keras_gru_cell():
    """One `gru_step` on the cell's own weights is the step of `keras.layers.GRUCell`."""
    from narm_tf.model.gru import gru_step

    cell = keras.layers.GRUCell(4)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 5)).astype("float32")
    h = rng.normal(size=(3, 4)).astype("float32")
    cell.build((3, 5))
    cell.bias.assign(rng.normal(size=cell.bias.shape).astype("float32"))
    expected, _ = cell(x, [h])
    projected = x @ cell.kernel.numpy() + cell.bias.numpy()[0]
    found, _ = gru_step(projected[:, :8], projected[:, 8:], tf.constant(h),
                        cell.recurrent_kernel, cell.bias[1])
    np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


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


def test_attention_share_by_hand():
    """|alpha_j| ||h_j|| normalized over clicks: hand-computed on a 2-session batch."""
    alpha = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], "float32")
    h = np.array([[[3.0, 4.0], [0.0, 1.0], [9.0, 9.0]],            # norms 5, 1, (padding)
                  [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], "float32")
    mask = np.array([[True, True, False], [True, False, False]])
    share = keras.ops.convert_to_numpy(attention_share(alpha, h, mask))
    # Row 0: |0.5| * 5 = 2.5 and |-1| * 1 = 1 of 3.5; padding 0. Row 1: alpha all 0 -> zeros.
    np.testing.assert_allclose(share, [[2.5 / 3.5, 1 / 3.5, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("normalize", [None, "softmax"])
def test_attention_share_equals_numpy(normalize):
    rng = np.random.default_rng(5)
    batch, max_len, hidden = 4, 6, 3
    h = rng.normal(size=(batch, max_len, hidden)).astype("float32")
    mask = np.arange(max_len)[None, :] < np.array([[6], [3], [1], [2]])
    layer = NarmAttention(normalize=normalize)
    _, alpha = layer(h, h[np.arange(batch), mask.sum(1) - 1], mask=mask)
    alpha = keras.ops.convert_to_numpy(alpha)
    contribution = np.abs(alpha) * np.linalg.norm(h, axis=-1) * mask
    expected = contribution / contribution.sum(1, keepdims=True)
    share = keras.ops.convert_to_numpy(attention_share(alpha, h, mask))
    np.testing.assert_allclose(share, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-5)
    assert np.all(share[~mask] == 0) and np.all(share >= 0)
    # In a Keras functional graph (symbolic tensors) it gives the same.
    inputs = [keras.Input((max_len,)), keras.Input((max_len, hidden)), keras.Input((max_len,))]
    symbolic = keras.Model(inputs, attention_share(inputs[0], inputs[1], inputs[2] > 0))
    np.testing.assert_allclose(symbolic([alpha, h, mask.astype("float32")]), expected,
                               rtol=1e-5, atol=1e-7)


def test_session_representation_of_each_variant():
    """The variants' one wiring (build_narm and serving's lean pass): h_t, c_l, [h_t; c_l]; the
    global variant never attends."""
    final, local, alpha = tf.fill([2, 3], 1.0), tf.fill([2, 4], 2.0), tf.fill([2, 5], 0.5)
    calls = []

    def attend():
        calls.append(1)
        return local, alpha

    session, weights = session_representation("global", final, attend)
    assert weights is None and not calls
    np.testing.assert_array_equal(session, final)
    session, weights = session_representation("local", final, attend)
    np.testing.assert_array_equal(session, local)
    np.testing.assert_array_equal(weights, alpha)
    session, _ = session_representation("hybrid", final, attend)
    np.testing.assert_array_equal(session, [[1, 1, 1, 2, 2, 2, 2]] * 2)
    joined, _ = session_representation("hybrid", final, attend, join=lambda parts: parts)
    assert joined[0] is final and joined[1] is local and len(calls) == 3


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


def _padding_mask(rng, rows, steps, layout):
    """[rows, steps] bool: right-padded (never empty), left-padded, holes, or with empty rows."""
    lengths = rng.integers(1, steps + 1, size=rows)
    right = np.arange(steps)[None, :] < lengths[:, None]
    if layout == "right":
        return right
    if layout == "left":
        return right[:, ::-1].copy()
    if layout == "holes":
        return right & (rng.random((rows, steps)) < 0.7) | (np.arange(steps) == 0)[None, :]
    right[::3] = False                                       # every third row empty
    return right


def _paired_grus(rng, **narm_kwargs):
    """A Keras GRU and a NarmGRU with the same (non-zero bias) weights."""
    keras_gru = keras.layers.GRU(4, return_sequences=True, return_state=True)
    narm_gru = NarmGRU(4, return_sequences=True, return_state=True, **narm_kwargs)
    for layer in (keras_gru, narm_gru):
        layer(np.zeros((1, 5, 3), "float32"))
    # Non-zero biases, so both bias rows are exercised.
    narm_gru.set_weights([w + rng.normal(size=w.shape).astype("float32")
                          for w in keras_gru.get_weights()])
    keras_gru.set_weights(narm_gru.get_weights())
    return keras_gru, narm_gru


def _assert_same_gru_outputs(found, expected):
    for name, a, b in zip(["sequence", "final", "d_inputs", "d_kernel", "d_recurrent", "d_bias"],
                          found, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


_KERAS_REFERENCES = {}  # (rows, phases, row_blocks, layout) -> a case and Keras' outputs


def _keras_reference(rows, phases, row_blocks, layout):
    """(mask, inputs, the NarmGRU, Keras' GRU outputs with its weights without XLA): one
    case, made and run once for both jit_compile cases (one Keras trace less each)."""
    key = (rows, phases, row_blocks, layout)
    if key not in _KERAS_REFERENCES:
        rng = np.random.default_rng(rows + 10 * phases + row_blocks)
        mask = tf.constant(_padding_mask(rng, rows, 5, layout))
        inputs = rng.normal(size=(rows, 5, 3)).astype("float32")
        keras_gru, narm_gru = _paired_grus(rng, phases=phases, row_blocks=row_blocks)
        _KERAS_REFERENCES[key] = (mask, inputs, narm_gru,
                                  _gru_outputs(keras_gru, inputs, mask, False))
    return _KERAS_REFERENCES[key]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("rows,phases,row_blocks,layout", [
    (7, 4, 1, "right"), (7, 3, 2, "right"), (7, 1, 1, "right"), (1, 4, 1, "right"),
    (9, 8, 1, "left"), (9, 4, 2, "holes"), (9, 4, 1, "empty rows")])
def test_narm_gru_equals_keras_gru(rows, phases, row_blocks, layout, jit_compile):
    # The reference: Keras' own GRU, no XLA, on the same weights and inputs in both cases.
    mask, inputs, narm_gru, expected = _keras_reference(rows, phases, row_blocks, layout)
    found = _gru_outputs(narm_gru, inputs, mask, jit_compile)
    _assert_same_gru_outputs(found, expected)
    if layout == "right":
        # The final state is the state at each row's last click.
        lengths = mask.numpy().sum(axis=1)
        np.testing.assert_allclose(found[1], found[0][np.arange(rows), lengths - 1], atol=1e-6)


def test_narm_gru_with_unknown_batch_and_length():
    """Shapes unknown when traced (a last partial batch, length-bucketed widths) still work."""
    rng = np.random.default_rng(3)
    keras_gru, narm_gru = _paired_grus(rng)
    signature = [tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None], tf.bool)]
    functions = {}
    for name, layer in [("keras", keras_gru), ("narm", narm_gru)]:
        @tf.function(input_signature=signature)
        def run(x, m, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                sequence, final = layer(x, mask=m)
                total = tf.reduce_sum(sequence * 0.5) + tf.reduce_sum(final)
            return [sequence, final, *tape.gradient(total, [x, *layer.trainable_variables])]

        functions[name] = run
    for rows, steps in [(6, 5), (3, 2)]:  # both shapes through the one trace of each function
        mask = tf.constant(_padding_mask(rng, rows, steps, "right"))
        inputs = rng.normal(size=(rows, steps, 3)).astype("float32")
        outputs = {name: [t.numpy() for t in run(tf.constant(inputs), mask)]
                   for name, run in functions.items()}
        _assert_same_gru_outputs(outputs["narm"], outputs["keras"])
    assert all(run.experimental_get_tracing_count() == 1 for run in functions.values())


def test_narm_gru_skips_padded_steps():
    """With right padding, a batch of short rows costs fewer loop steps than its width."""
    rng = np.random.default_rng(4)
    _, narm_gru = _paired_grus(rng, phases=2)
    inputs = tf.constant(rng.normal(size=(4, 5, 3)).astype("float32"))
    # Two rows of length 5, two of length 1: phase 2 (the longest half) runs steps 1..4 alone.
    mask = tf.constant(np.arange(5)[None, :] < np.array([5, 1, 5, 1])[:, None])
    graph = tf.function(lambda x, m: narm_gru(x, mask=m)).get_concrete_function(
        inputs, mask).graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    assert len(loops) == 2                                  # one forward loop per phase
    sequence, final = narm_gru(inputs, mask=mask)
    np.testing.assert_allclose(sequence.numpy()[[1, 3], 1:], np.repeat(
        final.numpy()[[1, 3], None], 4, axis=1), atol=1e-6)   # done rows repeat their state


def test_narm_gru_config_and_bad_arguments():
    layer = NarmGRU(4, phases=3, row_blocks=2, return_sequences=True)
    clone = NarmGRU.from_config(layer.get_config())
    assert (clone.phases, clone.row_blocks) == (3, 2)
    with pytest.raises(ValueError, match="row_blocks"):
        NarmGRU(4, row_blocks=0)
    with pytest.raises(ValueError, match="phases"):
        NarmGRU(4, phases=0)
