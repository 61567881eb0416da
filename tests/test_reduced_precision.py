"""narm_tf.serving.reduced_precision: the bfloat16 and two-stage exports of a trained model,
loaded by an isolated process through the TF1 loader (as TF Serving loads them, signature tensors
only), against the float32 export of the same model."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_export import serve_isolated

from narm_tf import synthetic_scale
from narm_tf.data import dataset as data
from narm_tf.model.narm import build_narm, compile_narm
from narm_tf.serving import contract, export_lib, reduced_precision

NUM_ITEMS, DIM, K = 2000, 16, 20
TWO_STAGE = {"candidate_dims": 4, "candidates": 48}  # 4 of 16 dimensions, 48 of 2,000 items


@pytest.fixture(scope="module")
def trained():
    """(model, vocabulary, popularity, test sessions [512, 19] raw ids): NARM after one epoch
    on the synthetic catalogue log (Zipf popularity, latent intents), so its item table has
    the structure of a trained one."""
    train, test = synthetic_scale.make_splits(NUM_ITEMS, 3000, 200, seed=0)
    keras.utils.set_random_seed(0)
    model = compile_narm(build_narm(NUM_ITEMS, embedding_dim=DIM, hidden_units=DIM),
                         jit_compile=False)
    model.fit(data.make_dataset(train, 256, shuffle=True, seed=0), epochs=1, verbose=0)
    vocabulary = 10**9 + 7 * np.arange(NUM_ITEMS, dtype=np.int64)
    popularity = np.bincount(train.labels, minlength=NUM_ITEMS + 1)[1:]
    sessions = np.where(test.prefixes > 0, vocabulary[np.maximum(test.prefixes - 1, 0)], 0)
    return model, vocabulary, popularity, sessions[:512]


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """{scoring name: {"plain": outputs, "exclude": outputs}} from the isolated process, for the
    exact, bfloat16 and two-stage exports and a two-stage export whose candidates are the whole
    catalogue; and the export folders."""
    model, vocabulary, popularity, sessions = trained
    base = tmp_path_factory.mktemp("exports")
    settings = {"exact": {"scoring": "exact"}, "bfloat16": {"scoring": "bfloat16"},
                "two_stage": {"scoring": "two_stage", **TWO_STAGE},
                "all_candidates": {"scoring": "two_stage", "candidate_dims": 2,
                                   "candidates": NUM_ITEMS}}
    folders = {name: export_lib.export_model(model, vocabulary, popularity, str(base / name),
                                             k=K, **kwargs)
               for name, kwargs in settings.items()}
    flags = np.ones(len(sessions), bool)
    jobs = {folder: {(name, "plain"): (contract.SIGNATURE_INT64, {"item_ids": sessions}),
                     (name, "exclude"): (contract.SIGNATURE_INT64_OPTIONS,
                                         {"item_ids": sessions, "exclude_seen": flags})}
            for name, folder in folders.items()}
    results = serve_isolated(jobs, tmp_path_factory.mktemp("serve"))
    outputs = {name: {how: results[(name, how)] for how in ("plain", "exclude")}
               for name in folders}
    return outputs, folders


def overlap(a, b):
    """Mean share of the top-k ids two exports agree on, per session."""
    return np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)])


def _saved_tables(export_dir):
    """{dtype: shapes} of the saved variables with one row per item or more (`[N(+1), *]`)."""
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return sorted((dtypes[name].name, tuple(shape)) for name, shape in shapes.items()
                  if shape and shape[0] >= NUM_ITEMS)


@pytest.mark.parametrize("how", ["plain", "exclude"])
def test_reduced_exports_agree_with_float32(served, how):
    outputs, _ = served
    exact = outputs["exact"][how]
    for name, least in (("bfloat16", 0.98), ("two_stage", 0.99)):
        got = outputs[name][how]
        # Measured: bfloat16 99.7% (99.5% excluding), two_stage 100% of the top 20.
        assert overlap(exact["top_k_item_ids"], got["top_k_item_ids"]) >= least, name
    # Two-stage scores are exact float32 ones: a shared item has the same probability.
    got = outputs["two_stage"][how]
    for want_ids, want, ids, scores in zip(exact["top_k_item_ids"], exact["top_k_scores"],
                                           got["top_k_item_ids"], got["top_k_scores"],
                                           strict=True):
        wanted = dict(zip(want_ids, want, strict=True))
        pairs = np.array([(wanted[i], s) for i, s in zip(ids, scores, strict=True)
                          if i in wanted])
        # Only the normalizer is approximate (measured: relative error <= 8.5e-4).
        np.testing.assert_allclose(pairs[:, 1], pairs[:, 0], rtol=2e-3)


def test_two_stage_over_every_item_is_the_exact_export(served):
    outputs, _ = served
    for how in ("plain", "exclude"):
        want, got = outputs["exact"][how], outputs["all_candidates"][how]
        np.testing.assert_array_equal(got["top_k_item_ids"], want["top_k_item_ids"])
        np.testing.assert_allclose(got["top_k_scores"], want["top_k_scores"], rtol=1e-4)
        np.testing.assert_allclose(got["attention_weights"], want["attention_weights"],
                                   atol=1e-6)


def test_excluded_sessions_get_none_of_their_items(served, trained):
    outputs, _ = served
    sessions = trained[3]
    for name in ("bfloat16", "two_stage"):
        ids = outputs[name]["exclude"]["top_k_item_ids"]
        assert not any(set(row) & set(session[session > 0])
                       for row, session in zip(ids, sessions, strict=True)), name
        assert (ids > 0).all()  # 48 candidates hold at least 20 unseen items


def test_saved_tables(served):
    _, folders = served
    n, d, r = NUM_ITEMS, DIM, TWO_STAGE["candidate_dims"]
    assert _saved_tables(folders["exact"]) == [("float32", (n + 1, d))]
    assert _saved_tables(folders["bfloat16"]) == [("bfloat16", (n + 1, d))]  # no float32 copy
    # The float32 table (gathers of the candidates) and the [N, r] bfloat16 candidate table.
    assert _saved_tables(folders["two_stage"]) == [("bfloat16", (n, r)), ("float32", (n + 1, d))]


def test_log_partition_against_numpy():
    approximate = np.array([[1.0, 2.0, 0.5, -1.0]], np.float32)  # items 1..4
    # Candidates: items 2 and 1 (approximate 2.0 and 1.0), exact scores 2.5 and 0.0.
    got = reduced_precision.log_partition(tf.constant(approximate), tf.constant([[2.0, 1.0]]),
                                          tf.constant([[2.5, 0.0]]))
    want = np.log(np.exp(2.5) + np.exp(0.0) + np.exp(0.5) + np.exp(-1.0))
    np.testing.assert_allclose(got.numpy(), [want], rtol=1e-6)


def test_bad_settings_are_refused(trained, tmp_path):
    model = trained[0]
    with pytest.raises(ValueError, match="--candidate_dims.*16"):
        reduced_precision.make_inference(model, "two_stage", candidate_dims=17)
    with pytest.raises(ValueError, match="--scoring"):
        reduced_precision.make_inference(model, "int4")
    dense = build_narm(30, embedding_dim=4, hidden_units=4, decoder="dense")
    with pytest.raises(ValueError, match="--decoder=bilinear"):
        reduced_precision.make_inference(dense, "two_stage")
    vocabulary, popularity = trained[1], trained[2]
    with pytest.raises(ValueError, match="--candidates=10 is below --k=20"):
        export_lib.export_model(model, vocabulary, popularity, str(tmp_path / "e"),
                                scoring="two_stage", candidates=10)
    assert not os.listdir(tmp_path)
