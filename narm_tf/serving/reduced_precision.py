"""An export whose item table is stored and read in bfloat16 (issue 14: serving at 1M items).

At batch 1 the signature's cost is reading the `[N + 1, D]` item table once (200 MB at 1M items,
D=50, in float32). This export keeps only a bfloat16 copy of the table (half the bytes), used
for the session's input embeddings and the bilinear scores (eq. 10: the float32 query rounded
to bfloat16, products accumulated in float32 by `tf.matmul`'s bfloat16 kernel); the rest of the
model stays float32. Plain TF ops: TF Serving loads it as any other export.
Scores differ from the float32 export by bfloat16 rounding (8 bits of mantissa), so near-tied
items may swap in the top-k: `benchmarks/catalog_scale.py` reports the top-20 overlap.

    python -m narm_tf.serving.reduced_precision  (no CLI: call `export_bfloat16`)
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from narm_tf.layers import with_padding_score
from narm_tf.preprocessing import MAX_LEN
from narm_tf.serving import contract, export_lib
from narm_tf.serving.inference import NarmInference
from narm_tf.serving.signatures import ServingModule


class Bfloat16Inference(NarmInference):
    """`NarmInference` reading the item table from a bfloat16 variable (bilinear decoder)."""

    def __init__(self, model: keras.Model):
        super().__init__(model)
        if self.decoder != "bilinear":
            raise ValueError("a bfloat16 item table needs --decoder=bilinear")
        self.table = tf.Variable(tf.cast(self.embeddings, tf.bfloat16), trainable=False,
                                 name="item_embedding_bfloat16")
        self.full_table = self.embeddings
        self.embeddings = None  # never read: the export holds no float32 table

    def __call__(self, item_ids):
        table = tf.convert_to_tensor(self.table)
        embedded = tf.cast(tf.gather(table, tf.transpose(item_ids)), tf.float32)
        valid = item_ids > 0
        lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        states = self._gru_states(embedded)
        final = tf.gather(states, tf.maximum(lengths - 1, 0), batch_dims=1)
        session, weights, share = self._session(states, final, valid)
        query = tf.cast(tf.matmul(session, self.decoder_kernel), tf.bfloat16)
        scores = tf.matmul(query, table, transpose_b=True)
        return with_padding_score(tf.cast(scores, tf.float32)), weights, share

    def _session(self, states, final, valid):
        from narm_tf.layers import attend, attention_share

        if self.variant == "global":
            weights = tf.zeros_like(tf.cast(valid, tf.float32))
            return final, weights, weights
        local, weights = attend(states, final, self.attention, valid, self.normalize)
        share = attention_share(weights, states, valid)
        session = local if self.variant == "local" else tf.concat([final, local], 1)
        return session, weights, share


def export_bfloat16(model: keras.Model, vocabulary: np.ndarray, popularity: np.ndarray,
                    export_base: str, version: int | None = None, k: int = 20,
                    max_len: int = MAX_LEN) -> str:
    """`export_lib.export_model` with the item table in bfloat16; returns the version folder."""
    vocabulary = np.asarray(vocabulary, np.int64)

    def write(temp_dir):
        with tempfile.TemporaryDirectory() as staging:
            vocabulary_file = os.path.join(staging, contract.VOCABULARY_ASSET)
            with open(vocabulary_file, "w") as f:
                f.writelines(f"{item_id}\n" for item_id in vocabulary)
            module = ServingModule(model, vocabulary, popularity, vocabulary_file, k, False,
                                   max_len)
            inference = Bfloat16Inference(model)
            object.__setattr__(module, "inference", inference)
            # Saved variables: the model's without its float32 table, and the bfloat16 one.
            module._variables = [v for v in module._variables
                                 if v is not inference.full_table] + [inference.table]
            object.__setattr__(module, "_scoring_model", _NoKerasFallback())
            tf.saved_model.save(module, temp_dir, signatures=module.signatures())
        export_lib.write_warmup_requests(temp_dir, vocabulary, popularity)

    return export_lib.write_new_version(export_base, version, write)


class _NoKerasFallback:
    """Stands in for the Keras scoring graph, which the bfloat16 export never runs."""

    def _flatten_layers(self):
        return []
