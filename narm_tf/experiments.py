"""The paper's experiments on any built dataset, into one REPORT.md with plots.

    python -m narm_tf.experiments --dataset=yoochoose/yoochoose_full --data_dir=DIR \
        --out=results/yoochoose_sample

  Table 2  bilinear vs dense decoder (NARM)
  Table 3  POP, S-POP, Item-KNN, SR, SKNN, a GRU-only model (GRU-Rec stand-in) and NARM, with
           NDCG@20, item coverage@20 and popularity bias@20 beside Recall@20 / MRR@20, and
           the same methods' Recall@20 / MRR@20 on repeat and on new targets
  Table 4  global / local / hybrid session features at H = 50 and 100
  Table 5  correct predictions by session length, NARM vs the GRU-only model
  Figure 6 attention weights of sampled test sessions (heatmap), and training curves
NARM and the GRU-only model run with several seeds (mean and standard deviation). Every model is
trained by `python -m narm_tf.train` (early stopping on validation, never on test) and every
method is scored by the same metric code (`narm_tf.evaluate`, ranks by
`narm_tf.model.metrics.target_ranks`). Each experiment's result is cached in `OUT/cache/`,
so rerunning the command after an interruption resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from narm_tf import cli
from narm_tf import config as config_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "yoochoose/yoochoose_full", "TFDS name/config of a built dataset.")
cli.define_path("data_dir", "~/tensorflow_datasets", "TFDS data_dir.")
cli.define_path("out", "results/experiment", "Output folder: REPORT.md, plots, cache, runs.")
flags.DEFINE_integer("seeds", 3, "Seeds of NARM and of the GRU-only model.")
flags.DEFINE_integer("epochs", 30, "Maximum epochs of every trained model.")
flags.DEFINE_integer("patience", 5, "Early-stopping patience on validation Recall@20.")
flags.DEFINE_integer("batch_size", 512, "Training batch size.")
cli.define_path("tuned_flagfile", "",
                "A flagfile found by `python -m narm_tf.tune` (its best.cfg): adds a "
                "'NARM (tuned)' row to Table 3, trained with it (its own epochs, patience and "
                "batch size) for every seed.")
flags.DEFINE_boolean("repeat_row", False,
                     "Add a 'NARM (repeat-aware)' row to Table 3: the paper's settings with "
                     "`--repeat --repeat_explore=new --repeat_calibrate` (an extension beyond "
                     "the paper; the variant validation chose on repeat_shop), every seed.")
# The repeat-aware row's flags (narm_tf/configs/repeat_shop.cfg's).
REPEAT_FLAGS = ["--repeat", "--repeat_explore=new", "--repeat_calibrate"]
flags.DEFINE_enum("reference", "none", ["none", "yoochoose_sample"],
                  "Extra reference figures to print beside the measured ones.")

K = config_lib.K  # the metrics' cutoff, the one training selects and reports on
# Paper Table 3 (Recall@20 / MRR@20, %): YOOCHOOSE 1/64, YOOCHOOSE 1/4, DIGINETICA.
PAPER_TABLE3 = {
    "POP": ((6.71, 1.65), (1.33, 0.30), (0.91, 0.23)),
    "S-POP": ((30.44, 18.35), (27.08, 17.75), (21.07, 14.69)),
    "Item-KNN": ((51.60, 21.81), (52.31, 21.70), (28.35, 9.45)),
    "GRU-Rec (improved)": ((67.84, 29.00), (69.11, 29.22), (57.95, 24.93)),
    "NARM": ((68.32, 28.76), (69.73, 29.23), (62.58, 27.35)),
}
# Paper Table 2 (decoders, H = 100) and Table 4 (session features, d = 50 and 100), same columns.
PAPER_TABLE2 = {
    "fully connected": ((67.67, 29.17), (69.49, 29.54), (57.84, 24.77)),
    "bi-linear": ((68.32, 28.76), (69.73, 29.23), (62.58, 27.35)),
}
PAPER_TABLE4 = {  # variant -> hidden -> columns
    "global": {50: ((67.26, 26.95), (67.67, 27.10), (59.63, 23.52)),
               100: ((68.15, 28.37), (68.91, 28.48), (61.88, 26.51))},
    "local": {50: ((67.07, 26.79), (67.50, 27.21), (58.74, 22.91)),
              100: ((68.10, 28.38), (68.01, 27.36), (61.71, 26.04))},
    "hybrid": {50: ((68.28, 28.10), (69.17, 28.67), (61.73, 26.25)),
               100: ((68.32, 28.76), (69.73, 29.23), (62.58, 27.35))},
}
# Independently measured on the real YOOCHOOSE sample with another split tool.
SAMPLE_REFERENCE = {"POP": (8.9, 2.6), "S-POP": (38.1, 26.5), "Item-KNN": (40.8, 18.6),
                    "SR": (61.5, 34.3), "SKNN": (64.1, 32.0), "V-SKNN": (67.41, 35.82)}
BASELINE_NAMES = {"pop": "POP", "spop": "S-POP", "itemknn": "Item-KNN", "sr": "SR",
                  "sknn": "SKNN", "vsknn": "V-SKNN", "vsknn_div": "V-SKNN + div_score"}
# Baseline rows that are another row's model with settings (narm_tf.research.baselines' parameters).
BASELINE_SETTINGS = {"vsknn_div": ("vsknn", {"score_decay": True})}


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One trained model: the flags that differ from narm_tf.train's defaults, or a flagfile
    (tuned runs: it sets every hyperparameter, epochs, patience and batch size itself)."""

    name: str
    variant: str = "hybrid"
    decoder: str = "bilinear"
    hidden_units: int = 100
    seed: int = 0
    flagfile: str = ""
    repeat: bool = False


def model_runs(seeds: int, tuned_flagfile: str = "", repeat: bool = False) -> list[ModelRun]:
    """Every model the tables need, each trained once (Table 4's hybrid H=100 is NARM seed 0);
    with `tuned_flagfile`, the tuned NARM per seed too; with `repeat`, the repeat-aware NARM
    per seed."""
    runs = [ModelRun(f"narm_seed{s}", seed=s) for s in range(seeds)]
    runs += [ModelRun(f"gru_seed{s}", variant="global", decoder="dense", seed=s)
             for s in range(seeds)]
    runs.append(ModelRun("narm_dense", decoder="dense"))
    runs += [ModelRun(f"{v}_h{h}", variant=v, hidden_units=h)
             for h in (50, 100) for v in ("global", "local", "hybrid")
             if (v, h) != ("hybrid", 100)]
    if tuned_flagfile:
        runs += [ModelRun(f"tuned_seed{s}", seed=s, flagfile=tuned_flagfile)
                 for s in range(seeds)]
    if repeat:
        runs += [ModelRun(f"repeat_seed{s}", seed=s, repeat=True) for s in range(seeds)]
    return runs


def table4_run(variant: str, hidden: int) -> str:
    return "narm_seed0" if (variant, hidden) == ("hybrid", 100) else f"{variant}_h{hidden}"


# ------------------------------------------------------------------------------ running


class Runner:
    """Runs experiments once each, caching their results as JSON in OUT/cache."""

    def __init__(self, out: str, total: int):
        self.out = out
        self.cache = os.path.join(out, "cache")
        os.makedirs(self.cache, exist_ok=True)
        self.total, self.done, self.started = total, 0, time.time()

    def run(self, name: str, compute) -> dict:
        path = os.path.join(self.cache, f"{name}.json")
        self.done += 1
        prefix = f"[{self.done}/{self.total}] {name}"
        if os.path.exists(path):
            print(f"{prefix}: cached", flush=True)
            with open(path) as f:
                return json.load(f)
        print(f"{prefix}: running (elapsed {self._elapsed()})", flush=True)
        began = time.time()
        result = compute()
        result["seconds"] = round(time.time() - began, 1)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, path)
        print(f"{prefix}: done in {result['seconds']:.0f}s "
              f"(Recall@{K} {result['recall']:.2f}, MRR@{K} {result['mrr']:.2f}; "
              f"elapsed {self._elapsed()})", flush=True)
        return result

    def _elapsed(self) -> str:
        return f"{(time.time() - self.started) / 60:.1f} min"


def train_model(run: ModelRun, out: str) -> dict:
    """Trains one model with `python -m narm_tf.train` (a killed run resumes, a finished one
    is reused), then ranks the test split with it."""
    from narm_tf import evaluate
    from narm_tf.training import run_dir

    model_dir = os.path.join(out, "runs", run.name)
    command = train_command(run, model_dir)
    if run_dir.read_json(model_dir, run_dir.METRICS) is None:  # a finished run is reused
        log_path = os.path.join(out, "runs", f"{run.name}.log")
        with open(log_path, "a") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        if code == cli.INTERRUPTED_EXIT_CODE:
            raise KeyboardInterrupt
        if code:
            raise cli.CommandError(f"training {run.name} failed (exit code {code}); its last "
                                   f"line says why: {log_path}")
    results, _ = evaluate.evaluate_model_dir(model_dir)
    np.savez(os.path.join(model_dir, "test_ranks.npz"), ranks=results.ranks,
             lengths=results.lengths)
    best_epoch = run_dir.read_json(model_dir, run_dir.METRICS)["best_epoch"]
    measured = {"recall": results.recall, "mrr": results.mrr, "ndcg": results.ndcg,
                "coverage": results.coverage, "popularity_bias": results.popularity_bias}
    return {**table_values(measured), "count": len(results.ranks), "best_epoch": best_epoch,
            "by_kind": kind_values(results.by_kind)}


def train_command(run: ModelRun, model_dir: str) -> list[str]:
    """The `python -m narm_tf.train` command of `run` (later flags override the flagfile's)."""
    where = [f"--dataset={FLAGS.dataset}", f"--data_dir={FLAGS.data_dir}",
             f"--model_dir={model_dir}", f"--seed={run.seed}"]
    if run.flagfile:
        settings = [f"--flagfile={run.flagfile}"]
    else:
        settings = [f"--variant={run.variant}", f"--decoder={run.decoder}",
                    f"--hidden_units={run.hidden_units}", f"--epochs={FLAGS.epochs}",
                    f"--patience={FLAGS.patience}", f"--batch_size={FLAGS.batch_size}"]
        settings += REPEAT_FLAGS if run.repeat else []
    return [sys.executable, "-m", "narm_tf.train", *settings, *where]


def run_baseline(name: str, splits: dict, num_items: int) -> dict:
    from narm_tf.research import baselines

    model, params = BASELINE_SETTINGS.get(name, (name, {}))
    result = baselines.fit_and_evaluate(model, splits["train"], splits["validation"],
                                        splits["test"], num_items, k=K, **params)
    return {**table_values(result), "count": result["count"],
            "by_kind": kind_values(result["by_kind"])}


def table_values(measured: dict) -> dict:
    """Fractions -> the report's units: Recall, MRR, NDCG and coverage in %, popularity bias
    as the fraction it is; a figure that is None or absent is left out."""
    percent = {"recall", "mrr", "ndcg", "coverage"}
    return {key: 100 * measured[key] if key in percent else measured[key]
            for key in ("recall", "mrr", "ndcg", "coverage", "popularity_bias")
            if measured.get(key) is not None}


def kind_values(by_kind: dict) -> dict:
    """`metrics.metrics_by_kind`'s figures (fractions) -> the report's units: per kind its
    count, and share, Recall, MRR and NDCG in %; an empty group's figures (None) left out."""
    return {kind: {key: value if key == "count" else 100 * value
                   for key, value in row.items() if value is not None}
            for kind, row in by_kind.items()}


# ------------------------------------------------------------------------------ figures


def plot_attention(out: str, test, vocabulary, sessions: int = 10, seed: int = 0) -> str:
    """Figure 6: NARM's attention (seed 0) on randomly sampled test sessions, as each click's
    share of the local representation (`narm_tf.model.layers.attention_share`)."""
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from narm_tf.model import narm as narm_model
    from narm_tf.training import run_dir

    model = keras.models.load_model(
        run_dir.path(os.path.join(out, "runs", "narm_seed0"), run_dir.BEST_MODEL))
    explain = narm_model.attention_model(model)
    candidates = np.flatnonzero(test.lengths >= 5)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(candidates, min(sessions, len(candidates)), replace=False))
    # Raw alpha (eq. 7) has a per-session offset and is often negative: the figure shows each
    # click's share of the local representation, |alpha_j| ||h_j|| normalized to sum to 1.
    share = np.asarray(explain(test.prefixes[rows], training=False)["attention_share"])
    lengths = np.minimum(test.lengths[rows], test.prefixes.shape[1])
    shown = np.ma.masked_where(test.prefixes[rows] == 0, share)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    image = ax.imshow(shown, cmap="Reds", aspect="auto", vmin=0)
    ax.set_yticks(range(len(rows)), [f"session {test.session_ids[r]}" for r in rows])
    ax.set_xticks(range(int(lengths.max())), range(1, int(lengths.max()) + 1))
    ax.set_xlim(-0.5, lengths.max() - 0.5)
    ax.set_xlabel("click position in the session prefix (oldest first)")
    ax.set_title("NARM attention on sampled test sessions: each click's share of c_l")
    fig.colorbar(image, ax=ax, label="|alpha_tj| ||h_j||, normalized over the session's clicks")
    fig.tight_layout()
    path = os.path.join(out, "attention.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(out: str, names: list[str]) -> str:
    """Training curves: training loss and validation Recall@20 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, (loss_ax, recall_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        history = pd.read_csv(os.path.join(out, "runs", name, "history.csv"))
        epochs = np.arange(1, len(history) + 1)
        loss_ax.plot(epochs, history["loss"], label=name)
        recall_ax.plot(epochs, 100 * history[config_lib.MONITOR], label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    recall_ax.set(xlabel="epoch", ylabel=f"Recall@{K} (%)", title=f"Validation Recall@{K}")
    loss_ax.legend()
    recall_ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- report


def _paper_column(dataset: str) -> int | None:
    return {"yoochoose/yoochoose1_64": 0, "yoochoose/yoochoose1_4": 1, "diginetica": 2}.get(
        dataset)


def _paper_text(columns, column: int | None) -> str:
    """The paper's figures for this dataset's column, or all three columns for another dataset."""
    if column is not None:
        return f"{columns[column][0]:.2f} / {columns[column][1]:.2f}"
    return " · ".join(f"{r:.2f}/{m:.2f}" for r, m in columns)


def _length_table(out: str, seeds: int) -> list[str]:
    """Table 5: hits@20 by prefix length, summed over seeds' mean, NARM vs GRU-only."""
    from narm_tf import evaluate

    def rows_of(prefix):
        per_seed = []
        for s in range(seeds):
            loaded = np.load(os.path.join(out, "runs", f"{prefix}_seed{s}", "test_ranks.npz"))
            per_seed.append(evaluate.by_length(evaluate.Results(loaded["ranks"],
                                                                loaded["lengths"], K)))
        return per_seed

    narm, gru = rows_of("narm"), rows_of("gru")
    lines = ["| prefix length | test prefixes | GRU-only hits@20 | NARM hits@20 | improvement |",
             "|---|---|---|---|---|"]
    for i, row in enumerate(narm[0]):
        gru_hits = np.mean([seed[i]["hits"] for seed in gru])
        narm_hits = np.mean([seed[i]["hits"] for seed in narm])
        gain = f"{100 * (narm_hits - gru_hits) / gru_hits:+.2f}%" if gru_hits else "-"
        lines.append(f"| {row['length']} | {row['count']} | {gru_hits:.1f} | {narm_hits:.1f} "
                     f"| {gain} |")
    return lines


BEYOND_ACCURACY_NOTE = (
    "NDCG@20: mean of 1/log2(1 + rank), 0 beyond rank 20. Coverage@20: share of the catalogue "
    "in at least one top-20 list over the test prefixes. Pop. bias@20: mean training-label "
    "popularity of every recommended item, min-max normalized over the catalogue (0 = least, "
    "1 = most popular item). Ranks count ties against the target; a NaN or infinite target "
    "score, or a row holding any NaN, is a miss.")


def _cell(rows: list[dict], key: str, digits: int = 2, seeded: bool = False) -> str:
    """A figure, or for seeded runs mean ± standard deviation over the seeds; '-' when a
    cached run lacks it."""
    if any(key not in row for row in rows):
        return "-"
    values = np.array([row[key] for row in rows])
    if not seeded:
        return f"{values[0]:.{digits}f}"
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"


def table3_methods(results: dict, seeds: int) -> list[tuple[str, list[dict], bool]]:
    """Table 3's rows: (label, the cached result of each of its runs, whether seeded)."""
    methods = [(label, [results[f"baseline_{key}"]], False)
               for key, label in BASELINE_NAMES.items()]
    methods.append(("GRU-only (global, dense)", [results[f"gru_seed{s}"] for s in range(seeds)],
                    True))
    methods.append(("NARM", [results[f"narm_seed{s}"] for s in range(seeds)], True))
    if "tuned_seed0" in results:
        methods.append(("NARM (tuned on validation)",
                        [results[f"tuned_seed{s}"] for s in range(seeds)], True))
    if "repeat_seed0" in results:
        methods.append(("NARM (repeat-aware, beyond the paper)",
                        [results[f"repeat_seed{s}"] for s in range(seeds)], True))
    return methods


def table3_lines(results: dict, seeds: int, column: int | None, reference: dict) -> list[str]:
    """Table 3: every method's Recall, MRR, NDCG, coverage (%) and popularity bias @20, the
    paper's Recall / MRR and, if given, the reference figures on the same clicks."""
    header = ("| method | Recall@20 | MRR@20 | NDCG@20 | Coverage@20 | Pop. bias@20 "
              "| paper Recall@20 / MRR@20 |")
    lines = [header + (" same clicks, other split tool |" if reference else ""),
             "|---" * (7 + bool(reference)) + "|"]
    methods = table3_methods(results, seeds)
    paper_names = {"GRU-only (global, dense)": "GRU-Rec (improved)"}
    for label, rows, seeded in methods:
        paper = PAPER_TABLE3.get(paper_names.get(label, label))
        cells = [_cell(rows, key, 2, seeded) for key in ("recall", "mrr", "ndcg", "coverage")]
        cells += [_cell(rows, "popularity_bias", 4, seeded),
                  _paper_text(paper, column) if paper else "-"]
        if reference:
            ref = reference.get(label)
            cells.append(f"{ref[0]:.1f} / {ref[1]:.1f}" if ref else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["", BEYOND_ACCURACY_NOTE]


KIND_NOTE = (
    "Repeat: the target is among the prefix's clicks (the last 19 the models see); new: it "
    "is not. Share: the test prefixes' share of that kind. Every experiment's cache entry "
    "(cache/NAME.json, \"by_kind\") also holds NDCG@20 and the head / torso / tail targets "
    "by training popularity.")


def kind_table_lines(results: dict, seeds: int) -> list[str]:
    """Table 3 by kind of target: every method's Recall@20 / MRR@20 (%) on repeat targets and
    on new ones, with each kind's share of the test prefixes; '-' for an old cache entry."""
    lines = ["| method | repeat share | repeat Recall@20 | repeat MRR@20 | new share "
             "| new Recall@20 | new MRR@20 |", "|---" * 7 + "|"]
    for label, rows, seeded in table3_methods(results, seeds):
        cells = []
        for kind in ("repeat", "new"):
            figures = [row.get("by_kind", {}).get(kind, {}) for row in rows]
            cells += [_cell(figures[:1], "share"),  # the same test prefixes for every run
                      _cell(figures, "recall", 2, seeded), _cell(figures, "mrr", 2, seeded)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["", KIND_NOTE]


def command_line(argv: list[str]) -> str:
    """The command as the user typed it (`sys.argv`), for the report: its flags as given, so
    `--out` stays the user's own folder (relative, or `~/...`), never the expanded path."""
    script = os.path.basename(argv[0]) if argv else ""
    program = script if script == "narm-experiments" else "python -m narm_tf.experiments"
    return " ".join([program] + [_shell_word(arg) for arg in argv[1:]])


def _shell_word(arg: str) -> str:
    """`arg` quoted only where a shell would split or change it (path flags expand `~` and
    `$VARIABLES` themselves, so those may stay as typed)."""
    return arg if re.fullmatch(r"[\w@%+=:,./~$-]+", arg) else shlex.quote(arg)


def header_lines(command: str) -> list[str]:
    """The report's title and how it was made: `command` (see `command_line`) and its settings."""
    return [f"# NARM experiments on `{FLAGS.dataset}`", "",
            f"Generated by `{command}` (seeds {FLAGS.seeds}, up to {FLAGS.epochs} epochs, "
            f"patience {FLAGS.patience}, batch {FLAGS.batch_size}). Recall@20 and MRR@20 in %, "
            "over all items, on the test split; models selected on the validation split only."
            + (f" NARM (tuned): `--flagfile={FLAGS.tuned_flagfile}` (found on the validation "
               "split: `narm_tf.tune`, and what its header says), its own epochs, patience and "
               "batch size."
               if FLAGS.tuned_flagfile else ""), ""]


def write_report(out: str, results: dict, statistics: dict, plots: dict, wall: float,
                 command: str) -> str:
    import keras
    import tensorflow as tf

    seeds = FLAGS.seeds
    column = _paper_column(FLAGS.dataset)
    lines = header_lines(command) + ["## Data", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {key} | {value:,} |" if isinstance(value, int) else f"| {key} | {value:.2f} |"
              for key, value in sorted(statistics.items())]

    reference = SAMPLE_REFERENCE if FLAGS.reference == "yoochoose_sample" else {}
    lines += ["", "## Table 3: NARM against the baselines", ""]
    lines += table3_lines(results, seeds, column, reference)
    if column is None:
        lines += ["", "Paper figures (YOOCHOOSE 1/64 · 1/4 · DIGINETICA) are shown for context in "
                  "every table: this dataset is not one of the paper's."]
    lines += ["", "## Table 3 by kind of target: repeat and new targets", ""]
    lines += kind_table_lines(results, seeds)

    lines += ["", "## Table 2: decoders (NARM, seed 0)", "",
              "| decoder | Recall@20 | MRR@20 | paper Recall@20 / MRR@20 |", "|---|---|---|---|"]
    for label, name in (("fully connected", "narm_dense"), ("bi-linear", "narm_seed0")):
        lines.append(f"| {label} | {results[name]['recall']:.2f} | {results[name]['mrr']:.2f} | "
                     f"{_paper_text(PAPER_TABLE2[label], column)} |")

    lines += ["", "## Table 4: session features (seed 0, bilinear decoder)", "",
              "| session feature | H=50 Recall@20 / MRR@20 | paper | H=100 Recall@20 / MRR@20 "
              "| paper |", "|---|---|---|---|---|"]
    for variant in ("global", "local", "hybrid"):
        cells = []
        for hidden in (50, 100):
            r = results[table4_run(variant, hidden)]
            cells += [f"{r['recall']:.2f} / {r['mrr']:.2f}",
                      _paper_text(PAPER_TABLE4[variant][hidden], column)]
        lines.append(f"| NARM_{variant} | " + " | ".join(cells) + " |")

    lines += ["", f"## Table 5: correct predictions by prefix length (mean over {seeds} seeds)",
              ""] + _length_table(out, seeds)
    lines += ["", "## Figure 6: attention weights", "",
              f"![attention weights]({os.path.basename(plots['attention'])})", "",
              "## Training curves", "", f"![training curves]({os.path.basename(plots['curves'])})",
              "", "## Wall times", "", "| experiment | seconds | best epoch |", "|---|---|---|"]
    lines += [f"| {name} | {r['seconds']:.0f} | {r.get('best_epoch', '-')} |"
              for name, r in results.items()]
    lines += ["", "## Machine", "",
              f"- {platform.platform()}, {os.cpu_count()} CPU cores, {_cpu_model()}",
              f"- Python {platform.python_version()}, TensorFlow {tf.__version__}, "
              f"Keras {keras.__version__}",
              f"- Total wall time of the experiments run that produced this report: "
              f"{wall / 60:.1f} min (cached experiments count with the time they took)."]
    path = os.path.join(out, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from narm_tf.data import dataset as data

    out = FLAGS.out
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    dataset = data.Dataset(FLAGS.dataset, FLAGS.data_dir)
    splits = {s: dataset.split(s) for s in ("train", "validation", "test")}
    vocabulary, statistics = dataset.vocabulary, dataset.statistics
    runs = model_runs(FLAGS.seeds, FLAGS.tuned_flagfile, FLAGS.repeat_row)
    runner = Runner(out, len(BASELINE_NAMES) + len(runs))
    results = {}
    for key in BASELINE_NAMES:
        results[f"baseline_{key}"] = runner.run(
            f"baseline_{key}", lambda key=key: run_baseline(key, splits, len(vocabulary)))
    for run in runs:
        results[run.name] = runner.run(run.name, lambda run=run: train_model(run, out))
    plots = {"attention": plot_attention(out, splits["test"], vocabulary),
             "curves": plot_curves(out, ["narm_seed0", "gru_seed0"])}
    wall = sum(r["seconds"] for r in results.values())
    report = write_report(out, results, statistics, plots, wall, command_line(sys.argv))
    print(f"Report: {report}")


def run() -> None:
    """The `narm-experiments` command: parses the command line, then `main`."""
    cli.run(main, lambda: "rerun the same command to resume: finished experiments are cached, "
                          "a killed training run resumes")


if __name__ == "__main__":
    run()
