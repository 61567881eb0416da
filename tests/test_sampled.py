"""narm_tf.model.sampled: the sampled loss against NumPy and TensorFlow's own on fixed
candidates, the proposal's draws, and a real `model.fit --loss=sampled` that learns."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from narm_tf.model import sampled


def _numpy_sampled_loss(query, table, labels, candidates, log_true, log_sampled):
    """The sampled softmax written out: target and candidates' logQ-corrected scores, a
    candidate equal to the row's target removed, then cross-entropy on the target."""
    losses = []
    for row, label in enumerate(labels):
        true = query[row] @ table[label] - log_true[row]
        kept = [query[row] @ table[c] - log_sampled[j]
                for j, c in enumerate(candidates) if c != label]
        logits = np.array([true, *kept], np.float64)
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - true)
    return np.array(losses)


def test_loss_by_hand_with_an_accidental_hit():
    # Query [1, 0]: item scores = first coordinate. Target 1 scores 2, candidates 2 and 3
    # score 1 and 5; candidate 3 is the target of row 1 only. Log expected counts: 0 except
    # candidate 3 (log 4).
    table = np.array([[0, 0], [2, 7], [1, 3], [5, -1]], np.float32)
    query = np.array([[1, 0], [1, 0]], np.float32)
    labels = np.array([1, 3])
    candidates = np.array([2, 3])
    log_true = np.array([0.0, math.log(4)], np.float32)
    log_sampled = np.array([0.0, math.log(4)], np.float32)
    got = sampled.sampled_softmax_loss(query, table, labels, candidates, log_true, log_sampled)
    # Row 0: log(e^2 + e^1 + e^5 / 4) - 2. Row 1: target 5 - log 4, the hit on 3 removed:
    # log(e^(5 - log 4) + e^1) - (5 - log 4).
    row0 = math.log(math.exp(2) + math.exp(1) + math.exp(5) / 4) - 2
    row1 = math.log(math.exp(5) / 4 + math.exp(1)) - (5 - math.log(4))
    np.testing.assert_allclose(got.numpy(), [row0, row1], rtol=1e-5)


def test_loss_matches_numpy_and_tf_nn_sampled_softmax_loss():
    rng = np.random.default_rng(0)
    num_items, dim, batch = 12, 4, 6
    table = rng.normal(size=(num_items + 1, dim)).astype(np.float32)
    query = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = np.array([1, 4, 4, 7, 12, 3])
    candidates = np.array([4, 9, 9, 12, 2, 4, 11])  # duplicates; hits on rows 1, 2, 4
    log_q = np.log(rng.uniform(0.01, 1, size=num_items + 1)).astype(np.float32)
    log_true, log_sampled = log_q[labels], log_q[candidates]
    got = sampled.sampled_softmax_loss(query, table, labels, candidates, log_true, log_sampled)
    want = _numpy_sampled_loss(query, table, labels, candidates, log_true, log_sampled)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    # TensorFlow's op removes one accidental hit per target (it assumes unique candidates,
    # `unique=True` samplers): compared on the candidates without their duplicates.
    unique = np.array([4, 9, 12, 2, 11])
    reference = tf.nn.sampled_softmax_loss(
        weights=table, biases=np.zeros(num_items + 1, np.float32),
        labels=labels[:, None].astype(np.int64), inputs=query, num_sampled=len(unique),
        num_classes=num_items + 1, remove_accidental_hits=True,
        sampled_values=(unique.astype(np.int64), np.exp(log_true)[:, None],
                        np.exp(log_q[unique])))
    got = sampled.sampled_softmax_loss(query, table, labels, unique, log_true, log_q[unique])
    np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-5)


def test_proposal_is_counts_to_the_three_quarters_and_never_padding():
    # Counts 16 and 81 weigh 16^0.75 = 8 and 81^0.75 = 27; count 1 weighs 1: total 36.
    q = sampled.proposal(np.array([50, 1, 16, 81, 0]))
    np.testing.assert_allclose(q, [0, 1 / 36, 8 / 36, 27 / 36, 0])


def test_alias_draws_follow_the_proposal():
    accept, alias = sampled.alias_table(np.array([0, 1, 8, 27, 0]) / 36)
    draw = sampled.SampledSoftmax.draw  # uses only the tables, S and the seed
    holder = type("Tables", (), {"accept": accept, "alias": alias, "num_negatives": 4000,
                                 "seed": 1})()
    items = np.concatenate([draw(holder, step).numpy() for step in range(25)])
    frequencies = np.bincount(items, minlength=5) / len(items)
    assert frequencies[0] == 0 and frequencies[4] == 0
    np.testing.assert_allclose(frequencies, [0, 1 / 36, 8 / 36, 27 / 36, 0], atol=0.01)
    assert not np.array_equal(draw(holder, 0).numpy(), draw(holder, 1).numpy())


def test_lazy_adam_rows_first_step_equals_keras_adam_on_the_summed_gradient():
    rng = np.random.default_rng(2)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    values = rng.normal(size=(4, 3)).astype(np.float32)
    indices = np.array([3, 1, 3, 0])  # row 3 twice: its gradient is the sum
    dense = np.zeros_like(start)
    np.add.at(dense, indices, values)
    reference = keras.Variable(start)
    keras.optimizers.Adam(0.1).apply([dense], [reference])
    table = tf.Variable(start)
    moments = tf.Variable(tf.zeros_like(start)), tf.Variable(tf.zeros_like(start))
    sampled.lazy_adam_rows(table, *moments, tf.IndexedSlices(values, indices), 1, 0.1)
    np.testing.assert_allclose(table.numpy(), np.asarray(reference), atol=1e-5)
    np.testing.assert_array_equal(table.numpy()[[2, 4]], start[[2, 4]])  # untouched rows
    np.testing.assert_allclose(moments[0].numpy(), 0.1 * dense, rtol=1e-6)


def _successor_data(num_items, rows, rng):
    """Prefixes `[rows, 19]` of 1-3 consecutive items; the label is the next item (cyclic)."""
    from narm_tf.data.examples import MAX_LEN

    lengths = rng.integers(1, 4, rows)
    start = rng.integers(1, num_items + 1, rows)
    prefixes = np.zeros((rows, MAX_LEN), np.int32)
    for row, (first, length) in enumerate(zip(start, lengths, strict=True)):
        prefixes[row, :length] = (first - 1 + np.arange(length)) % num_items + 1
    labels = (start - 1 + lengths) % num_items + 1
    return prefixes, labels.astype(np.int32)


def test_fit_with_sampled_loss_learns_and_validates_on_full_ranking():
    from narm_tf.model.narm import build_narm, compile_narm

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    num_items = 200  # POP's Recall@20 on uniform labels: about 20 / 200 = 10%
    train_x, train_y = _successor_data(num_items, 4096, rng)
    valid_x, valid_y = _successor_data(num_items, 512, rng)
    model = build_narm(num_items, embedding_dim=16, hidden_units=32)
    compile_narm(model, learning_rate=1e-2, steps_per_execution=4)
    counts = np.bincount(train_y, minlength=num_items + 1)
    sampled.attach(model, counts, num_negatives=16)
    history = model.fit(train_x, train_y, batch_size=128, epochs=4,
                        validation_data=(valid_x, valid_y), verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_recall@20"][-1] > 0.6  # full ranking over all 200 items


@pytest.mark.parametrize("setting, flag", [
    ({"decoder": "dense"}, "--decoder=dense"),
    ({"train_metrics": True}, "--train_metrics"),
    ({"repeat": True}, "--repeat"),
])
def test_settings_that_do_not_fit_are_refused_by_flag(setting, flag):
    config = {"loss": "sampled", "decoder": "bilinear", **setting}
    with pytest.raises(ValueError, match=flag):
        sampled.check_settings(config)
    sampled.check_settings({**config, "loss": "full"})  # the full softmax takes them all
