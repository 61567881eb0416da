"""narm_tf.serving.reduced_precision: the bfloat16-table export, loaded with the TF1 loader
(what TF Serving uses), against the float32 export of the same model."""

import os

import keras
import numpy as np
import tensorflow as tf

from narm_tf.model import build_narm
from narm_tf.serving import export_lib, reduced_precision

NUM_ITEMS, DIM = 500, 50


def _top_k_through_tf1_loader(export_dir, raw_ids):
    session = tf.compat.v1.Session(graph=tf.Graph())
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    signature = meta.signature_def["int64_ids"]
    return session.run(signature.outputs["top_k_item_ids"].name,
                       {signature.inputs["item_ids"].name: raw_ids})


def _saved_tables(export_dir):
    """dtypes of the saved variables shaped as the item table `[N + 1, D]`."""
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return sorted(dtypes[name].name for name, shape in shapes.items()
                  if shape == [NUM_ITEMS + 1, DIM])


def test_bfloat16_export_agrees_with_float32_and_holds_no_float32_table(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_narm(NUM_ITEMS, embedding_dim=DIM)
    vocabulary = 1000 + np.arange(NUM_ITEMS)
    popularity = np.arange(NUM_ITEMS) + 1
    full = export_lib.export_model(model, vocabulary, popularity, str(tmp_path / "f32"))
    half = reduced_precision.export_bfloat16(model, vocabulary, popularity,
                                             str(tmp_path / "bf16"))
    raw_ids = vocabulary[np.random.default_rng(0).integers(0, NUM_ITEMS, (64, 5))]
    raw_ids[:, 3:] = 0  # padded sessions too
    want = _top_k_through_tf1_loader(full, raw_ids)
    got = _top_k_through_tf1_loader(half, raw_ids)
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(want, got, strict=True)])
    assert overlap >= 0.95  # bfloat16 rounding swaps near-tied items only
    assert (got[:, 0] == want[:, 0]).mean() >= 0.9
    assert _saved_tables(full) == ["float32"]
    assert _saved_tables(half) == ["bfloat16"]  # no float32 copy saved
    size = {d: os.path.getsize(os.path.join(d, "variables", "variables.data-00000-of-00001"))
            for d in (full, half)}
    assert size[half] < size[full] - (NUM_ITEMS + 1) * DIM * 2 * 0.9  # 2 bytes a value saved
