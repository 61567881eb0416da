"""Non-neural baselines of paper section 4.2 and Ludewig & Jannach (2018), vectorized.

Every method reads the same `Prefixes` as NARM and is scored by the same metric code
(`narm_tf.metrics.target_ranks`, `narm_tf.evaluate.Results`), so the tables compare like with
like:

  POP       most clicked items of the training sessions.
  S-POP     most clicked items of the current session, ties broken by global popularity.
  Item-KNN  items co-occurring with the session's LAST item (paper 4.2): sessions holding
            both / sqrt((sessions holding i + lambda) * (sessions holding j + lambda)).
  SKNN      session kNN: cosine over binary item sets against the `sample_size` most recent
            training sessions sharing an item; k nearest vote with their similarity.
  V-SKNN    SKNN with the prefix's items weighted by position (linear decay, session-rec's
            V-SKNN): dot product of these weights with the neighbour's binary item set.
  SR        sequential rules a -> b (b after a in a session, weight 1 / distance up to
            `steps`), scored from the LAST item and divided by the row maximum.

Fitting data. The baselines have no hyperparameter chosen on held-out data, so they fit on
train + validation (`training_prefixes(train, validation)`), i.e. on all training sessions,
as the reference implementations do; NARM uses the validation split only for early stopping.
The test split is never used for fitting. Training sessions are rebuilt from the prefix
examples (`training_sessions`): a prefix of untruncated length L holds clicks L-19..L-1 and its
label is click L, so the union over a session's examples recovers every click even when the
session is longer than 19. Sessions keep the order of the examples, i.e. session date (the
preprocessing orders examples by session date), which is SKNN's recency. At scoring time a
prefix is what NARM sees: its 19 most recent clicks (S-POP and SKNN ignore older ones).

Ties. The rank rule counts ties against the target, so an item tied with many others (an
unscored item, or one of the many rules of weight 1 from a rare last item) would be ranked last
among them; the reference implementations sort instead, i.e. break ties arbitrarily. `score`
breaks every tie by global popularity, as the paper prescribes for S-POP: it returns ordinal
keys `round(1e9 * raw / row max) + popularity key in [0, 1)`, exact in float64, so unscored
items come after every scored one, in popularity order, and no two items tie (the tie rule
never decides a baseline's rank). `raw_scores` gives each method's own numbers (similarities,
counts, rule weights). Padding scores -inf. A NaN raw score stays NaN, so the row is a miss.

Beyond accuracy. `evaluate` also reports NDCG@k, item coverage@k and popularity bias@k
(`narm_tf.evaluate.Results`) of the top-k lists of `score`, with the training-label counts of
train + validation as popularity, as NARM's metrics.json does.
"""

from __future__ import annotations

import abc
import dataclasses
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from narm_tf import evaluate as _evaluate
from narm_tf.metrics import ranks_numpy, top_k_numpy
from narm_tf.preprocessing import MAX_LEN, Prefixes

SCORE_RESOLUTION = 1e9  # Raw scores closer than 1e-9 of the row maximum count as tied.
ITEMKNN_LAMBDA = 20.0  # Regularization of GRU4Rec's Item-KNN (the paper's reference [12]).
SKNN_NEIGHBORS = 100  # k of session-rec's SKNN default.
SKNN_SAMPLE_SIZE = 500  # Most recent candidate sessions, session-rec default.
SR_STEPS = 10  # Maximum rule distance, session-rec default.
EVAL_BATCH_SIZE = 256


# ---------------------------------------------------------------------- training sessions


@dataclasses.dataclass
class TrainingSessions:
    """Sessions rebuilt from prefixes: clicks of session s are `items[offsets[s]:offsets[s+1]]`."""

    offsets: np.ndarray  # [num_sessions + 1] int64
    items: np.ndarray  # [num_clicks] int64, vocabulary indices 1..N

    @property
    def lengths(self) -> np.ndarray:
        """Clicks per session `[num_sessions]`."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def training_prefixes(train: Prefixes, validation: Prefixes) -> Prefixes:
    """Train + validation examples back in session-date order (what the baselines fit on).

    Sessions keep their order in `train`; a session found only in `validation` is placed right
    after the last train session that precedes it in `validation` (both splits are date ordered).
    """
    train_codes, train_ids = pd.factorize(train.session_ids, sort=False)
    val_codes, val_ids = pd.factorize(validation.session_ids, sort=False)
    shared = pd.Index(train_ids).get_indexer(val_ids)  # [val sessions], -1 if validation only
    anchor = pd.Series(np.where(shared >= 0, shared, np.nan)).ffill().fillna(-1).to_numpy()
    only_val = shared < 0
    # Sort key of a session: (train position, 0) in train, (preceding train position, 1, ...).
    val_major = np.where(only_val, anchor, shared)[val_codes]
    val_minor = np.where(only_val, 1 + np.arange(len(val_ids)), 0)[val_codes]
    major = np.concatenate([train_codes, val_major])
    minor = np.concatenate([np.zeros(len(train)), val_minor])
    lengths = np.concatenate([train.lengths, validation.lengths])
    order = np.lexsort((-lengths, minor, major))
    merged = Prefixes(*(np.concatenate([a, b]) for a, b in zip(
        (train.prefixes, train.labels, train.lengths, train.session_ids),
        (validation.prefixes, validation.labels, validation.lengths, validation.session_ids),
        strict=True)))
    return merged.take(order)


def training_sessions(examples: Prefixes) -> TrainingSessions:
    """Click sequences of the sessions in `examples`, sessions in order of first appearance.

    Example with untruncated length L contributes clicks L-kept..L-1 (its prefix) and L (label).
    """
    codes, _ = pd.factorize(examples.session_ids, sort=False)
    lengths = examples.lengths.astype(np.int64)
    kept = np.minimum(lengths, MAX_LEN)
    columns = np.arange(MAX_LEN)
    valid = columns[None, :] < kept[:, None]  # [n, MAX_LEN]
    position = (lengths - kept)[:, None] + columns[None, :]
    session = np.concatenate([np.broadcast_to(codes[:, None], valid.shape)[valid], codes])
    position = np.concatenate([position[valid], lengths])
    items = np.concatenate([examples.prefixes[valid], examples.labels]).astype(np.int64)
    key = session * (int(position.max(initial=0)) + 1) + position
    _, first = np.unique(key, return_index=True)  # sorted by (session, position)
    counts = np.bincount(session[first], minlength=codes.max(initial=-1) + 1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TrainingSessions(offsets, items[first])


def session_item_matrix(sessions: TrainingSessions, num_items: int, binary: bool) -> sp.csr_matrix:
    """Clicks (or presence if `binary`) of item j in session s: `[num_sessions, N + 1]` CSR."""
    rows = np.repeat(np.arange(len(sessions)), sessions.lengths)
    data = np.ones(len(rows), np.float64)
    matrix = sp.csr_matrix((data, (rows, sessions.items)), shape=(len(sessions), num_items + 1))
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


# --------------------------------------------------------------------------- helpers


def popularity_key(counts: np.ndarray) -> np.ndarray:
    """Unique tie-break key in [0, 1) per item `[N + 1]`: higher for more clicks, then lower id."""
    order = np.lexsort((-np.arange(len(counts)), counts))  # ascending popularity
    key = np.empty(len(counts), np.float64)
    key[order] = np.arange(len(counts)) / len(counts)
    return key


def last_items(prefixes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Most recent click of each prefix `[n]` from right-padded prefixes `[n, MAX_LEN]`."""
    kept = np.minimum(np.asarray(lengths), prefixes.shape[1])
    return prefixes[np.arange(len(prefixes)), kept - 1].astype(np.int64)


def prefix_matrix(prefixes: np.ndarray, num_items: int, binary: bool) -> sp.csr_matrix:
    """Clicks (or presence) of each item in each prefix: `[n, N + 1]` CSR, padding dropped."""
    rows, cols = np.nonzero(prefixes)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, prefixes[rows, cols].astype(np.int64))),
                           shape=(len(prefixes), num_items + 1))
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


def break_ties(raw: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Ordinal scores `[n, N + 1]`: raw order, ties (and unscored items) by popularity key."""
    peak = raw.max(axis=1, keepdims=True)
    levels = np.rint(raw / np.where(peak > 0, peak, 1.0) * SCORE_RESOLUTION)
    scores = np.maximum(levels, 0.0) + key[None, :]
    scores[:, 0] = -np.inf
    return scores


def top_k_rows(matrix: sp.csr_matrix, k: int, tie_key: np.ndarray) -> sp.csr_matrix:
    """Keeps the k largest entries of each row (ties: larger `tie_key[column]` first)."""
    matrix = matrix.tocoo()
    order = np.lexsort((-tie_key[matrix.col], -matrix.data, matrix.row))
    rows = matrix.row[order]
    starts = np.searchsorted(rows, rows, side="left")
    keep = order[np.arange(len(rows)) - starts < k]
    return sp.csr_matrix((matrix.data[keep], (matrix.row[keep], matrix.col[keep])),
                         shape=matrix.shape)


def last_n_per_row(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keeps the n entries of each row with the largest column index (most recent sessions)."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    row_end = np.repeat(matrix.indptr[1:], np.diff(matrix.indptr))
    keep = row_end - 1 - np.arange(matrix.nnz) < n
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[keep]
    return sp.csr_matrix((matrix.data[keep], (rows, matrix.indices[keep])), shape=matrix.shape)


# --------------------------------------------------------------------------- baselines


class Baseline(abc.ABC):
    """Common interface: `fit(examples, num_items)`, then `score(prefixes, lengths)`."""

    name = "baseline"

    def fit(self, examples: Prefixes, num_items: int) -> Baseline:
        """Learns from training examples (date ordered); items are 1..num_items."""
        self.num_items = int(num_items)
        self.sessions = training_sessions(examples)
        counts = np.bincount(self.sessions.items, minlength=self.num_items + 1).astype(float)
        counts[0] = 0.0
        self.item_counts = counts  # [N + 1] clicks per item in the training sessions
        self.popularity = popularity_key(counts)  # [N + 1] in [0, 1), tie breaker
        self._fit()
        return self

    def _fit(self) -> None:  # noqa: B027 - optional hook: POP and S-POP need nothing more.
        """Method-specific statistics, after the common ones are set."""

    @abc.abstractmethod
    def raw_scores(self, prefixes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The method's own scores `[n, N + 1]` (>= 0, 0 = unscored) of prefixes `[n, MAX_LEN]`."""

    def score(self, prefixes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Ranking scores `[n, N + 1]`: raw order, ties by popularity, padding column -inf."""
        return break_ties(self.raw_scores(np.asarray(prefixes), np.asarray(lengths)),
                          self.popularity)


class Pop(Baseline):
    """POP: the most clicked training items, whatever the session (paper 4.2)."""

    name = "pop"

    def raw_scores(self, prefixes, lengths):
        return np.broadcast_to(self.item_counts, (len(prefixes), self.num_items + 1)).copy()


class SessionPop(Baseline):
    """S-POP: clicks of each item in the current prefix, ties by global popularity (paper 4.2)."""

    name = "spop"

    def raw_scores(self, prefixes, lengths):
        return prefix_matrix(prefixes, self.num_items, binary=False).toarray()


class ItemKNN(Baseline):
    """Item-KNN: co-occurrence in sessions with the last item, regularized cosine (paper 4.2).

    sim(i, j) = |S_i & S_j| / sqrt((|S_i| + lambda) * (|S_j| + lambda)), S_i the training
    sessions holding i; sim(i, i) = 0 (the last item is not recommended back by similarity).
    """

    name = "itemknn"

    def __init__(self, regularization: float = ITEMKNN_LAMBDA):
        self.regularization = regularization

    def _fit(self):
        presence = session_item_matrix(self.sessions, self.num_items, binary=True)
        together = (presence.T @ presence).tocsr()  # [N + 1, N + 1] sessions holding both
        together.setdiag(0)
        together.eliminate_zeros()
        support = np.asarray(presence.sum(axis=0)).ravel() + self.regularization  # [N + 1]
        inverse_norm = np.zeros_like(support)
        np.divide(1.0, np.sqrt(support), out=inverse_norm, where=support > 0)
        scale = sp.diags(inverse_norm)
        self.similarity = (scale @ together @ scale).tocsr()

    def raw_scores(self, prefixes, lengths):
        return self.similarity[last_items(prefixes, lengths)].toarray()


class SessionKNN(Baseline):
    """SKNN (Ludewig & Jannach 2018): k nearest recent sessions by cosine over item sets.

    Candidates: the `sample_size` most recent training sessions sharing an item with the prefix.
    sim(q, s) = |q & s| / sqrt(|q| |s|) over distinct items; score(i) = sum of sim over the k
    most similar candidates holding i.
    """

    name = "sknn"

    def __init__(self, k: int = SKNN_NEIGHBORS, sample_size: int = SKNN_SAMPLE_SIZE):
        self.k = k
        self.sample_size = sample_size

    def _fit(self):
        self.presence = session_item_matrix(self.sessions, self.num_items, binary=True)
        self.session_sizes = np.asarray(self.presence.sum(axis=1)).ravel()  # [num_sessions]
        # A session among the M most recent holding ANY prefix item is among the M most recent
        # holding one of them: per item, only its M most recent sessions can be candidates.
        item_sessions = self.presence.T.tocsr()  # [N + 1, num_sessions]
        self.recent_sessions = last_n_per_row(item_sessions, self.sample_size)

    def neighbors(self, query: sp.csr_matrix) -> sp.csr_matrix:
        """Similarity `[n, num_sessions]` to the k nearest of the recent candidate sessions."""
        candidates = last_n_per_row(query @ self.recent_sessions, self.sample_size).tocoo()
        rows, cols = candidates.row, candidates.col
        overlap = np.asarray(query[rows].multiply(self.presence[cols]).sum(axis=1)).ravel()
        similarity = sp.csr_matrix((self._normalize(overlap, query, rows, cols), (rows, cols)),
                                   shape=candidates.shape)
        recency = np.arange(similarity.shape[1], dtype=np.float64)
        return top_k_rows(similarity, self.k, recency)

    def _normalize(self, overlap, query, rows, cols):
        """Cosine: overlap `[m]` of query row `rows` and session `cols` over both set sizes."""
        query_sizes = np.asarray(query.sum(axis=1)).ravel()
        return overlap / np.sqrt(query_sizes[rows] * self.session_sizes[cols])

    def _query(self, prefixes, lengths):
        return prefix_matrix(prefixes, self.num_items, binary=True)

    def raw_scores(self, prefixes, lengths):
        return (self.neighbors(self._query(prefixes, lengths)) @ self.presence).toarray()


def position_weights(prefixes: np.ndarray, lengths: np.ndarray, num_items: int) -> sp.csr_matrix:
    """V-SKNN's query vector `[n, N + 1]`: the click at position p (1-based) of a prefix of L
    kept clicks weighs p / L (linear decay); an item clicked twice keeps its latest weight."""
    kept = np.minimum(np.asarray(lengths), prefixes.shape[1])
    rows, cols = np.nonzero(prefixes)
    items = prefixes[rows, cols].astype(np.int64)
    weights = (cols + 1) / kept[rows]
    key = rows * (num_items + 1) + items
    # np.nonzero runs row-major, so the last occurrence of (row, item) is the latest click.
    _, last = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - last
    return sp.csr_matrix((weights[last], (rows[last], items[last])),
                         shape=(len(prefixes), num_items + 1))


class VectorSessionKNN(SessionKNN):
    """V-SKNN (Ludewig & Jannach 2018, session-rec's `VMContextKNN`, linear decay): SKNN whose
    query weighs each item by its position, sim(q, s) = sum_{i in q & s} p_i / L (no
    normalization); score(i) = sum of sim over the k most similar candidates holding i.

    `score_decay=True`: also session-rec's `div_score`, each neighbour's vote divided by how
    many clicks back (1 = the last) the query's latest item shared with it is.
    """

    name = "vsknn"

    def __init__(self, k: int = SKNN_NEIGHBORS, sample_size: int = SKNN_SAMPLE_SIZE,
                 score_decay: bool = False):
        super().__init__(k, sample_size)
        self.score_decay = score_decay

    def _normalize(self, overlap, query, rows, cols):
        if not self.score_decay:
            return overlap
        # The latest shared click has the largest weight p / L; it is L - p + 1 clicks back.
        latest = query[rows].multiply(self.presence[cols]).max(axis=1).toarray().ravel()
        kept = self._kept[rows]
        return overlap / (np.rint(kept * (1.0 - latest)) + 1.0)

    def raw_scores(self, prefixes, lengths):
        self._kept = np.minimum(np.asarray(lengths), prefixes.shape[1])  # L of each query row
        return super().raw_scores(prefixes, lengths)

    def _query(self, prefixes, lengths):
        return position_weights(prefixes, lengths, self.num_items)


class SequentialRules(Baseline):
    """SR (Ludewig & Jannach 2018): rules a -> b weighted 1/distance, from the last item.

    weight(a, b) = sum over training sessions and positions p < q <= p + steps with x_p = a,
    x_q = b of 1 / (q - p); a prefix scores b by weight(last, b) / max_b' weight(last, b').
    """

    name = "sr"

    def __init__(self, steps: int = SR_STEPS):
        self.steps = steps

    def _fit(self):
        items = self.sessions.items
        session = np.repeat(np.arange(len(self.sessions)), self.sessions.lengths)
        size = self.num_items + 1
        rules = sp.csr_matrix((size, size))
        for distance in range(1, self.steps + 1):  # one vectorized pass per distance
            same = session[distance:] == session[:-distance]
            before, after = items[:-distance][same], items[distance:][same]
            weights = np.full(len(before), 1.0 / distance)
            rules = rules + sp.csr_matrix((weights, (before, after)), shape=(size, size))
        self.rules = rules.tocsr()

    def raw_scores(self, prefixes, lengths):
        scores = self.rules[last_items(prefixes, lengths)].toarray()
        peak = scores.max(axis=1, keepdims=True)
        return scores / np.where(peak > 0, peak, 1.0)


BASELINES = {
    "pop": Pop,
    "spop": SessionPop,
    "itemknn": ItemKNN,
    "sknn": SessionKNN,
    "vsknn": VectorSessionKNN,
    "sr": SequentialRules,
}


# ------------------------------------------------------------------------- evaluation


def results(model: Baseline, examples: Prefixes, k: int = 20,
            batch_size: int = EVAL_BATCH_SIZE,
            popularity: np.ndarray | None = None) -> _evaluate.Results:
    """Rank `[n]` of every example's label under `model` (SPEC section 3) and how many top-k
    lists hold each item, batch by batch; `popularity` `[N]` for the popularity bias."""
    ranks = np.empty(len(examples), np.float64)
    recommended = np.zeros(model.num_items + 1, np.int64)
    for start in range(0, len(examples), batch_size):
        stop = start + batch_size
        scores = model.score(examples.prefixes[start:stop], examples.lengths[start:stop])
        ranks[start:stop] = ranks_numpy(scores, examples.labels[start:stop])
        top = top_k_numpy(scores, k)
        recommended += np.bincount(top.ravel(), minlength=model.num_items + 1)
    return _evaluate.Results(ranks, examples.lengths, k, recommended, popularity)


def evaluate(model: Baseline, test: Prefixes, k: int = 20, batch_size: int = EVAL_BATCH_SIZE,
             popularity: np.ndarray | None = None) -> dict:
    """Recall, MRR, NDCG and coverage @k (fractions in [0, 1]), popularity bias @k (when
    `popularity` `[N]` is given) and the number of test examples."""
    measured = results(model, test, k, batch_size, popularity)
    out = {"recall": measured.recall, "mrr": measured.mrr, "ndcg": measured.ndcg,
           "coverage": measured.coverage}
    if popularity is not None:
        out["popularity_bias"] = measured.popularity_bias
    out["count"] = int(len(test))
    return out


def fit_and_evaluate(name: str, train: Prefixes, validation: Prefixes, test: Prefixes,
                     num_items: int, k: int = 20, **params) -> dict:
    """Fits BASELINES[name] on train + validation, evaluates on test (popularity: the
    training-label counts of train + validation); adds wall seconds."""
    started = time.perf_counter()
    model = BASELINES[name](**params).fit(training_prefixes(train, validation), num_items)
    fitted = time.perf_counter()
    result = evaluate(model, test, k,
                      popularity=_evaluate.label_counts(num_items, train, validation))
    result.update(fit_seconds=fitted - started, eval_seconds=time.perf_counter() - fitted)
    return result
