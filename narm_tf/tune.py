"""Hyperparameter search for NARM with KerasTuner, on the validation split only.

    python -m narm_tf.tune --flagfile=narm_tf/configs/yoochoose_sample.cfg --data_dir=DIR \
        --project_dir=runs/tune_sample [--max_trials=30 --max_minutes=55]

Every trial is a `narm_tf.train` run of the base flags (`--flagfile`, any train flag) with the
searched flags (`SEARCH_SPACE`) replaced: the same `narm_tf.training.trainer.build_and_compile`
and `fit` (early stopping and the best checkpoint on validation Recall@20), minus the test
evaluation. Only the train and
validation splits are ever loaded (`SPLITS`): the test split is never read. Trials never
`--refit` (they are scored on validation); a base `--refit` is written into best.cfg.

Objective (maximized): validation Recall@20 + MRR@20 (%) at the epoch `narm_tf.train` selects
(its best validation Recall@20). Both count because a practitioner compares on both, and MRR
moves less than Recall, so a plain sum lets an MRR gain weigh as much as a Recall gain.

The search is KerasTuner's Bayesian optimization (Gaussian process); its first trial is the base
flags themselves (where they lie in the space), so the table always holds the starting point.
The project folder (`--project_dir`) is KerasTuner's: a rerun continues the search (a trial cut
short is rerun from its start), `--overwrite` starts afresh. Results, rewritten after every
trial: `best.cfg` (a flagfile for `python -m narm_tf.train --flagfile=best.cfg --data_dir=...
--model_dir=...`) and `trials.csv`. The wall budget (`--max_minutes`) starts no trial after it
and stops a running one at the end of the epoch that passes it (`wall_clock`). A search that
holds no finished trial (the budget spent first, or every trial failed) ends with an error
(`NoTrialFinished`, exit code 1), as there is no best.cfg.
"""

from __future__ import annotations

import csv
import os
import shutil
import time

from absl import app, flags

from narm_tf import cli  # first: it quiets TensorFlow before anything imports it
from narm_tf import config as config_lib
from narm_tf.training import trainer

FLAGS = flags.FLAGS
SPLITS = ("train", "validation")  # What tuning may read. Never "test".
OBJECTIVE = "score"  # val Recall@K + val MRR@K, in %, at the selected epoch.
VAL_RECALL, VAL_MRR = config_lib.MONITOR, f"val_{config_lib.MRR}"  # trials.csv's columns
BEST_CONFIG = "best.cfg"
TRIALS_TABLE = "trials.csv"
BASE_CONFIG = "base.json"  # The base flags of the search, checked when a rerun continues it.
K = config_lib.K

# The search table, from each tunable setting's `search` in narm_tf/config.py (to search another
# train flag, give its setting one). Rows: ("choice", [values]), ("range", low, high, step) or
# ("log", low, high) (log-uniform).
#   SEARCH_SPACE       the rows always searched, in their `position` order;
#   OPTIONAL_SPACE     rows searched only when named in --search (and when train has the flag);
#   CONDITIONAL_SPACE  {flag: (switch, [True], row)}: rows that exist only while the switch is on
#                      (KerasTuner's conditional_scope), searched with it; in a trial where they
#                      are inactive, the flag keeps its default.
SEARCH_SPACE, OPTIONAL_SPACE, CONDITIONAL_SPACE = config_lib.search_tables()
# Flags that say where a run reads and writes (and its seed), not what it trains: never in
# best.cfg (`run_local` settings).
RUN_LOCAL = config_lib.run_local()

cli.define_path("project_dir", "runs/tune",
                "KerasTuner's project folder: trials, oracle state, best.cfg, trials.csv. "
                "A rerun continues its search; --overwrite starts afresh.")
flags.DEFINE_integer("max_trials", 30, "Trial budget: the search's total, over reruns.")
flags.DEFINE_float("max_minutes", 55.0,
                   "Wall-time budget of this invocation: no trial starts after it, and a running "
                   "trial stops at the end of the epoch that crosses it (scored by its best epoch "
                   "so far). 55 keeps a run on the YOOCHOOSE sample within 60 minutes on 2 "
                   "cores (an epoch there takes seconds to about two minutes).")
flags.DEFINE_list("search", [],
                  f"Optional rows to search beside SEARCH_SPACE: {sorted(OPTIONAL_SPACE)} "
                  "(repeat brings its CONDITIONAL_SPACE rows: explore mode, calibration).")


def search_space(names=(), config: dict | None = None) -> dict:
    """SEARCH_SPACE plus the OPTIONAL_SPACE rows in `names` and the CONDITIONAL_SPACE rows under
    them; ValueError for a row unknown or whose flag `narm_tf.train` does not have."""
    config = config or config_lib.default_config()
    space = dict(SEARCH_SPACE)
    for name in names:
        if name not in OPTIONAL_SPACE:
            raise ValueError(f"--search={name}: not an optional row; choose from "
                             f"{sorted(OPTIONAL_SPACE)}")
        if name not in config:
            raise ValueError(f"--search={name}: narm_tf.train has no --{name} flag")
        space[name] = OPTIONAL_SPACE[name]
    for name, (parent, _, row) in CONDITIONAL_SPACE.items():
        if parent in space and name in config:
            space[name] = row
    return space


def active_values(hyperparameters, space: dict, base: dict) -> dict:
    """A trial's values of the rows of `space` that are active in it (every row not under a
    condition, and the CONDITIONAL_SPACE rows whose condition holds); booleans as booleans
    (KerasTuner keeps a boolean choice as 0/1)."""
    return {name: _typed(hyperparameters.get(name), base[name]) for name in space
            if name in hyperparameters.values and hyperparameters.is_active(name)}


def _typed(value, base_value):
    return bool(value) if isinstance(base_value, bool) else value


def _in_space(row: tuple, value) -> bool:
    kind, *spec = row
    if kind == "choice":
        return value in spec[0]
    low, high = spec[0], spec[1]
    if kind == "range":
        steps = (value - low) / spec[2]
        return low <= value <= high and abs(steps - round(steps)) < 1e-6
    return low <= value <= high


def define_hyperparameters(hp, space: dict, base: dict) -> None:
    """Declares each row of `space` in KerasTuner's `hp` (a CONDITIONAL_SPACE row inside its
    condition's scope), defaulting to the base flag's value when the space holds it (so the
    first trial is the base configuration)."""
    for name, row in space.items():
        if name in CONDITIONAL_SPACE:
            parent, values, _ = CONDITIONAL_SPACE[name]
            with hp.conditional_scope(parent, values):
                _declare(hp, name, row, base)
        else:
            _declare(hp, name, row, base)


def _declare(hp, name: str, row: tuple, base: dict) -> None:
    kind, *spec = row
    default = base[name] if _in_space(row, base[name]) else None
    if kind == "choice":
        hp.Choice(name, spec[0], default=default)
    elif kind == "range":
        hp.Float(name, spec[0], spec[1], step=spec[2], default=default)
    elif kind == "log":
        hp.Float(name, spec[0], spec[1], sampling="log", default=default)
    else:
        raise ValueError(f"search row {name}: unknown kind {kind!r}")


def trial_config(base: dict, values: dict, model_dir: str) -> dict:
    """The base flags with a trial's (active) values, writing into `model_dir`: a train config.
    A CONDITIONAL_SPACE row whose condition the trial does not meet takes its default."""
    idle = [name for name, (parent, when, _) in CONDITIONAL_SPACE.items()
            if name not in values and parent in values and values[parent] not in when]
    defaults = config_lib.default_config() if idle else {}
    config = {**base, **{name: defaults[name] for name in idle}, **values,
              "model_dir": model_dir, "overwrite": True,
              "run_id": os.path.basename(os.path.dirname(model_dir)), "export_base": ""}
    for name, value in values.items():  # KerasTuner gives floats for stepped ranges
        if isinstance(base[name], bool):
            config[name] = bool(value)
        elif isinstance(base[name], int):
            config[name] = int(value)
        elif isinstance(base[name], float):
            config[name] = _round(float(value))
    config_lib.check_config(config)
    return config


def load_splits(config: dict) -> tuple[object, int]:
    """The dataset (`narm_tf.data.dataset.Dataset`, in memory) with its train and validation
    splits read (nothing else), and the vocabulary size."""
    from narm_tf.data import dataset as data

    dataset = data.Dataset(config["dataset"], config["data_dir"], input="memory")
    for split in SPLITS:
        dataset.split(split)
    return dataset, dataset.num_items


def wall_clock(deadline: float):
    """A callback stopping training at the end of the first epoch past `deadline` (a time)."""
    import keras

    class WallClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if time.time() > deadline:
                print(f"Wall-time budget spent: trial stopped after epoch {epoch + 1}.",
                      flush=True)
                self.model.stop_training = True

    return WallClock()


def run_training(config: dict, dataset, num_items: int, strategy,
                 deadline: float = float("inf")) -> dict:
    """The trainer's model and fit for `config`, stopped after the epoch that passes
    `deadline`; the selected epoch's validation scores (%; with --repeat_calibrate, after
    the trainer's calibration on validation; with --covisit, with the prior the trainer adds),
    the epochs run and the seconds taken."""
    import keras

    from narm_tf.training import run_dir

    started = time.time()
    shutil.rmtree(config["model_dir"], ignore_errors=True)  # a trial cut short restarts
    os.makedirs(config["model_dir"])
    keras.backend.clear_session()
    keras.utils.set_random_seed(config["seed"])
    model = trainer.build_and_compile(config, num_items, strategy)
    trainer.fit(config, model, dataset, resuming=False, extra_callbacks=(wall_clock(deadline),))
    with open(run_dir.path(config["model_dir"], run_dir.HISTORY)) as f:
        history = list(csv.DictReader(f))
    best = max(history, key=lambda row: float(row[VAL_RECALL]))  # train's selection
    recall, mrr = 100 * float(best[VAL_RECALL]), 100 * float(best[VAL_MRR])
    if config.get("repeat_calibrate") or config.get("covisit"):  # scored as train delivers it
        selected = keras.models.load_model(run_dir.path(config["model_dir"], run_dir.BEST_MODEL))
    if config.get("repeat_calibrate"):  # calibrated on validation
        calibration = trainer.calibrate(config, selected, dataset)
        recall, mrr = 100 * calibration[config_lib.RECALL], 100 * calibration[config_lib.MRR]
    if config.get("covisit"):  # and with its prior, weighted on validation as train does
        _, chosen = trainer.covisit_prior(config, selected, dataset)
        recall, mrr = 100 * chosen["recall"], 100 * chosen["mrr"]
    return {OBJECTIVE: recall + mrr, VAL_RECALL: recall, VAL_MRR: mrr,
            "best_epoch": int(best["epoch"]) + 1, "epochs_run": len(history),
            "seconds": round(time.time() - started, 1)}


def make_tuner(base: dict, space: dict, project_dir: str, max_trials: int, deadline: float,
               overwrite: bool):
    """A KerasTuner BayesianOptimization tuner whose trials are narm_tf.train runs."""
    import keras_tuner as kt

    class BudgetedOracle(kt.oracles.BayesianOptimizationOracle):
        """Bayesian optimization that starts no trial after `deadline` and whose first trial
        is the base configuration (the hyperparameters' defaults)."""

        def populate_space(self, trial_id):
            if time.time() > deadline:
                print(f"Wall-time budget spent: no new trial ({len(self.trials)} so far).",
                      flush=True)
                return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
            if not self.trials:
                return {"status": kt.engine.trial.TrialStatus.RUNNING,
                        "values": self.hyperparameters.values.copy()}
            return super().populate_space(trial_id)

    class NarmTuner(kt.Tuner):
        """Runs each trial as `run_training` of the base config with the trial's values."""

        def run_trial(self, trial, dataset, num_items, strategy, **_):
            values = active_values(trial.hyperparameters, space, base)
            model_dir = os.path.join(self.get_trial_dir(trial.trial_id), "run")
            config = trial_config(base, values, model_dir)
            try:
                result = run_training(config, dataset, num_items, strategy, deadline)
            except trainer.Diverged as error:
                print(f"trial {trial.trial_id}: {_describe(values)} -> diverged", flush=True)
                raise kt.errors.FailedTrialError(str(error)) from error
            print(f"trial {trial.trial_id}: {_describe(values)} -> val Recall@{K} "
                  f"{result[VAL_RECALL]:.2f} MRR@{K} {result[VAL_MRR]:.2f} (epoch "
                  f"{result['best_epoch']}/{result['epochs_run']}) in {result['seconds']:.0f}s",
                  flush=True)
            return result

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            write_results(self.oracle, base, space, project_dir)

    hp = kt.HyperParameters()
    define_hyperparameters(hp, space, base)
    oracle = BudgetedOracle(objective=kt.Objective(OBJECTIVE, "max"), max_trials=max_trials,
                            hyperparameters=hp, seed=base["seed"], num_initial_points=4,
                            max_consecutive_failed_trials=5)
    directory, name = os.path.split(os.path.abspath(project_dir))
    return NarmTuner(oracle=oracle, directory=directory, project_name=name, overwrite=overwrite)


def _describe(values: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())


def _flag_line(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        return f"--{name}={','.join(str(v) for v in value)}"
    return f"--{name}={value}"


def best_flagfile(base: dict, values: dict, header: list[str]) -> str:
    """A train flagfile: the dataset, epochs, patience, the searched values and every other
    base flag that differs from train's default, except where a run reads and writes."""
    defaults = config_lib.default_config()
    config = trial_config(base, values, "unused/run")
    names = [n for n in defaults if n not in RUN_LOCAL and
             (n in ("dataset", "epochs", "patience") or n in values or config[n] != defaults[n])]
    return "\n".join([f"# {line}" for line in header] + [_flag_line(n, config[n]) for n in names])


def _round(value):
    """Floats as best.cfg writes them (KerasTuner's stepped ranges give 0.35000000000000003)."""
    return round(value, 10) if isinstance(value, float) else value


def _cell(metric: str, value: float):
    """KerasTuner keeps metrics as floats: epochs back to integers, scores to 4 decimals."""
    return int(value) if metric in ("best_epoch", "epochs_run") else round(value, 4)


def write_results(oracle, base: dict, space: dict, project_dir: str) -> None:
    """trials.csv (every trial, in start order) and best.cfg (the best completed trial)."""
    columns = ["trial", "status", *space, VAL_RECALL, VAL_MRR, OBJECTIVE,
               "best_epoch", "epochs_run", "seconds"]
    with open(os.path.join(project_dir, TRIALS_TABLE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for trial_id in oracle.start_order:
            trial = oracle.trials[trial_id]
            hyperparameters = trial.hyperparameters
            values = active_values(hyperparameters, space, base)
            metrics = {m: _cell(m, trial.metrics.get_best_value(m))
                       for m in columns[len(space) + 2:] if trial.metrics.exists(m)}
            writer.writerow([trial_id, trial.status,
                             *(_round(values.get(n, "" if n in hyperparameters.values
                                                 else None)) for n in space),
                             *(metrics.get(m, "") for m in columns[len(space) + 2:])])
    best = oracle.get_best_trials(1)
    if not best or best[0].score is None:
        return
    trial = best[0]
    values = active_values(trial.hyperparameters, space, base)
    get = trial.metrics.get_best_value
    header = [f"narm_tf.tune: best of {len(oracle.trials)} trials (trial {trial.trial_id}), "
              f"selected on validation only: Recall@{K} {get(VAL_RECALL):.2f}, "
              f"MRR@{K} {get(VAL_MRR):.2f} at epoch {int(get('best_epoch'))}.",
              "Pass --data_dir and --model_dir on the command line."]
    with open(os.path.join(project_dir, BEST_CONFIG), "w") as f:
        f.write(best_flagfile(base, values, header) + "\n")


def check_base(project_dir: str, base: dict) -> None:
    """Records the search's base flags in a new project; a rerun must pass the same ones
    (ValueError naming the flags that differ), as its trials would not be comparable."""
    import json

    path = os.path.join(project_dir, BASE_CONFIG)
    kept = {k: v for k, v in base.items() if k not in RUN_LOCAL or k == "seed"}
    if not os.path.exists(path):
        with open(path, "w") as f:
            json.dump(kept, f, indent=2)
        return
    with open(path) as f:
        earlier = json.load(f)
    changed = [f"--{k}: {earlier.get(k)!r} there, {v!r} now" for k, v in kept.items()
               if earlier.get(k) != (list(v) if isinstance(v, tuple) else v)]
    if changed:
        raise ValueError(f"{project_dir} holds a search with other base flags ("
                         + "; ".join(changed) + "): pass the same flags to continue it, "
                         "another --project_dir, or --overwrite to start afresh")


def tune(base: dict, project_dir: str, max_trials: int, max_minutes: float,
         search=(), overwrite: bool = False):
    """Runs (or continues) the search; returns the tuner. Reads the train and validation
    splits only."""
    config_lib.check_config(base)
    space = search_space(search, base)
    if overwrite:
        shutil.rmtree(project_dir, ignore_errors=True)
    os.makedirs(project_dir, exist_ok=True)
    check_base(project_dir, base)
    deadline = time.time() + 60 * max_minutes
    dataset, num_items = load_splits(base)
    print(f"{base['dataset']}: {num_items} items; " +
          ", ".join(f"{s} {len(dataset.split(s))} prefixes" for s in SPLITS), flush=True)
    tuner = make_tuner(base, space, project_dir, max_trials, deadline, overwrite=False)
    done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    if done:
        print(f"Continuing the search in {project_dir}: {done} trials done.", flush=True)
    tuner.search(dataset, num_items, trainer.make_strategy(), verbose=0)
    write_results(tuner.oracle, base, space, project_dir)
    check_finished(tuner.oracle, project_dir, max_minutes)
    return tuner


class NoTrialFinished(cli.CommandError):
    """The search holds no scored trial: there is no best.cfg to name."""


def check_finished(oracle, project_dir: str, max_minutes: float) -> None:
    """NoTrialFinished unless some trial of the search (this run's or an earlier one's)
    completed with a score."""
    trials = list(oracle.trials.values())
    if any(t.status == "COMPLETED" and t.score is not None for t in trials):
        return
    failed = sum(t.status == "FAILED" for t in trials)
    why = (f"{failed} diverged or failed (see {TRIALS_TABLE})" if failed else
           f"the wall-time budget --max_minutes={max_minutes:g} was spent first")
    raise NoTrialFinished(f"no trial finished ({len(trials)} started, {why}): "
                          f"{os.path.join(project_dir, BEST_CONFIG)} was not written")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    trainer.configure_devices(FLAGS.num_cpu_devices)
    base = config_lib.from_flags(FLAGS)
    started = time.time()
    tune(base, FLAGS.project_dir, FLAGS.max_trials, FLAGS.max_minutes, FLAGS.search,
         FLAGS.overwrite)
    print(f"Search done in {(time.time() - started) / 60:.1f} min: "
          f"{os.path.join(FLAGS.project_dir, BEST_CONFIG)}, "
          f"{os.path.join(FLAGS.project_dir, TRIALS_TABLE)}", flush=True)


def resume_hint() -> str:
    """What to do after Ctrl-C: the same command continues the search."""
    return ("rerun the same command" + (" without --overwrite" if FLAGS.overwrite else "")
            + " to continue the search (a trial cut short reruns from its start)")


def run() -> None:
    """The `narm-tune` command: parses the command line, then `main`."""
    config_lib.define_flags()
    cli.run(main, resume_hint)


if __name__ == "__main__":
    run()
