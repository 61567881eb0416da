"""Test metrics of a trained model, overall and by session length (paper Table 5).

    python -m narm_tf.evaluate --model_dir=runs/narm [--split=test] [--data_dir=...]

Reads the run's config.json for the dataset, loads best.keras, ranks every target among all
items (SPEC section 3) and prints Recall@20 / MRR@20 with the per-length table.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import app, flags

from narm_tf import metrics

FLAGS = flags.FLAGS
LENGTH_BUCKETS = 19  # Table 5: prefix lengths 1..18 and "19+".


@dataclasses.dataclass
class Results:
    """Rank of every evaluated target with the untruncated prefix length."""

    ranks: np.ndarray  # [n] int64, 1 = best
    lengths: np.ndarray  # [n] int64
    k: int = 20

    @property
    def recall(self) -> float:
        return metrics.recall_mrr_from_ranks(self.ranks, self.k)[0]

    @property
    def mrr(self) -> float:
        return metrics.recall_mrr_from_ranks(self.ranks, self.k)[1]


def evaluate_model(model, prefixes, k: int = 20, batch_size: int = 1024) -> Results:
    """Ranks of `prefixes.labels` under `model` (logits [b, N + 1]), batched, ranks in-graph."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def batch_ranks(item_ids, labels):
        logits = model(item_ids, training=False)
        target = tf.gather(logits, labels, batch_dims=1)
        higher = tf.cast(logits[:, 1:] > target[:, None], tf.int64)
        return 1 + tf.reduce_sum(higher, axis=1)

    ranks = [
        batch_ranks(tf.constant(prefixes.prefixes[i:i + batch_size]),
                    tf.constant(prefixes.labels[i:i + batch_size]))
        for i in range(0, len(prefixes), batch_size)
    ]
    ranks = np.concatenate([r.numpy() for r in ranks]) if ranks else np.zeros(0, np.int64)
    return Results(ranks, np.asarray(prefixes.lengths), k)


def evaluate_popularity(counts: np.ndarray, prefixes, k: int = 20) -> Results:
    """POP: every prefix gets the training-label counts [N] as scores (ties favour the target)."""
    ordered = np.sort(counts)
    target = counts[np.asarray(prefixes.labels) - 1]
    ranks = 1 + len(counts) - np.searchsorted(ordered, target, side="right")
    return Results(ranks.astype(np.int64), np.asarray(prefixes.lengths), k)


def summary(results: Results) -> dict:
    """Percentages with two decimals and the number of prefixes (SPEC section 3)."""
    return {f"recall@{results.k}": round(100 * results.recall, 2),
            f"mrr@{results.k}": round(100 * results.mrr, 2),
            "count": int(len(results.ranks))}


def format_summary(name: str, results: Results) -> str:
    return (f"{name:<8} Recall@{results.k} {100 * results.recall:6.2f}%   "
            f"MRR@{results.k} {100 * results.mrr:6.2f}%   ({len(results.ranks)} test prefixes)")


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


def evaluate_model_dir(model_dir: str, split: str = "test", data_dir: str | None = None,
                       batch_size: int = 1024) -> tuple[Results, list[dict]]:
    """Loads a training run's best model and evaluates it on a split of its dataset."""
    import keras

    from narm_tf import data, run_dir
    from narm_tf import model as _registers_layers  # noqa: F401

    config = run_dir.check_complete(model_dir)
    data.register_builders()
    prefixes = data.load_split(config["dataset"], split, data_dir or config["data_dir"])
    model = keras.models.load_model(run_dir.path(model_dir, run_dir.BEST_MODEL))
    results = evaluate_model(model, prefixes, batch_size=batch_size)
    return results, by_length(results)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results, rows = evaluate_model_dir(FLAGS.model_dir, FLAGS.split, FLAGS.data_dir or None)
    print(format_summary("NARM", results))
    print(format_by_length(rows, results.k))


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "A training run's --model_dir.", required=True)
    flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split to evaluate.")
    flags.DEFINE_string("data_dir", "", "Override the data_dir recorded in config.json.")
    app.run(main)
