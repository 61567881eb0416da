"""Non-neural baselines of paper section 4.2 and Ludewig & Jannach (2018), vectorized.

Every method reads the same `Prefixes` as NARM and is scored by the same metric code
(`narm_tf.model.metrics.target_ranks`, `narm_tf.evaluate.Results`), so the tables compare like with
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
  STAN      session kNN with three exponential decays (Garg et al. 2019, session-rec's
            `STAN`): the prefix's clicks by how far back they are (lambda_spw), neighbour
            sessions by age (lambda_snh, days), a neighbour's items by their distance to its
            latest click shared with the prefix (lambda_inh).
  VSTAN     STAN plus V-SKNN's ideas (Ludewig et al. 2021, session-rec's `VSKNN_STAN`): each
            neighbour's votes decayed by how far back the prefix's latest click it shares is
            (lambda_ipw) and each item's weighted by IDF (lambda_idf).

Fitting data. A baseline's settings are fixed (session-rec's defaults) or chosen beforehand on
the validation split (`select_params`, fitted on train alone); the model scored on test then
fits on train + validation (`training_prefixes(train, validation)`), i.e. on all training
sessions, as the reference implementations do; NARM uses validation for early stopping.
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
train + validation as popularity, as NARM's metrics.json does, and every figure by kind of
target (`narm_tf.model.metrics.metrics_by_kind`: repeat / new, head / torso / tail).

Session dates (STAN, VSTAN). A neighbour's age needs session dates, which the built datasets
do not hold (a prefix has items, label, length and session id). `fit(..., session_dates=...)`
takes them when the caller has the raw clicks (`session_days`); without them the session order
(the examples are in session-date order) stands in for time: the training sessions are spread
evenly over `proxy_span_days` days. Only neighbours' ages relative to each other matter: the
query's own date multiplies all of its neighbours' weights by one factor, which changes no
ranking, so every prefix is dated at the most recent training session.

Presets and selection. `PRESETS` holds session-rec's published tuned settings of STAN and VSTAN
(each with its source file); `select_params` picks one (or a `grid` point) on the validation
split: it fits on train alone and ranks the validation prefixes, never the test split.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from narm_tf import evaluate as _evaluate
from narm_tf.data.examples import MAX_LEN, Prefixes
from narm_tf.model.metrics import metrics_by_kind, ranks_numpy, top_k_numpy

SCORE_RESOLUTION = 1e9  # Raw scores closer than 1e-9 of the row maximum count as tied.
ITEMKNN_LAMBDA = 20.0  # Regularization of GRU4Rec's Item-KNN (the paper's reference [12]).
SKNN_NEIGHBORS = 100  # k of session-rec's SKNN default.
SKNN_SAMPLE_SIZE = 500  # Most recent candidate sessions, session-rec default.
SR_STEPS = 10  # Maximum rule distance, session-rec default.
STAN_SAMPLE_SIZE = 5000  # Candidate sessions of session-rec's STAN and VSTAN by default.
PROXY_SPAN_DAYS = 7.0  # Days the training sessions span when their dates are unknown.
SECONDS_PER_DAY = 86_400
EVAL_BATCH_SIZE = 256


# ---------------------------------------------------------------------- training sessions


@dataclasses.dataclass
class TrainingSessions:
    """Sessions rebuilt from prefixes: clicks of session s are `items[offsets[s]:offsets[s+1]]`."""

    offsets: np.ndarray  # [num_sessions + 1] int64
    items: np.ndarray  # [num_clicks] int64, vocabulary indices 1..N
    session_ids: np.ndarray | None = None  # [num_sessions] int64 (the examples' session ids)

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
    codes, ids = pd.factorize(examples.session_ids, sort=False)
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
    return TrainingSessions(offsets, items[first], np.asarray(ids, np.int64))


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

    def fit(self, examples: Prefixes, num_items: int,
            session_dates: pd.Series | None = None) -> Baseline:
        """Learns from training examples (date ordered); items are 1..num_items.

        session_dates: date in days of each training session, indexed by session id
        (`session_days`); only STAN and VSTAN use it (see the module docstring).
        """
        self.num_items = int(num_items)
        self.session_dates = session_dates
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
        """Similarity `[n, num_sessions]` to the k nearest of the recent candidate sessions.

        Candidates: sessions sharing an item held by `query` (a stored weight of 0 included).
        """
        holds = query.copy()
        holds.data[:] = 1.0
        candidates = last_n_per_row(holds @ self.recent_sessions, self.sample_size).tocoo()
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


def session_days(clicks: pd.DataFrame, date_unit_seconds: int = 1) -> pd.Series:
    """Date in days of each session, its latest click, indexed by session id (STAN's session
    recency) from a raw clicks frame with columns session_id and date (`read_log`)."""
    return clicks.groupby("session_id")["date"].max() * (date_unit_seconds / SECONDS_PER_DAY)


def last_position_matrix(sessions: TrainingSessions, num_items: int) -> sp.csr_matrix:
    """Latest 1-based position of item j in session s, `[num_sessions, N + 1]` CSR (sorted)."""
    rows = np.repeat(np.arange(len(sessions)), sessions.lengths)
    positions = np.arange(len(rows)) - sessions.offsets[rows] + 1
    key = rows * (num_items + 1) + sessions.items
    order = np.lexsort((positions, key))
    last = order[np.r_[key[order][1:] != key[order][:-1], True]]  # the latest of each key
    return sp.csr_matrix((positions[last].astype(np.float64), (rows[last], sessions.items[last])),
                         shape=(len(sessions), num_items + 1))


def prefix_positions(prefixes: np.ndarray, lengths: np.ndarray,
                     num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Latest 1-based position of each item among each prefix's kept clicks `[n, N + 1]`
    (0 = absent) and the number of kept clicks `[n]`."""
    kept = np.minimum(np.asarray(lengths), prefixes.shape[1]).astype(np.int64)
    rows, cols = np.nonzero(prefixes)
    positions = np.zeros((len(prefixes), num_items + 1), np.int32)
    np.maximum.at(positions, (rows, prefixes[rows, cols].astype(np.int64)), cols + 1)
    return positions, kept


def expand_rows(matrix: sp.csr_matrix, rows: np.ndarray):
    """The stored entries of `matrix[rows[p]]` for every p: (p, column, value) arrays, rows'
    entries one after another, and where each p's entries start."""
    starts, counts = matrix.indptr[rows], np.diff(matrix.indptr)[rows]
    begin = np.concatenate([[0], np.cumsum(counts)])[:-1]
    owner = np.repeat(np.arange(len(rows)), counts)
    entry = np.arange(counts.sum()) - begin[owner] + starts[owner]
    return owner, matrix.indices[entry], matrix.data[entry], begin


def _check_decays(**decays) -> None:
    """A decay constant is a positive number, or None/0/False to switch its weighting off."""
    for name, value in decays.items():
        if value is not None and not (isinstance(value, int | float) and value >= 0):
            raise ValueError(f"{name} must be a number > 0 (or None to switch it off); "
                             f"got {value!r}")


def _decay(distance: np.ndarray, constant) -> np.ndarray:
    """exp(-distance / constant), or ones when the decay is off (constant None/0/False)."""
    if not constant:
        return np.ones(np.shape(distance))
    return np.exp(-np.asarray(distance, np.float64) / constant)


class SpatioTemporalKNN(SessionKNN):
    """STAN (Garg et al., SIGIR 2019), as session-rec's `algorithms/knn/stan.py` defines it.

    Query: item i of the prefix weighs w_i = exp(-b_i / lambda_spw), b_i = how many clicks
    back its latest click is (0 = the last; all w_i = 1 when lambda_spw is off).
    Candidates: SKNN's, the `sample_size` most recent sessions sharing an item.
    sim(q, s) = sum_{i in q & s} w_i / (sqrt(sum_{i in q} w_i^2) sqrt(|s|)) (|s| distinct
    items) * exp(-age_s / lambda_snh), age_s in days before the most recent training session.
    score(j) = sum over the k most similar s holding j of sim(q, s) *
    exp(-|p_s(j) - p_s*| / lambda_inh), p_s(j) the latest position of j in s and p_s* that of
    s's latest click on an item of the prefix. `remind=False` leaves the prefix's own items
    unscored. session-rec's other options are not offered: `sampling` other than 'recent'
    (random) and `extend` (test sessions joining the training data while evaluating).
    """

    name = "stan"

    def __init__(self, k: int = SKNN_NEIGHBORS, sample_size: int = STAN_SAMPLE_SIZE,
                 lambda_spw: float | None = 1.02, lambda_snh: float | None = 5.0,
                 lambda_inh: float | None = 2.05, remind: bool = True,
                 proxy_span_days: float = PROXY_SPAN_DAYS):
        super().__init__(k, sample_size)
        _check_decays(lambda_spw=lambda_spw, lambda_snh=lambda_snh, lambda_inh=lambda_inh,
                      proxy_span_days=proxy_span_days)
        self.lambda_spw, self.lambda_snh, self.lambda_inh = lambda_spw, lambda_snh, lambda_inh
        self.remind = remind
        self.proxy_span_days = proxy_span_days

    def _fit(self):
        super()._fit()
        self.last_position = last_position_matrix(self.sessions, self.num_items)
        days = self._session_days()
        self.recency = _decay(days.max(initial=0.0) - days, self.lambda_snh)  # [num_sessions]

    def _session_days(self) -> np.ndarray:
        """Date in days of each training session `[num_sessions]`: `session_dates`, or the
        session order spread evenly over `proxy_span_days` days."""
        count = len(self.sessions)
        if self.session_dates is None:
            return np.arange(count) * (self.proxy_span_days / max(count - 1, 1))
        days = pd.Series(self.session_dates).reindex(self.sessions.session_ids)
        if days.isna().any():
            missing = self.sessions.session_ids[days.isna().to_numpy()][0]
            raise ValueError(f"session_dates has no date for training session {missing}: "
                             f"pass the date (days) of every training session")
        return days.to_numpy(np.float64)

    def _normalize(self, overlap, query, rows, cols):
        """Cosine of the weighted query and the neighbour's item set, times its recency."""
        norm = np.sqrt(np.asarray(query.multiply(query).sum(axis=1)).ravel())
        return overlap / (norm[rows] * np.sqrt(self.session_sizes[cols])) * self.recency[cols]

    def raw_scores(self, prefixes, lengths):
        positions, kept = prefix_positions(prefixes, lengths, self.num_items)
        rows, items = np.nonzero(positions)
        weights = _decay(kept[rows] - positions[rows, items], self.lambda_spw)
        query = sp.csr_matrix((weights, (rows, items)), shape=positions.shape)  # zeros kept
        return self._votes(self.neighbors(query).tocoo(), positions, kept)

    def _votes(self, neighbors: sp.coo_matrix, positions: np.ndarray,
               kept: np.ndarray) -> np.ndarray:
        """Scores `[n, N + 1]`: each neighbour's similarity spread over its distinct items."""
        scores = np.zeros(positions.shape)
        if neighbors.nnz == 0:
            return scores
        rows = neighbors.row
        pair, items, where, begin = expand_rows(self.last_position, neighbors.col)
        in_query = positions[rows[pair], items]  # latest position in the prefix, 0 = absent
        anchor = np.maximum.reduceat(np.where(in_query > 0, where, 0), begin)  # p_s*
        latest = np.maximum.reduceat(in_query, begin)  # the prefix's latest shared click
        votes = (neighbors.data * self._neighbor_weights(kept[rows] - latest))[pair]
        votes = votes * _decay(np.abs(where - anchor[pair]), self.lambda_inh)
        votes = votes * self._item_weights(items)
        if not self.remind:
            votes[in_query > 0] = 0.0
        flat = rows[pair] * positions.shape[1] + items
        return np.bincount(flat, votes, minlength=scores.size).reshape(scores.shape)

    def _neighbor_weights(self, back: np.ndarray) -> np.ndarray:
        """Factor of each neighbour's votes given how far back the prefix's latest click it
        shares is `[pairs]`: none in STAN."""
        return 1.0

    def _item_weights(self, items: np.ndarray) -> np.ndarray:
        """Factor of each vote for an item: none in STAN."""
        return 1.0


class VectorSpatioTemporalKNN(SpatioTemporalKNN):
    """VSTAN (Ludewig et al. 2021), as session-rec's `algorithms/knn/vstan.py` (`VSKNN_STAN`)
    defines it: STAN whose vote of neighbour s for item j is also multiplied by
    exp(-b_s / lambda_ipw), b_s how many clicks back the prefix's latest click on an item of s
    is (V-SKNN's sequence-aware scoring), and by 1 + lambda_idf * log(S / clicks_j) (IDF over
    the S training sessions and item j's training clicks). session-rec's `similarity` option
    is not offered: its VSTAN accepts it but always computes the cosine (as here).
    """

    name = "vstan"

    def __init__(self, k: int = SKNN_NEIGHBORS, sample_size: int = STAN_SAMPLE_SIZE,
                 lambda_spw: float | None = 1.02, lambda_snh: float | None = 5.0,
                 lambda_inh: float | None = 2.05, lambda_ipw: float | None = 1.02,
                 lambda_idf: float | None = 5.0, remind: bool = True,
                 proxy_span_days: float = PROXY_SPAN_DAYS):
        super().__init__(k, sample_size, lambda_spw, lambda_snh, lambda_inh, remind,
                         proxy_span_days)
        _check_decays(lambda_ipw=lambda_ipw, lambda_idf=lambda_idf)
        self.lambda_ipw, self.lambda_idf = lambda_ipw, lambda_idf

    def _fit(self):
        super()._fit()
        idf = np.zeros_like(self.item_counts)
        seen = self.item_counts > 0
        idf[seen] = np.log(len(self.sessions) / self.item_counts[seen])
        self.idf = idf  # [N + 1]

    def _neighbor_weights(self, back):
        return _decay(back, self.lambda_ipw)

    def _item_weights(self, items):
        if not self.lambda_idf:
            return 1.0
        return 1.0 + self.lambda_idf * self.idf[items]


BASELINES = {
    "pop": Pop,
    "spop": SessionPop,
    "itemknn": ItemKNN,
    "sknn": SessionKNN,
    "vsknn": VectorSessionKNN,
    "sr": SequentialRules,
    "stan": SpatioTemporalKNN,
    "vstan": VectorSpatioTemporalKNN,
}

# session-rec's published tuned settings: its saved experiment configurations (conf/save/...)
# name two per method and data set, "<method>-hr" tuned for HitRate@20 (our Recall@20) and
# "<method>-mrr" for MRR@20; here "<data>-recall" and "<data>-mrr". rsc15 is YOOCHOOSE (full,
# 1/4 or 1/64 of it), "window" the sliding-window protocol. 1e-5 is session-rec's "almost 0".
STAN_PRESETS = {
    # conf/save/rsc15_64/single_rsc15_64_stan.yml
    "rsc15_64-recall": dict(k=500, sample_size=5000, lambda_spw=1, lambda_snh=10, lambda_inh=1),
    "rsc15_64-mrr": dict(k=1500, sample_size=10000, lambda_spw=1e-5, lambda_snh=2.5,
                         lambda_inh=4),
    # conf/save/rsc15_4/single split/single_rsc15_4_stan.yml
    "rsc15_4-recall": dict(k=1000, sample_size=2500, lambda_spw=0.5, lambda_snh=5,
                           lambda_inh=2),
    "rsc15_4-mrr": dict(k=2000, sample_size=10000, lambda_spw=1e-5, lambda_snh=2.5,
                        lambda_inh=2),
    # conf/save/rsc15/window/window_rsc15_stan.yml
    "rsc15-window-recall": dict(k=1000, sample_size=10000, lambda_spw=0.5, lambda_snh=20,
                                lambda_inh=0.5),
    "rsc15-window-mrr": dict(k=1000, sample_size=10000, lambda_spw=1e-5, lambda_snh=10,
                             lambda_inh=2),
    # conf/save/diginetica/single split/single_digi_stan.yml
    "diginetica-recall": dict(k=500, sample_size=2500, lambda_spw=2.5, lambda_snh=80,
                              lambda_inh=5),
    "diginetica-mrr": dict(k=500, sample_size=5000, lambda_spw=1.25, lambda_snh=80,
                           lambda_inh=5),
    # conf/save/diginetica/window/window_digi_stan.yml
    "diginetica-window-recall": dict(k=100, sample_size=5000, lambda_spw=2.45, lambda_snh=20,
                                     lambda_inh=9.8),
    "diginetica-window-mrr": dict(k=500, sample_size=10000, lambda_spw=1.225, lambda_snh=20,
                                  lambda_inh=4.9),
    # conf/save/retailrocket/window/window_retailr_stan.yml
    "retailrocket-window-recall": dict(k=200, sample_size=5000, lambda_spw=3.62,
                                       lambda_snh=100, lambda_inh=7.24),
    "retailrocket-window-mrr": dict(k=500, sample_size=1000, lambda_spw=1.81, lambda_snh=100,
                                    lambda_inh=0.4525),
}
# Sets marked 'vec' say similarity: 'vec' in session-rec, which its VSTAN ignores (cosine).
VSTAN_PRESETS = {
    # conf/save/rsc15_4/single split/single_rsc15_4_vstan.yml
    "rsc15_4-recall": dict(k=1500, sample_size=10000, lambda_spw=4, lambda_snh=5, lambda_inh=4,
                           lambda_ipw=1, lambda_idf=5),
    "rsc15_4-mrr": dict(k=1500, sample_size=5000, lambda_spw=1e-5, lambda_snh=5, lambda_inh=2,
                        lambda_ipw=4, lambda_idf=5),  # 'vec'
    # conf/save/rsc15/single/single_rsc15_vstan.yml
    "rsc15-recall": dict(k=2000, sample_size=2500, lambda_spw=8, lambda_snh=10, lambda_inh=8,
                         lambda_ipw=0.5, lambda_idf=2),  # 'vec'
    "rsc15-mrr": dict(k=1000, sample_size=5000, lambda_spw=4, lambda_snh=5, lambda_inh=4,
                      lambda_ipw=1e-5, lambda_idf=1),
    # conf/save/rsc15/window/window_rsc15_vstan.yml
    "rsc15-window-recall": dict(k=2000, sample_size=10000, lambda_spw=4, lambda_snh=20,
                                lambda_inh=0.5, lambda_ipw=1, lambda_idf=2),
    "rsc15-window-mrr": dict(k=1500, sample_size=10000, lambda_spw=0.5, lambda_snh=5,
                             lambda_inh=2, lambda_ipw=2, lambda_idf=2),
    # conf/save/diginetica/single split/single_digi_vstan.yml
    "diginetica-recall": dict(k=1500, sample_size=10000, lambda_spw=5, lambda_snh=80,
                              lambda_inh=5, lambda_ipw=5, lambda_idf=1),
    "diginetica-mrr": dict(k=1500, sample_size=5000, lambda_spw=1.25, lambda_snh=100,
                           lambda_inh=10, lambda_ipw=10, lambda_idf=10),
    # conf/save/diginetica/window/window_digi_vstan.yml
    "diginetica-window-recall": dict(k=100, sample_size=1000, lambda_spw=4.9, lambda_snh=80,
                                     lambda_inh=9.8, lambda_ipw=4.9, lambda_idf=5),  # 'vec'
    "diginetica-window-mrr": dict(k=1500, sample_size=5000, lambda_spw=4.9, lambda_snh=40,
                                  lambda_inh=4.9, lambda_ipw=1.225, lambda_idf=10),
    # conf/save/retailrocket/window/window_retailr_vstan.yml
    "retailrocket-window-recall": dict(k=500, sample_size=1000, lambda_spw=7.24,
                                       lambda_snh=100, lambda_inh=3.62, lambda_ipw=3.62,
                                       lambda_idf=1),
    "retailrocket-window-mrr": dict(k=1000, sample_size=2500, lambda_spw=3.62,
                                    lambda_snh=100, lambda_inh=0.4525, lambda_ipw=3.62,
                                    lambda_idf=1),  # 'vec'
}
PRESETS = {"stan": STAN_PRESETS, "vstan": VSTAN_PRESETS}


def presets(name: str, data: str = "") -> dict[str, dict]:
    """The published sets of method `name` ('stan' or 'vstan') whose key starts with `data`
    (e.g. 'rsc15' for every YOOCHOOSE set), as candidates for `select_params`."""
    if name not in PRESETS:
        raise ValueError(f"presets exist for {sorted(PRESETS)}; got method {name!r}")
    chosen = {key: dict(params) for key, params in PRESETS[name].items() if key.startswith(data)}
    if not chosen:
        raise ValueError(f"no {name} preset starts with {data!r}; keys: {sorted(PRESETS[name])}")
    return chosen


def grid(**choices: list) -> dict[str, dict]:
    """Every combination of the given values, keyed 'name=value ...': `grid(k=[100, 500],
    lambda_spw=[1, 2])` gives four candidate sets for `select_params`."""
    names = list(choices)
    return {" ".join(f"{n}={v}" for n, v in zip(names, values, strict=True)):
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(choices[n] for n in names))}


# ------------------------------------------------------------------------- evaluation


def results(model: Baseline, examples: Prefixes, k: int = 20,
            batch_size: int = EVAL_BATCH_SIZE,
            popularity: np.ndarray | None = None) -> _evaluate.Results:
    """Rank `[n]` of every example's label under `model` (ties and NaN against the target) and
    how many top-k lists hold each item, batch by batch; `popularity` `[N]` for the popularity
    bias."""
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
    `popularity` `[N]` is given), the number of test examples and `by_kind`: the figures by
    kind of target (`metrics.metrics_by_kind`; head / torso / tail need popularity)."""
    measured = results(model, test, k, batch_size, popularity)
    out = {"recall": measured.recall, "mrr": measured.mrr, "ndcg": measured.ndcg,
           "coverage": measured.coverage}
    if popularity is not None:
        out["popularity_bias"] = measured.popularity_bias
    out["count"] = int(len(test))
    out["by_kind"] = metrics_by_kind(measured.ranks, test.prefixes, test.labels, popularity, k)
    return out


def fit_and_evaluate(name: str, train: Prefixes, validation: Prefixes, test: Prefixes,
                     num_items: int, k: int = 20, session_dates: pd.Series | None = None,
                     params: dict | None = None, **more_params) -> dict:
    """Fits BASELINES[name] on train + validation, evaluates on test (popularity: the
    training-label counts of train + validation); adds wall seconds.

    k is the cutoff @k: the model's own parameters go in `params` (a preset, whose `k` is the
    number of neighbours) and/or as further keywords. session_dates: see `Baseline.fit`.
    """
    started = time.perf_counter()
    model = BASELINES[name](**{**(params or {}), **more_params}).fit(
        training_prefixes(train, validation), num_items, session_dates)
    fitted = time.perf_counter()
    result = evaluate(model, test, k,
                      popularity=_evaluate.label_counts(num_items, train, validation))
    result.update(fit_seconds=fitted - started, eval_seconds=time.perf_counter() - fitted)
    return result


@dataclasses.dataclass
class Selection:
    """What `select_params` chose and every candidate's validation figures (fractions)."""

    key: str
    params: dict
    metric: str
    validation: dict  # {candidate key: {"recall": ..., "mrr": ..., "ndcg": ...}}


def select_params(name: str, train: Prefixes, validation: Prefixes, num_items: int,
                  candidates: dict[str, dict], metric: str = "recall", k: int = 20,
                  session_dates: pd.Series | None = None) -> Selection:
    """Picks the candidate set (`presets`, `grid`) of BASELINES[name] with the best `metric`
    @k ('recall', 'mrr' or 'ndcg') on the validation prefixes, each fitted on `train` alone;
    ties go to the earlier candidate. Never pass the test split: refit the chosen set with
    `fit_and_evaluate` (train + validation) and report test once."""
    if metric not in ("recall", "mrr", "ndcg"):
        raise ValueError(f"metric must be 'recall', 'mrr' or 'ndcg'; got {metric!r}")
    if not candidates:
        raise ValueError(f"select_params needs at least one candidate set for {name}")
    figures = {}
    for key, params in candidates.items():
        model = BASELINES[name](**params).fit(train, num_items, session_dates)
        measured = results(model, validation, k)
        figures[key] = {"recall": measured.recall, "mrr": measured.mrr, "ndcg": measured.ndcg}
    best = max(figures, key=lambda key: figures[key][metric])  # first of the best
    return Selection(best, dict(candidates[best]), metric, figures)
