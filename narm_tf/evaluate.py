"""Test metrics of a trained model, overall and by session length (paper Table 5).

    python -m narm_tf.evaluate --model_dir=runs/narm [--split=test] [--data_dir=...]

Reads the run's config.json for the dataset, loads the model the run delivers (best.keras, or
final.keras of a `--refit` run), ranks every target among all items (ties
against the target, NaN/infinite scores a miss, by `narm_tf.model.metrics.target_ranks`) and prints
Recall@20 / MRR@20 / NDCG@20, item coverage@20 and popularity bias@20 (from the run's
vocabulary.tsv counts), the same figures by kind of target and the per-length table.

Beyond accuracy (as the session-rec framework reports them; docs/results.md):
  NDCG@20            one relevant item: mean of 1/log2(1 + rank), 0 when rank > 20.
  coverage@20        share of the N items in at least one top-20 list (padding excluded).
  popularity_bias@20 mean, over every item of every top-20 list, of its training-label count
                     min-max normalized over the catalogue, (count - min) / (max - min).
  by kind of target  Recall / MRR / NDCG @20 over all targets, repeat targets (the label is
                     among the prefix's clicks) and new ones, and head / torso / tail by the
                     label's training popularity (`narm_tf.model.metrics.metrics_by_kind`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import app, flags

from narm_tf import cli
from narm_tf.model import metrics  # cli first: it quiets TensorFlow before metrics imports it

FLAGS = flags.FLAGS
LENGTH_BUCKETS = 19  # Table 5: prefix lengths 1..18 and "19+".
# Largest `[batch, items]` score matrix evaluation makes (floats: 512 MiB in float32); beyond
# it, bilinear models are ranked per item block (`metrics.blockwise_ranks_and_top_k`).
MAX_SCORES = 2**27
BLOCK_SCORES = 2**25  # Scores of one item block (128 MiB): a few such temporaries live at once.


@dataclasses.dataclass
class Results:
    """Rank of every evaluated target with the untruncated prefix length, how many top-k
    lists held each item (for coverage and popularity bias) and the figures by kind of
    target (None when not collected)."""

    ranks: np.ndarray  # [n] float64, 1 = best, metrics.MISS (inf) = NaN/infinite scores
    lengths: np.ndarray  # [n] int64
    k: int = 20
    recommended: np.ndarray | None = None  # [N + 1] int64, top-k lists holding each item
    popularity: np.ndarray | None = None  # [N] training-label counts of items 1..N
    by_kind: dict | None = None  # metrics.metrics_by_kind's figures (fractions)

    def __post_init__(self):
        self.ranks = np.asarray(self.ranks, np.float64)
        if (self.recommended is not None and self.popularity is not None
                and len(self.popularity) != len(self.recommended) - 1):
            raise ValueError(f"popularity holds {len(self.popularity)} counts but the scores "
                             f"rank {len(self.recommended) - 1} items: pass label counts [N]")

    @property
    def recall(self) -> float:
        return metrics.recall_mrr_from_ranks(self.ranks, self.k)[0]

    @property
    def mrr(self) -> float:
        return metrics.recall_mrr_from_ranks(self.ranks, self.k)[1]

    @property
    def ndcg(self) -> float:
        return metrics.ndcg_from_ranks(self.ranks, self.k)

    @property
    def coverage(self) -> float | None:
        """Item coverage@k: share of the N items in at least one top-k list."""
        if self.recommended is None:
            return None
        return float(np.mean(self.recommended[1:] > 0))

    @property
    def popularity_bias(self) -> float | None:
        """Mean normalized popularity (`normalized_popularity`) of every item of every top-k
        list, in [0, 1]."""
        if self.recommended is None or self.popularity is None:
            return None
        shown = self.recommended[1:]
        total = shown.sum()
        return float(shown @ normalized_popularity(self.popularity) / total) if total else 0.0


def normalized_popularity(counts: np.ndarray) -> np.ndarray:
    """Min-max normalized popularity `[N]`: (count - min) / (max - min) over the catalogue;
    0 everywhere when every item is equally popular."""
    counts = np.asarray(counts, np.float64)
    if counts.size == 0 or counts.max() == counts.min():
        return np.zeros_like(counts)
    return (counts - counts.min()) / (counts.max() - counts.min())


def label_counts(num_items: int, *splits) -> np.ndarray:
    """Occurrences of each item 1..N as a label over the given splits: `[N]` int64 popularity."""
    counts = np.zeros(num_items + 1, np.int64)
    for split in splits:
        counts += np.bincount(split.labels, minlength=num_items + 1)
    return counts[1:]


def evaluate_model(model, prefixes, k: int = 20, batch_size: int = 1024,
                   popularity: np.ndarray | None = None, max_scores: int = MAX_SCORES) -> Results:
    """Ranks of `prefixes.labels` under `model` (logits `[b, N + 1]`) and its top-k lists,
    batched, both in-graph (only ranks and per-item counts leave the graph).

    popularity: training-label counts `[N]` (`label_counts(N, train, validation)`); without it
    the popularity bias is omitted.
    max_scores: the largest `[batch, N + 1]` score matrix made. Beyond it a bilinear NARM is
    ranked per item block (`metrics.blockwise_ranks_and_top_k`, same ranks), another model
    with a batch cut to fit.
    """
    import tensorflow as tf

    num_scores = model.output.shape[-1]
    query_model = _bilinear_query_model(model)
    if batch_size * num_scores <= max_scores or query_model is None:
        batch_size = max(1, min(batch_size, max_scores // num_scores))

        @tf.function(reduce_retracing=True)
        def ranks_and_top(item_ids, labels):
            logits = model(item_ids, training=False)
            return metrics.target_ranks(logits, labels), metrics.top_k_items(logits, k)
    else:
        from narm_tf.model.narm import ITEM_EMBEDDING

        table = model.get_layer(ITEM_EMBEDDING).embeddings
        block_size = max(1, min(max_scores, BLOCK_SCORES) // batch_size)

        @tf.function(reduce_retracing=True)
        def ranks_and_top(item_ids, labels):
            query = query_model(item_ids, training=False)
            return metrics.blockwise_ranks_and_top_k(
                query, tf.cast(table, query.dtype), labels, k, block_size)

    @tf.function(reduce_retracing=True)
    def ranks_and_lists(item_ids, labels):
        ranks, top = ranks_and_top(item_ids, labels)
        return ranks, tf.math.bincount(top, minlength=num_scores, dtype=tf.int64)

    ranks, recommended = [np.zeros(0)], None
    for i in range(0, len(prefixes), batch_size):
        batch_ranks, lists = ranks_and_lists(tf.constant(prefixes.prefixes[i:i + batch_size]),
                                             tf.constant(prefixes.labels[i:i + batch_size]))
        ranks.append(batch_ranks.numpy())
        recommended = lists.numpy() if recommended is None else recommended + lists.numpy()
    return with_kinds(Results(np.concatenate(ranks), np.asarray(prefixes.lengths), k,
                              recommended, popularity), prefixes)


def with_kinds(results: Results, prefixes) -> Results:
    """`results` with its figures by kind of target (`metrics.metrics_by_kind`) over the
    `prefixes` it ranked; head / torso / tail only when it holds the popularity."""
    results.by_kind = metrics.metrics_by_kind(results.ranks, prefixes.prefixes, prefixes.labels,
                                              results.popularity, results.k)
    return results


def _bilinear_query_model(model):
    """Item ids -> `B c_t` `[batch, D]` on `model`'s layers when its scores are exactly the
    bilinear decoder's (eq. 10, `narm` settings of `build_narm`), else None."""
    import keras

    from narm_tf.model.narm import BILINEAR_DECODER

    settings = getattr(model, "narm", None) or {}
    if settings.get("decoder") != "bilinear" or settings.get("repeat"):
        return None
    return keras.Model(model.inputs, model.get_layer(BILINEAR_DECODER).output)


def evaluate_popularity(counts: np.ndarray, prefixes, k: int = 20,
                        batch_size: int = 1024) -> Results:
    """POP: every prefix gets the training-label counts `[N]` as scores (ranked by
    `metrics.target_ranks`, ties against the target) and the same top-k list, the k most
    popular items (ties: lower id). `counts` is also the popularity of the popularity bias."""
    counts = np.asarray(counts)
    scores = np.concatenate([[0], counts]).astype(np.float64)[None, :]  # padding never counts
    items, inverse = np.unique(np.asarray(prefixes.labels), return_inverse=True)
    item_ranks = [np.zeros(0)] + [  # every distinct label is ranked once
        metrics.ranks_numpy(np.repeat(scores, len(chunk), axis=0), chunk)
        for chunk in (items[i:i + batch_size] for i in range(0, len(items), batch_size))]
    recommended = np.zeros(len(counts) + 1, np.int64)
    recommended[metrics.top_k_numpy(scores, k)[0]] = len(prefixes)
    return with_kinds(Results(np.concatenate(item_ranks)[inverse],
                              np.asarray(prefixes.lengths), k, recommended, counts), prefixes)


def summary(results: Results) -> dict:
    """Recall, MRR, NDCG and coverage @k in percent with two decimals, popularity bias @k as a
    fraction in [0, 1] with four decimals (when known), the number of prefixes and, when
    collected, "by_kind" (`summary_by_kind`)."""
    k = results.k
    out = {f"recall@{k}": round(100 * results.recall, 2), f"mrr@{k}": round(100 * results.mrr, 2),
           f"ndcg@{k}": round(100 * results.ndcg, 2)}
    if results.coverage is not None:
        out[f"coverage@{k}"] = round(100 * results.coverage, 2)
    if results.popularity_bias is not None:
        out[f"popularity_bias@{k}"] = round(results.popularity_bias, 4)
    out["count"] = int(len(results.ranks))
    if results.by_kind is not None:
        out["by_kind"] = summary_by_kind(results.by_kind, k)
    return out


def summary_by_kind(by_kind: dict, k: int = 20) -> dict:
    """`metrics.metrics_by_kind`'s figures as `summary` writes them: per kind its count, and
    share, Recall, MRR and NDCG @k in percent with two decimals (None for an empty group)."""
    def percent(value):
        return None if value is None else round(100 * value, 2)

    return {kind: {"count": row["count"], "share": percent(row["share"]),
                   f"recall@{k}": percent(row["recall"]), f"mrr@{k}": percent(row["mrr"]),
                   f"ndcg@{k}": percent(row["ndcg"])}
            for kind, row in by_kind.items()}


def format_summary(name: str, results: Results) -> str:
    k = results.k
    line = (f"{name:<8} Recall@{k} {100 * results.recall:6.2f}%   "
            f"MRR@{k} {100 * results.mrr:6.2f}%   NDCG@{k} {100 * results.ndcg:6.2f}%")
    if results.coverage is not None:
        line += f"   Coverage@{k} {100 * results.coverage:6.2f}%"
    if results.popularity_bias is not None:
        line += f"   PopBias@{k} {results.popularity_bias:.4f}"
    return line + f"   ({len(results.ranks)} test prefixes)"


def by_length(results: Results) -> list[dict]:
    """Table 5 rows: prefix length 1..18 and 19+, with count, hits@k, Recall@k and MRR@k."""
    bucket = np.minimum(results.lengths, LENGTH_BUCKETS)
    hit = results.ranks <= results.k
    reciprocal = np.where(hit, 1.0 / results.ranks, 0.0)
    rows = []
    for length in range(1, LENGTH_BUCKETS + 1):
        chosen = bucket == length
        count = int(chosen.sum())
        rows.append({
            "length": f"{length}+" if length == LENGTH_BUCKETS else str(length),
            "count": count,
            "hits": int(hit[chosen].sum()),
            "recall": round(100 * float(hit[chosen].mean()), 2) if count else None,
            "mrr": round(100 * float(reciprocal[chosen].mean()), 2) if count else None,
        })
    return rows


def format_by_length(rows: list[dict], k: int = 20) -> str:
    lines = [f"{'length':>6} {'count':>8} {'hits@' + str(k):>8} {'Recall':>8} {'MRR':>8}"]
    for row in rows:
        recall = "-" if row["recall"] is None else f"{row['recall']:.2f}"
        mrr = "-" if row["mrr"] is None else f"{row['mrr']:.2f}"
        lines.append(f"{row['length']:>6} {row['count']:>8} {row['hits']:>8} {recall:>8} "
                     f"{mrr:>8}")
    return "\n".join(lines)


def format_report(results: Results, rows: list[dict], name: str = "NARM") -> str:
    """What the evaluate command prints: the overall line, the figures by kind of target (when
    collected) and the per-length table (`by_length` rows)."""
    parts = [format_summary(name, results)]
    if results.by_kind is not None:
        parts.append(metrics.format_by_kind(results.by_kind, results.k))
    return "\n\n".join(parts + [format_by_length(rows, results.k)])


def evaluate_model_dir(model_dir: str, split: str = "test", data_dir: str | None = None,
                       batch_size: int = 1024) -> tuple[Results, list[dict]]:
    """Loads the model a training run delivers (`run_dir.delivered_model`) and evaluates it on
    a split of its dataset, with the popularity of its vocabulary.tsv (if present)."""
    import keras

    from narm_tf.data import dataset as data
    from narm_tf.model import narm as _registers_layers  # noqa: F401
    from narm_tf.training import run_dir

    config = run_dir.check_complete(model_dir)
    prefixes = data.Dataset(config["dataset"], data_dir or config["data_dir"]).split(split)
    # Scores only: the optimizer's state is not read (nor warned about).
    model = keras.models.load_model(run_dir.delivered_model(model_dir, config), compile=False)
    _, popularity = run_dir.read_vocabulary(model_dir)
    results = evaluate_model(model, prefixes, batch_size=batch_size, popularity=popularity)
    return results, by_length(results)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (defined on demand: other modules import this one)."""
    cli.define_path("model_dir", None, "A training run's --model_dir.", required=True,
                    flag_values=flag_values)
    flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split to evaluate.",
                      flag_values=flag_values)
    cli.define_path("data_dir", "", "Override the data_dir recorded in config.json.",
                    flag_values=flag_values)


def main(argv):
    from narm_tf.training import run_dir

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        results, rows = evaluate_model_dir(FLAGS.model_dir, FLAGS.split, FLAGS.data_dir or None)
    except run_dir.RunFolderError as error:
        raise SystemExit(f"narm_tf.evaluate: {error}") from None
    print(format_report(results, rows))


def run() -> None:
    """The `narm-evaluate` command: parses the command line, then `main`."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
