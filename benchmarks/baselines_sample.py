"""Recall@20 / MRR@20 / NDCG@20 (%), item coverage@20 (%), popularity bias@20 and wall time of
every baseline on the real YOOCHOOSE sample (reference: Recall@20 / MRR@20 only), then Recall@20
/ MRR@20 by kind of target: repeat (the label is among the prefix's clicks) or new, and head /
torso / tail (the items covering the first, second and last third of training labels).

STAN and VSTAN: session-rec's published presets (`baselines.presets(name)`, every data set's) are
ranked on the validation split (fitted on train alone); the best for Recall@20 ("-R") and for
MRR@20 ("-M") are refitted on train + validation and scored on test. Their neighbour recency
uses the sessions' real dates (the raw clicks); the "(order)" rows use the session-order proxy.

Run: python benchmarks/baselines_sample.py [path/to/yoochoose-clicks.dat]
The reference figures were measured independently on the same clicks with another split tool
(ranks with ties against the target).
"""

from __future__ import annotations

import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Runs from a checkout without installing the package.

from narm_tf.data.clicks import read_yoochoose_clicks  # noqa: E402
from narm_tf.data.rules import preprocess  # noqa: E402
from narm_tf.research import baselines  # noqa: E402

DEFAULT_CLICKS = ROOT.parent / "shared" / "data" / "yoochoose_sample" / "yoochoose-clicks.dat"
REFERENCE = {  # Recall@20, MRR@20 (%), independent measurement on the same clicks.
    "pop": (8.9, 2.6), "spop": (38.1, 26.5), "itemknn": (40.8, 18.6),
    "sr": (61.5, 34.3), "sknn": (64.1, 32.0), "vsknn": (67.41, 35.82),
    "stan-R": (69.27, 36.61), "stan-M": (67.03, 37.37),
    "vstan-R": (69.46, 37.12), "vstan-M": (67.60, 37.60),
}
KINDS = ("repeat", "new", "head", "torso", "tail")


def chosen_presets(name: str, data, num_items: int, dates) -> list[tuple[str, str, dict]]:
    """(label, preset key, params) of the presets best on validation Recall@20 and MRR@20."""
    selection = baselines.select_params(name, data.train, data.validation, num_items,
                                        baselines.presets(name), "recall",
                                        session_dates=dates)
    for key, figures in selection.validation.items():
        print(f"  validation {name} {key:<26} R@20 {100 * figures['recall']:6.2f}  "
              f"MRR@20 {100 * figures['mrr']:6.2f}")
    best_mrr = max(selection.validation, key=lambda key: selection.validation[key]["mrr"])
    return [(f"{name}-R", selection.key, selection.params),
            (f"{name}-M", best_mrr, dict(baselines.PRESETS[name][best_mrr]))]


def kind_cell(figures: dict) -> str:
    """'Recall/MRR' in percent of one kind of target, '-' when it has no example."""
    if figures["count"] == 0:
        return "-"
    return f"{100 * figures['recall']:.2f}/{100 * figures['mrr']:.2f}"


def main(path: str) -> None:
    """Preprocesses the sample (docs/data.md's rules, full training set) and prints one row a
    method."""
    started = time.perf_counter()
    clicks = read_yoochoose_clicks(path)
    data = preprocess(clicks, test_days=1, date_unit_seconds=1, fraction=1, seed=0, source=path)
    dates = baselines.session_days(clicks, date_unit_seconds=1)
    stats = data.statistics
    num_items = stats["vocabulary_size"]
    print(f"preprocessed in {time.perf_counter() - started:.1f}s: "
          f"{stats['train_prefixes']} train+validation / {stats['test_prefixes']} test prefixes, "
          f"{num_items} items")
    runs = [(name, name, {}, None) for name in baselines.BASELINES if name not in baselines.PRESETS]
    runs.append(("vsknn+d", "vsknn", {"score_decay": True}, None))  # session-rec's div_score
    for name in baselines.PRESETS:
        for label, key, params in chosen_presets(name, data, num_items, dates):
            print(f"  {label}: {key}")
            runs.append((label, name, params, dates))
            if label.endswith("-R"):
                runs.append((f"{label} (order)", name, params, None))
    rows = []
    for label, name, params, session_dates in runs:
        rows.append((label, baselines.fit_and_evaluate(
            name, data.train, data.validation, data.test, num_items,
            session_dates=session_dates, params=params)))
    print(f"{'method':<16} {'R@20':>6} {'MRR@20':>7} {'NDCG@20':>7} {'Cov@20':>6} "
          f"{'Pop@20':>6} | {'ref R':>6} {'ref MRR':>7} | {'fit s':>6} {'eval s':>6}")
    for label, r in rows:
        ref = REFERENCE.get(label)
        ref_recall, ref_mrr = (f"{ref[0]:.2f}", f"{ref[1]:.2f}") if ref else ("-", "-")
        print(f"{label:<16} {100 * r['recall']:6.2f} {100 * r['mrr']:7.2f} "
              f"{100 * r['ndcg']:7.2f} {100 * r['coverage']:6.2f} {r['popularity_bias']:6.4f} | "
              f"{ref_recall:>6} {ref_mrr:>7} | "
              f"{r['fit_seconds']:6.2f} {r['eval_seconds']:6.2f}")
    by_kind = rows[0][1]["by_kind"]
    print(f"test prefixes evaluated: {rows[0][1]['count']}; by kind: "
          + ", ".join(f"{kind} {by_kind[kind]['count']} ({100 * by_kind[kind]['share']:.1f}%)"
                      for kind in KINDS))
    print(f"{'R@20 / MRR@20':<16} " + " ".join(f"{kind:>13}" for kind in KINDS))
    for label, r in rows:
        print(f"{label:<16} " + " ".join(f"{kind_cell(r['by_kind'][kind]):>13}"
                                         for kind in KINDS))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_CLICKS))
