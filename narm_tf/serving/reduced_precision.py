"""Exports that read less of the item table per request (serving catalogues of millions of items).

At batch 1 the signature's cost is reading the `[N + 1, D]` item table once for the bilinear
scores (eq. 10): 200 MB at 1M items and D=50 in float32, about 20 ms at this machine's ~10 GB/s.
`export_model(..., scoring=...)` offers, beside `exact` (float32, the default):

- `bfloat16`: the export keeps only a bfloat16 copy of the table (half the bytes), used for the
  input embeddings and the scores (the float32 query rounded to bfloat16). Near-tied items may
  swap in the top k (8 bits of mantissa).
- `two_stage`: candidates from a low-rank bfloat16 table, re-scored exactly. The table is
  rotated onto its principal axes (eigenvectors of `E^T E`, so scores `E q` are unchanged); the
  first `candidate_dims` coordinates of every item, in bfloat16, give approximate scores that
  pick `candidates` items (`16 / 50` of the float32 bytes at the defaults); those are re-scored
  in float32 with the full table (a gather of `candidates` rows), and the top k of those exact
  scores is returned. An item of the exact top k is lost only if its approximate score falls
  outside the candidates. The probabilities' normalizer sums the exact scores of the candidates
  and the approximate scores of the rest.

Plain TF ops: TF Serving loads these as any other export. `benchmarks/catalog_scale.py
--tasks=serve` reports their latency and top-20 agreement with `exact`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from narm_tf.model.layers import with_padding_score
from narm_tf.model.metrics import top_k, top_k_among
from narm_tf.serving.inference import NarmInference

SCORINGS = ("exact", "bfloat16", "two_stage")
CANDIDATE_DIMS = 16
CANDIDATES = 512


def make_inference(model: keras.Model, scoring: str, candidate_dims: int = CANDIDATE_DIMS,
                   candidates: int = CANDIDATES) -> NarmInference | None:
    """The serving pass of `scoring` (None for `exact`: the signature module's default)."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring (--scoring) must be one of {SCORINGS}, got {scoring!r}")
    if scoring == "exact":
        return None
    if scoring == "bfloat16":
        return Bfloat16Inference(model)
    return TwoStageInference(model, candidate_dims, candidates)


class Bfloat16Inference(NarmInference):
    """`NarmInference` reading the item table from a bfloat16 variable (bilinear decoder); the
    export saves no float32 table."""

    def __init__(self, model: keras.Model):
        super().__init__(model)
        _check_bilinear(self, "bfloat16")
        self.table = tf.Variable(tf.cast(self.embeddings, tf.bfloat16), trainable=False,
                                 name="item_embedding_bfloat16")
        self.full_table = self.embeddings

    def __call__(self, item_ids):
        table = tf.convert_to_tensor(self.table)
        session, weights, share = self.encode(item_ids, table)
        scores = tf.matmul(tf.cast(self.query(session), tf.bfloat16), table, transpose_b=True)
        return with_padding_score(tf.cast(scores, tf.float32)), weights, share

    def saved_variables(self, model_variables):
        return [v for v in model_variables if v is not self.full_table] + [self.table]


class TwoStageInference(NarmInference):
    """Top k by exact float32 scores among the `candidates` items a low-rank bfloat16 table
    scores highest (module docstring). `ranked` replaces the full `[b, N + 1]` scores."""

    def __init__(self, model: keras.Model, candidate_dims: int, candidates: int):
        super().__init__(model)
        _check_bilinear(self, "two_stage")
        items = np.asarray(self.embeddings.numpy()[1:], np.float64)  # [N, D], no padding row
        if not 1 <= candidate_dims <= items.shape[1]:
            raise ValueError(f"candidate_dims (--candidate_dims) must be in [1, "
                             f"{items.shape[1]}] (the embedding dimension), got {candidate_dims}")
        if candidates < 1:
            raise ValueError(f"candidates (--candidates) must be >= 1, got {candidates}")
        eigenvalues, eigenvectors = np.linalg.eigh(items.T @ items)  # ascending
        basis = eigenvectors[:, ::-1][:, :candidate_dims]           # [D, r], largest first
        self.energy = float(eigenvalues[::-1][:candidate_dims].sum() / eigenvalues.sum())
        self.candidates = min(candidates, len(items))
        self.basis = tf.Variable(basis.astype(np.float32), trainable=False,
                                 name="candidate_basis")
        self.coarse = tf.Variable(tf.cast((items @ basis).astype(np.float32), tf.bfloat16),
                                  trainable=False, name="candidate_table")   # [N, r]

    def saved_variables(self, model_variables):
        return model_variables + [self.basis, self.coarse]

    def ranked(self, item_ids, indices, excluding, k: int):
        """`(top logits [b, k], their vocabulary indices [b, k], probabilities [b, k],
        attention weights, attention share)`; `excluding [b]` (or None) drops each such row's
        known items `indices [b, L]` from the candidates."""
        table = tf.convert_to_tensor(self.embeddings)
        session, weights, share = self.encode(item_ids, table)
        query = self.query(session)                                              # [b, D]
        reduced = tf.cast(tf.matmul(query, self.basis), tf.bfloat16)              # [b, r]
        approximate = tf.cast(tf.matmul(reduced, tf.convert_to_tensor(self.coarse),
                                        transpose_b=True), tf.float32)            # [b, N]
        approximate_top, picked = top_k(approximate, self.candidates)             # [b, C]
        candidates = picked + 1                                       # vocabulary indices
        exact = tf.einsum("bcd,bd->bc", tf.gather(table, candidates), query)      # [b, C]
        log_z = log_partition(approximate, approximate_top, exact)
        kept = exact
        if excluding is not None:
            seen = tf.reduce_any(tf.equal(candidates[:, :, None], indices[:, None, :]), axis=2)
            kept = tf.where(seen & excluding[:, None], tf.constant(-np.inf), exact)
        top_logits, top_indices = top_k_among(kept, candidates, min(k, self.candidates))
        probabilities = tf.exp(top_logits - log_z[:, None])
        return top_logits, top_indices, probabilities, weights, share


def log_partition(approximate, approximate_candidates, exact_candidates):
    """`log sum_i exp(s_i)` over all items `[b]`, with `s_i` exact for the candidates and
    approximate for the rest: `approximate [b, N]`, the candidates' approximate and exact
    scores `[b, C]`."""
    top = tf.maximum(tf.reduce_max(approximate, axis=1), tf.reduce_max(exact_candidates, axis=1))
    shift = top[:, None]
    exact_sum = tf.reduce_sum(tf.exp(exact_candidates - shift), axis=1)
    rest = (tf.reduce_sum(tf.exp(approximate - shift), axis=1)
            - tf.reduce_sum(tf.exp(approximate_candidates - shift), axis=1))
    return top + tf.math.log(exact_sum + tf.maximum(rest, 0.0))


def _check_bilinear(inference: NarmInference, scoring: str) -> None:
    if inference.decoder != "bilinear":
        raise ValueError(f"--scoring={scoring} needs a model with --decoder=bilinear (the "
                         f"dense decoder has no item table to score with), got "
                         f"{inference.decoder!r}")
