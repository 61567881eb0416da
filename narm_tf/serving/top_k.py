"""Top-k of the serving graph without the session's own items (`exclude_seen`).

The top-k itself is `narm_tf.model.metrics.top_k` (two short passes over wide rows) and the
re-ranking of candidates `metrics.top_k_among`: evaluation's top-K lists call the same two.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from narm_tf.model.metrics import top_k, top_k_among


def top_k_excluding(logits, indices, session, excluding, k: int, max_len: int):
    """`(top-k logits [b, k], their indices [b, k])` of logits `[b, N+1]`, without the known
    items (`indices [b, L]`, 0 = none) of the rows whose `excluding [b]` is set.

    Every known item a row sent is excluded, however long the row. When no excluding row holds
    more than `max_len` known clicks (the usual request), its compacted `session [b, max_len]`
    holds all of them and the `[b, N+1]` logits are not touched: the top `k + max_len` minus the
    session's items keeps the best k. Otherwise the known items' logits are set to -inf in a
    copy of the logits (one scatter of `[b, L]`) before the top k.
    """
    clicks = tf.reduce_sum(tf.cast(indices > 0, tf.int32), axis=1)
    return tf.cond(tf.reduce_any(excluding & (clicks > max_len)),
                   lambda: _top_k_masked(logits, indices, excluding, k),
                   lambda: _top_k_candidates(logits, session, excluding, k, max_len))


def _top_k_candidates(logits, session, excluding, k, max_len):
    """Top k of the top `k + max_len`, without each excluding row's `session` items."""
    wide_logits, wide_indices = top_k(logits, k + max_len)
    seen = tf.reduce_any(tf.equal(wide_indices[:, :, None], session[:, None, :]), axis=2)
    seen &= excluding[:, None]
    kept_logits = tf.where(seen, tf.constant(-np.inf, logits.dtype), wide_logits)
    return top_k_among(kept_logits, wide_indices, k)


def _top_k_masked(logits, indices, excluding, k):
    """Top k of the logits with every known item of the excluding rows at -inf."""
    rows = tf.broadcast_to(tf.range(tf.shape(indices, out_type=tf.int64)[0])[:, None],
                           tf.shape(indices, out_type=tf.int64))
    # Entries kept (padding, unknown, rows not excluding) hit column 0, which never scores.
    columns = tf.where((indices > 0) & excluding[:, None], indices, 0)
    positions = tf.reshape(tf.stack([rows, columns], axis=-1), [-1, 2])
    masked = tf.tensor_scatter_nd_update(
        logits, positions, tf.fill(tf.shape(positions)[:1], tf.constant(-np.inf, logits.dtype)))
    return top_k(masked, k)
