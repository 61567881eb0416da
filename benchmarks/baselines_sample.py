"""Recall@20 / MRR@20 / NDCG@20 (%), item coverage@20 (%), popularity bias@20 and wall time of
every baseline on the real YOOCHOOSE sample (reference: Recall@20 / MRR@20 only).

Run: python benchmarks/baselines_sample.py [path/to/yoochoose-clicks.dat]
The reference figures were measured independently on the same clicks with another split tool.
"""

from __future__ import annotations

import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Runs from a checkout without installing the package.

from narm_tf import baselines  # noqa: E402
from narm_tf.preprocessing import preprocess, read_yoochoose_clicks  # noqa: E402

DEFAULT_CLICKS = ROOT.parent / "shared" / "data" / "yoochoose_sample" / "yoochoose-clicks.dat"
REFERENCE = {  # Recall@20, MRR@20 (%), independent measurement on the same clicks.
    "pop": (8.9, 2.6), "spop": (38.1, 26.5), "itemknn": (40.8, 18.6),
    "sr": (61.5, 34.3), "sknn": (64.1, 32.0), "vsknn": (67.41, 35.82),
}


def main(path: str) -> None:
    """Preprocesses the sample (SPEC section 1, full training set) and prints one row a method."""
    started = time.perf_counter()
    data = preprocess(read_yoochoose_clicks(path), test_days=1, date_unit_seconds=1,
                      fraction=1, seed=0, source=path)
    stats = data.statistics
    print(f"preprocessed in {time.perf_counter() - started:.1f}s: "
          f"{stats['train_prefixes']} train+validation / {stats['test_prefixes']} test prefixes, "
          f"{stats['vocabulary_size']} items")
    print(f"{'method':<8} {'R@20':>6} {'MRR@20':>7} {'NDCG@20':>7} {'Cov@20':>6} "
          f"{'Pop@20':>6} | {'ref R':>6} {'ref MRR':>7} | {'fit s':>6} {'eval s':>6}")
    runs = [(name, name, {}) for name in baselines.BASELINES]
    runs.append(("vsknn+d", "vsknn", {"score_decay": True}))  # session-rec's div_score too
    for label, name, params in runs:
        r = baselines.fit_and_evaluate(name, data.train, data.validation, data.test,
                                       stats["vocabulary_size"], **params)
        ref_recall, ref_mrr = REFERENCE[name]
        print(f"{label:<8} {100 * r['recall']:6.2f} {100 * r['mrr']:7.2f} "
              f"{100 * r['ndcg']:7.2f} {100 * r['coverage']:6.2f} {r['popularity_bias']:6.4f} | "
              f"{ref_recall:6.1f} {ref_mrr:7.1f} | "
              f"{r['fit_seconds']:6.2f} {r['eval_seconds']:6.2f}")
    print(f"test prefixes evaluated: {r['count']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_CLICKS))
