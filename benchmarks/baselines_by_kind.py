"""Recall@20 / MRR@20 (%) of the baselines and of trained NARM runs on any built dataset, over
all test targets and by kind of target: repeat (the label is among the prefix's clicks) or new.

Baselines: S-POP, SKNN, V-SKNN (session-rec's defaults), STAN and VSTAN (session-rec's published
presets ranked on the validation split, fitted on train alone; the best for Recall@20 is refitted
on train + validation and scored on test). STAN and VSTAN date neighbours by the sessions' real
dates when `--clicks` names the raw click file the dataset was built from, else by the
session-order proxy (`narm_tf.research.baselines`). NARM: every `--model_dir` run's delivered model
ranks the test split by `narm_tf.evaluate`'s code (ties against the target); the ranks are then
split by kind with `narm_tf.model.metrics.metrics_by_kind`. Also prints the share of repeat targets
in each split.

Run:
  python benchmarks/baselines_by_kind.py --data_dir=DIR [--dataset=yoochoose/yoochoose_full]
      [--clicks=RAW/yoochoose-clicks.dat] [--model_dir=RUN ...] [--methods=spop,sknn,...]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Runs from a checkout without installing the package.

from narm_tf.model import metrics  # noqa: E402
from narm_tf.research import baselines  # noqa: E402

METHODS = ("spop", "sknn", "vsknn", "stan", "vstan")
LABELS = {"spop": "S-POP", "sknn": "SKNN", "vsknn": "V-SKNN", "stan": "STAN", "vstan": "VSTAN"}
KINDS = ("all", "repeat", "new")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="TFDS data_dir of the built dataset.")
    parser.add_argument("--dataset", default="yoochoose/yoochoose_full", help="name/config.")
    parser.add_argument("--clicks", default="", help="The raw YOOCHOOSE-format click file the "
                        "dataset was built from: real session dates for STAN and VSTAN.")
    parser.add_argument("--model_dir", action="append", default=[],
                        help="A finished NARM training run (repeatable).")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"Comma-separated baselines among {','.join(METHODS)} (or empty).")
    args = parser.parse_args(argv)
    args.methods = [name for name in args.methods.split(",") if name]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected names among {list(METHODS)}")
    return args


def repeat_share(split) -> float:
    """Share of a split's targets that repeat an item of their prefix."""
    return float(metrics.repeat_targets(split.prefixes, split.labels).mean())


def baseline_rows(methods, train, validation, test, num_items, dates) -> list[tuple[str, dict]]:
    """(label, `metrics_by_kind` figures) of every baseline; STAN and VSTAN chosen on
    validation for Recall@20 among session-rec's presets."""
    rows = []
    for name in methods:
        params, label = {}, LABELS[name]
        if name in baselines.PRESETS:
            selection = baselines.select_params(name, train, validation, num_items,
                                                baselines.presets(name), "recall",
                                                session_dates=dates)
            params, label = selection.params, f"{label} ({selection.key})"
        started = time.perf_counter()
        result = baselines.fit_and_evaluate(name, train, validation, test, num_items,
                                            session_dates=dates if name in baselines.PRESETS
                                            else None, params=params)
        print(f"  {label}: {time.perf_counter() - started:.1f}s", flush=True)
        rows.append((label, result["by_kind"]))
    return rows


def narm_rows(model_dirs, data_dir) -> list[tuple[str, dict]]:
    """(label, `metrics_by_kind` figures) of each run's delivered model on its test split."""
    from narm_tf import evaluate
    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir

    rows = []
    for model_dir in model_dirs:
        config = run_dir.check_complete(model_dir)
        results, _ = evaluate.evaluate_model_dir(model_dir, "test", data_dir)
        test = data.Dataset(config["dataset"], data_dir).split("test")
        _, popularity = run_dir.read_vocabulary(model_dir)
        best = run_dir.read_json(model_dir, run_dir.BEST_RECORD) or {}
        label = f"NARM {pathlib.Path(model_dir).name} (epoch {best.get('epoch', '?')})"
        rows.append((label, metrics.metrics_by_kind(results.ranks, test.prefixes, test.labels,
                                                    popularity, results.k)))
    return rows


def cell(figures: dict) -> str:
    """'Recall / MRR' in percent, '-' for a kind without targets."""
    if figures["count"] == 0:
        return "-"
    return f"{100 * figures['recall']:.2f} / {100 * figures['mrr']:.2f}"


def print_table(rows) -> None:
    print(f"| method | {' | '.join(f'{kind} R@20 / MRR@20' for kind in KINDS)} |")
    print("|---|" + "---|" * len(KINDS))
    for label, by_kind in rows:
        print(f"| {label} | " + " | ".join(cell(by_kind[kind]) for kind in KINDS) + " |")


def main(argv=None) -> None:
    args = parse_args(argv)
    from narm_tf.data import dataset as data

    dataset = data.Dataset(args.dataset, args.data_dir)
    splits = {name: dataset.split(name) for name in ("train", "validation", "test")}
    num_items = dataset.num_items
    print(f"{args.dataset} in {args.data_dir}: {num_items} items; " + ", ".join(
        f"{name} {len(split)} prefixes ({100 * repeat_share(split):.1f}% repeat targets, "
        f"mean prefix {split.lengths.mean():.2f})" for name, split in splits.items()))
    dates = None
    if args.clicks:
        from narm_tf.data.clicks import read_yoochoose_clicks

        dates = baselines.session_days(read_yoochoose_clicks(args.clicks), date_unit_seconds=1)
    rows = baseline_rows(args.methods, *splits.values(), num_items, dates)
    rows += narm_rows(args.model_dir, args.data_dir)
    by_kind = rows[0][1] if rows else None
    if by_kind:
        print(f"test targets: {by_kind['all']['count']}, repeat {by_kind['repeat']['count']} "
              f"({100 * by_kind['repeat']['share']:.1f}%), new {by_kind['new']['count']}")
    print_table(rows)


if __name__ == "__main__":
    main()
