"""A co-visitation prior added to a trained model's scores: what session-kNN knows that one
session's GRU state does not hold (beyond the paper).

Why: where the test period differs from the training period, session-kNN (SKNN, STAN) ranks
the targets a session has not clicked yet better than NARM does, and a table of which item
follows which in the training sessions alone ranks them better still (docs/results.md). The
prior brings that table to the model, with a weight chosen on the validation split, so a log
where it does not help gets weight 0 and the model unchanged.

The table (`build_table`): in every training session, each click `a` and each click `b` that
follows it within `WINDOW` clicks add `1 / distance` to `C[a, b]`; the `neighbours` strongest
`b` of each `a` are kept (memory `[N + 1, neighbours]`, bounded at any catalogue size).
A prefix's prior (`CoVisitPrior`): `p_j = sum over its clicks x_t of DECAY^(recency t) C[x_t, j]`
(the last click weighs 1), and the scores become `s_j + weight * log(EPS + p_j / max_j p_j)`.
With `outside` set, the session's own items get the prior's top value: their rank is left to
the model (a repeat-aware model's repeat mode), the prior only orders the other items.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from narm_tf.data.examples import Prefixes
from narm_tf.model.layers import session_items

WINDOW = 3  # clicks after a click that count as co-visited with it
DECAY = 0.7  # weight of a prefix's click per click of recency (the last click weighs 1)
EPS = 0.01  # floor of the normalized prior: an item nobody co-visited scores log(EPS)
NEIGHBOURS = 100  # default `--covisit`: the strongest neighbours kept per item
# `choose_weight`'s grid: prior weights (0 = the model alone) and whether session items are
# left to the model (`outside`). Weight 0 comes first: on ties the model stays as trained.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
LAYER = "covisit_prior"


def sessions_of(prefixes: Prefixes) -> np.ndarray:
    """The sessions behind a split's prefixes: each session's longest prefix with its label
    appended, `[sessions, MAX_LEN + 1]` int32, right-padded with 0 (a session longer than
    MAX_LEN + 1 clicks keeps its last MAX_LEN + 1, as its prefixes do)."""
    if not len(prefixes):
        return np.zeros([0, prefixes.prefixes.shape[1] + 1], np.int32)
    order = np.lexsort((prefixes.lengths, prefixes.session_ids))
    ids = prefixes.session_ids[order]
    longest = order[np.r_[ids[1:] != ids[:-1], True]]
    rows = np.concatenate([prefixes.prefixes[longest],
                           np.zeros([len(longest), 1], np.int32)], axis=1)
    width = np.minimum(prefixes.lengths[longest], prefixes.prefixes.shape[1])
    rows[np.arange(len(longest)), width] = prefixes.labels[longest]
    return rows.astype(np.int32)


def build_table(sessions: np.ndarray, num_items: int, neighbours: int = NEIGHBOURS,
                window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """`(ids [N + 1, neighbours] int32, strengths [N + 1, neighbours] float32)`: for each item
    `a`, the items most often clicked within `window` clicks after it in `sessions`
    (`[n, L]`, right-padded with 0; each co-visit adds 1 / distance), strongest first, ties by
    lower id; unused slots hold id 0 with strength 0."""
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    sessions = np.asarray(sessions, np.int64)
    sources, targets, weights = [], [], []
    for distance in range(1, min(window, sessions.shape[1] - 1) + 1):
        a, b = sessions[:, :-distance].ravel(), sessions[:, distance:].ravel()
        kept = (a > 0) & (b > 0)
        sources.append(a[kept])
        targets.append(b[kept])
        weights.append(np.full(kept.sum(), 1.0 / distance))
    a, b, w = (np.concatenate(part) if part else np.zeros(0) for part in
               (sources, targets, weights))
    if a.size and max(a.max(), b.max()) > num_items:
        raise ValueError(f"a session holds item {int(max(a.max(), b.max()))} but the "
                         f"catalogue has {num_items} items")
    pairs, inverse = np.unique(a.astype(np.int64) * (num_items + 1) + b.astype(np.int64),
                               return_inverse=True)
    strength = np.bincount(inverse, weights=w, minlength=len(pairs))
    source, target = pairs // (num_items + 1), pairs % (num_items + 1)
    order = np.lexsort((target, -strength, source))  # per source: strongest first
    source, target, strength = source[order], target[order], strength[order]
    first = np.searchsorted(source, source)  # index of each source's first pair
    slot = np.arange(len(source)) - first
    kept = slot < neighbours
    ids = np.zeros([num_items + 1, neighbours], np.int32)
    strengths = np.zeros([num_items + 1, neighbours], np.float32)
    ids[source[kept], slot[kept]] = target[kept]
    strengths[source[kept], slot[kept]] = strength[kept]
    return ids, strengths


def prior_scores(item_ids, ids, strengths, weight, outside):
    """`weight * log(EPS + p / max p)` `[batch, N + 1]` of prefixes `item_ids [batch, T]`
    (right-padded with 0) under the table `(ids, strengths)` (module docstring); `outside`
    (bool scalar): the session's own items get the top value, `weight * log(EPS + 1)`."""
    item_ids = tf.cast(item_ids, tf.int32)
    valid = item_ids > 0
    lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True)    # [b, 1]
    recency = lengths - 1 - tf.range(tf.shape(item_ids)[1])[None, :]             # [b, T]
    click_weight = tf.where(valid, tf.pow(DECAY, tf.cast(recency, tf.float32)), 0.0)
    neighbour_ids = tf.gather(ids, item_ids)                                    # [b, T, M]
    contribution = tf.gather(strengths, item_ids) * click_weight[:, :, None]    # [b, T, M]
    batch, num_scores = tf.shape(item_ids)[0], tf.shape(ids)[0]
    rows = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(neighbour_ids))
    indices = tf.reshape(tf.stack([rows, neighbour_ids], axis=-1), [-1, 2])
    prior = tf.scatter_nd(indices, tf.reshape(contribution, [-1]),
                          tf.stack([batch, num_scores]))                         # [b, N + 1]
    prior = prior / tf.maximum(tf.reduce_max(prior, axis=1, keepdims=True), 1e-12)
    prior = tf.where(tf.logical_and(outside, session_items(item_ids, prior)), 1.0, prior)
    return weight * tf.math.log(EPS + prior)


@keras.saving.register_keras_serializable(package="narm_tf")
class CoVisitPrior(keras.layers.Layer):
    """`layer(scores [batch, N + 1], item_ids [batch, T])` -> scores plus the co-visitation
    prior (`prior_scores`). Holds the table and the chosen weight and mode as weights that are
    not trained (saved with the model, served as part of it); weight 0 leaves the scores as
    they are."""

    def __init__(self, num_items: int, neighbours: int = NEIGHBOURS, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.neighbours = int(num_items), int(neighbours)

    def build(self, scores_shape, item_ids_shape=None):
        shape = (self.num_items + 1, self.neighbours)
        self.ids = self.add_weight(shape=shape, dtype="int32", initializer="zeros",
                                   trainable=False, name="neighbour_ids")
        self.strengths = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                         name="neighbour_strengths")
        self.weight = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                      name="prior_weight")
        self.outside = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                       name="session_items_outside")

    def call(self, scores, item_ids):
        prior = prior_scores(item_ids, self.ids, self.strengths, self.weight,
                             self.outside > 0.5)
        return keras.ops.cast(scores, "float32") + prior

    def compute_mask(self, scores, mask=None):
        return None

    def compute_output_shape(self, scores_shape, item_ids_shape=None):
        return tuple(scores_shape)

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items,
                "neighbours": self.neighbours}


def attach(model: keras.Model, ids: np.ndarray, strengths: np.ndarray, weight: float = 0.0,
           outside: bool = False) -> keras.Model:
    """`model` with its scores passed through a `CoVisitPrior` holding the table `(ids,
    strengths)` (`build_table`), `weight` and `outside`: a model of the same class, input and
    declared settings (plus `covisit`: the neighbours kept), sharing `model`'s layers. A model
    that already has the prior gets the new table in place of the old one."""
    from narm_tf.model.narm import NarmModel

    num_items, neighbours = ids.shape[0] - 1, ids.shape[1]
    scores = model.outputs[0]
    if has_prior(model):
        scores = model.get_layer(LAYER).input[0]
    layer = CoVisitPrior(num_items, neighbours, name=LAYER, dtype="float32")
    output = layer(scores, model.inputs[0])
    settings = dict(getattr(model, "narm", None) or {})
    settings["covisit"] = neighbours
    with_prior = NarmModel(model.inputs[0], output, name=model.name, narm=settings)
    layer.ids.assign(ids)
    layer.strengths.assign(strengths)
    set_weight(with_prior, weight, outside)
    return with_prior


def has_prior(model: keras.Model) -> bool:
    """Whether `model` already carries a `CoVisitPrior` (`attach` made it)."""
    return any(layer.name == LAYER for layer in model.layers)


def set_weight(model: keras.Model, weight: float, outside: bool) -> None:
    """Sets the prior's weight and mode of a model `attach` made."""
    layer = model.get_layer(LAYER)
    layer.weight.assign(float(weight))
    layer.outside.assign(1.0 if outside else 0.0)


def choose_weight(model: keras.Model, prefixes: Prefixes, batch_size: int = 1024,
                  weights=WEIGHTS, k: int | None = None) -> dict:
    """Sets the weight and mode of an attached model's prior to the grid point of highest
    Recall@K + MRR@K on held-out `prefixes` (the tuner's objective; the first on ties, weight 0
    first) and returns it with its metrics (fractions) and the whole grid's.

    The model runs once per batch; each grid point only adds its prior to those scores."""
    from narm_tf import config as config_lib
    from narm_tf.model import metrics

    k = k or config_lib.K
    layer = model.get_layer(LAYER)
    base = keras.Model(model.inputs[0], layer.input[0])
    points = [(0.0, False)] + [(w, outside) for outside in (False, True) for w in weights if w]
    ranks = {point: [] for point in points}
    for start in range(0, len(prefixes), batch_size):
        item_ids = prefixes.prefixes[start:start + batch_size]
        labels = prefixes.labels[start:start + batch_size]
        scores = tf.cast(base(item_ids, training=False), tf.float32)
        unit = {outside: prior_scores(item_ids, layer.ids, layer.strengths, 1.0,
                                      tf.constant(outside)) for outside in (False, True)}
        for weight, outside in points:
            ranks[weight, outside].append(
                metrics.ranks_numpy((scores + weight * unit[outside]).numpy(), labels))
    grid, best = [], None
    for weight, outside in points:
        recall, mrr = metrics.recall_mrr_from_ranks(np.concatenate(ranks[weight, outside]), k)
        point = {"weight": weight, "outside": outside, "recall": recall, "mrr": mrr}
        grid.append(point)
        if best is None or recall + mrr > best["recall"] + best["mrr"]:
            best = point
    set_weight(model, best["weight"], best["outside"])
    return {**best, "grid": grid}
