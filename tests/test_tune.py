"""narm_tf.tune: real KerasTuner searches of real narm_tf.train runs on a tiny synthetic log,
with the test split's files removed (any read of it fails), resumed after an interruption;
best.cfg parsed by absl as narm_tf.train parses it and trained."""

import csv
import os
import re
import shutil
import subprocess
import sys

import pytest
from absl import flags

from conftest import ROOT

DATASET = "yoochoose/yoochoose_full"
# A small space, so a trial takes seconds: the table is the module's extension point.
SMALL_SPACE = {"learning_rate": ("choice", [0.003, 0.01]),
               "hidden_units": ("choice", [8, 16]),
               "epochs": ("choice", [1, 2])}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """(full, without_test): a synthetic log built with the real YOOCHOOSE builder, and a copy
    whose test split's files are deleted, so reading that split raises."""
    from narm_tf import synthetic
    from narm_tf.data import dataset as data

    root = tmp_path_factory.mktemp("tune_data")
    manual = root / "manual"
    manual.mkdir()
    synthetic.write_synthetic_clicks(str(manual / "yoochoose-clicks.dat"), num_sessions=600,
                                     num_items=60, seed=5)
    full = root / "tfds"
    data.build_dataset(DATASET, manual_dir=str(manual), data_dir=str(full))
    without_test = root / "tfds_without_test"
    shutil.copytree(full, without_test)
    removed = list(without_test.rglob("*-test.tfrecord*"))
    assert removed
    for path in removed:
        path.unlink()
    return str(full), str(without_test)


def _base(data_dir, **overrides):
    from narm_tf import config as config_lib

    return config_lib.default_config(**{
        "dataset": DATASET, "data_dir": data_dir, "batch_size": 64, "embedding_dim": 8,
        "hidden_units": 16, "eval_batch_size": 256, "steps_per_epoch": 8,
        "steps_per_execution": 4, "jit_compile": "off", "patience": 1, **overrides})


def _rows(project):
    with open(os.path.join(project, "trials.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def recorded_splits(monkeypatch):
    """Every split name read into memory (narm_tf.data.dataset.Dataset.split) while the test
    runs (tuning reads in memory)."""
    from narm_tf.data import dataset as data

    requested = []
    real = data.Dataset.split

    def recording(self, split):
        requested.append(split)
        return real(self, split)

    monkeypatch.setattr(data.Dataset, "split", recording)
    return requested


def test_the_test_split_really_cannot_be_read_in_the_copy(data_dirs):
    from narm_tf.data import dataset as data

    _, without_test = data_dirs
    dataset = data.Dataset(DATASET, without_test)
    assert len(dataset.split("validation")) > 0
    with pytest.raises(Exception, match="test.tfrecord"):
        dataset.split("test")


def test_interrupted_search_resumes_reads_no_test_and_writes_a_trainable_best_cfg(
        data_dirs, tmp_path, monkeypatch, recorded_splits, capsys):
    from narm_tf import config as config_lib
    from narm_tf import train, tune
    from narm_tf.training import run_dir, trainer

    full, without_test = data_dirs
    monkeypatch.setattr(tune, "SEARCH_SPACE", SMALL_SPACE)
    project = str(tmp_path / "project")
    real_run, calls = tune.run_training, []

    def interrupted_second_time(config, *args):
        calls.append(config["hidden_units"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped in the middle of trial 1
        return real_run(config, *args)

    monkeypatch.setattr(tune, "run_training", interrupted_second_time)
    with pytest.raises(KeyboardInterrupt):
        tune.tune(_base(without_test), project, max_trials=3, max_minutes=30)
    first = _rows(project)
    assert [(row["trial"], row["status"]) for row in first] == [("0", "COMPLETED")]
    # Trial 0 is the base configuration where the space holds it (hidden_units=16), else the
    # first choice (learning_rate 0.003, epochs 1).
    assert (first[0]["learning_rate"], first[0]["hidden_units"], first[0]["epochs"]) == (
        "0.003", "16", "1")

    monkeypatch.setattr(tune, "run_training", real_run)
    with pytest.raises(ValueError, match=r"other base flags \(--embedding_dim: 8 there, 4 now\)"):
        tune.tune(_base(without_test, embedding_dim=4), project, max_trials=3, max_minutes=30)
    capsys.readouterr()
    tune.tune(_base(without_test), project, max_trials=3, max_minutes=30)
    out = capsys.readouterr().out
    assert "Continuing the search" in out and "1 trials done" in out
    assert "trial 0:" not in out and "trial 1:" in out and "trial 2:" in out
    rows = _rows(project)
    assert [(row["trial"], row["status"]) for row in rows] == [
        ("0", "COMPLETED"), ("1", "COMPLETED"), ("2", "COMPLETED")]
    assert rows[0] == first[0]  # kept, not rerun
    for row in rows:
        assert float(row["score"]) == pytest.approx(
            float(row["val_recall@20"]) + float(row["val_mrr@20"]), abs=1e-3)
        assert 1 <= int(row["best_epoch"]) <= int(row["epochs_run"]) <= int(row["epochs"])
    # The budget is spent: a third run starts nothing.
    tune.tune(_base(without_test), project, max_trials=3, max_minutes=30)
    assert "trial " not in capsys.readouterr().out.replace("trials done", "")

    assert set(recorded_splits) == {"train", "validation"}

    # best.cfg: the best trial's values, read by absl exactly as narm_tf.train reads flags.
    path = os.path.join(project, "best.cfg")
    text = open(path).read()
    best = rows[int(re.search(r"\(trial (\d+)\)", text).group(1))]
    assert float(best["score"]) == max(float(row["score"]) for row in rows)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert "--dataset=" + DATASET in lines
    assert not any(line.startswith(("--data_dir", "--model_dir", "--seed")) for line in lines)
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    model_dir = str(tmp_path / "from_best_cfg")
    flag_values(["narm_tf.train", f"--flagfile={path}", f"--data_dir={full}",
                 f"--model_dir={model_dir}"])
    config = config_lib.from_flags(flag_values)
    assert config["learning_rate"] == float(best["learning_rate"])
    assert config["hidden_units"] == int(best["hidden_units"])
    assert config["epochs"] == int(best["epochs"]) and config["patience"] == 1
    assert (config["embedding_dim"], config["steps_per_epoch"]) == (8, 8)  # from the base
    metrics = trainer.train(config)
    trained = run_dir.read_json(model_dir, run_dir.CONFIG)
    assert (trained["learning_rate"], trained["hidden_units"]) == (
        float(best["learning_rate"]), int(best["hidden_units"]))
    assert metrics["test"]["count"] > 0


def test_a_search_that_finishes_no_trial_fails_in_one_line_and_names_no_best_cfg(data_dirs,
                                                                                 tmp_path):
    project = tmp_path / "project"
    run = subprocess.run(
        [sys.executable, "-m", "narm_tf.tune", f"--dataset={DATASET}",
         f"--data_dir={data_dirs[1]}", f"--project_dir={project}", "--max_minutes=0.001"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stderr and run.stderr.splitlines()[-1] == (
        "narm_tf.tune: no trial finished (0 started, the wall-time budget --max_minutes=0.001 "
        f"was spent first): {project}/best.cfg was not written")
    assert "Search done" not in run.stdout and "Wall-time budget spent" in run.stdout
    assert _rows(project) == []  # no trial started after the budget
    assert not (project / "best.cfg").exists()


def test_a_running_trial_stops_after_the_epoch_that_passes_the_deadline(data_dirs, tmp_path):
    from narm_tf import tune
    from narm_tf.training import trainer

    _, without_test = data_dirs
    config = tune.trial_config(_base(without_test, epochs=4, patience=4), {},
                               str(tmp_path / "trial_00" / "run"))
    splits, num_items = tune.load_splits(config)
    strategy = trainer.make_strategy()
    stopped = tune.run_training(config, splits, num_items, strategy, deadline=0.0)
    assert stopped["epochs_run"] == 1 and stopped["best_epoch"] == 1
    whole = tune.run_training(config, splits, num_items, strategy)
    assert whole["epochs_run"] == 4


def test_flagfile_lines_parse_back_with_lists_and_booleans():
    from narm_tf import config as config_lib
    from narm_tf import train, tune

    base = config_lib.default_config(length_buckets=["2", "4"], train_metrics=True,
                                model_dir="somewhere", seed=7)
    text = tune.best_flagfile(base, {"learning_rate": 0.004, "batch_size": 256.0}, ["header"])
    lines = text.splitlines()
    assert lines[0] == "# header"
    assert "--length_buckets=2,4" in lines and "--train_metrics" in lines
    assert "--batch_size=256" in lines and "--learning_rate=0.004" in lines
    assert not any(line.startswith(("--model_dir", "--seed", "--data_dir")) for line in lines)
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["narm_tf.train", *lines[1:]])
    assert flag_values.length_buckets == ["2", "4"] and flag_values.train_metrics is True
    assert flag_values.batch_size == 256 and flag_values.seed == 0


def test_search_rows_are_train_flags_and_optional_rows_need_the_flag():
    from narm_tf import config as config_lib
    from narm_tf import tune

    config = config_lib.default_config()
    assert set(tune.SEARCH_SPACE) <= set(config)
    with pytest.raises(ValueError, match="--search=dropout: not an optional row"):
        tune.search_space(["dropout"], config)
    # The default search holds the repeat mechanism and the co-visitation prior.
    assert tune.SEARCH_SPACE["repeat"] == ("choice", [False, True])
    assert tune.SEARCH_SPACE["covisit"] == ("choice", [0, 100])
    with pytest.raises(ValueError, match="--search=repeat: not an optional row"):
        tune.search_space(["repeat"], config)
    assert tune.search_space(["learning_rate_decay"], config)["learning_rate_decay"][0] == "choice"
    with pytest.raises(ValueError, match="--search=learning_rate_decay: narm_tf.train has no"):
        tune.search_space(["learning_rate_decay"],
                          {k: v for k, v in config.items() if k != "learning_rate_decay"})
    # Every value of every row passes train's own flag checks.
    for name, (kind, *spec) in {**tune.SEARCH_SPACE, **tune.OPTIONAL_SPACE}.items():
        for value in (spec[0] if kind == "choice" else spec[:2]):
            config_lib.check_config({**config, name: value})


def test_repeat_modes_are_declared_under_repeat_and_idle_without_it():
    import keras_tuner as kt

    from narm_tf import config as config_lib
    from narm_tf import tune

    base = config_lib.default_config(repeat=True, repeat_explore="new", repeat_calibrate=True)
    space = tune.search_space([], base)
    assert {"repeat_explore", "repeat_calibrate"} <= set(space)  # under repeat, searched too
    hp = kt.HyperParameters()
    tune.define_hyperparameters(hp, space, base)
    assert tune.active_values(hp, space, base)["repeat_explore"] == "new"  # trial 0: the base
    hp.values["repeat"] = False
    values = tune.active_values(hp, space, base)
    assert "repeat_explore" not in values and "repeat_calibrate" not in values
    # The base's repeat_explore=new would fail train's check without --repeat: the idle default.
    config = tune.trial_config(base, values, "project/trial_01/run")
    assert (config["repeat"], config["repeat_explore"], config["repeat_calibrate"]) == (
        False, "all", False)


def test_repeat_search_scores_calibrated_trials_as_train_delivers_them(data_dirs, tmp_path,
                                                                        monkeypatch):
    from narm_tf import tune
    from narm_tf.training import trainer

    monkeypatch.setattr(tune, "SEARCH_SPACE", {"epochs": ("choice", [1]),
                                               "repeat": ("choice", [False, True])})
    calibrations, priors = [], []
    real_calibrate, real_prior = trainer.calibrate, trainer.covisit_prior

    def recording(config, model, splits):
        calibrations.append(real_calibrate(config, model, splits))
        return calibrations[-1]

    def recording_prior(config, model, dataset):
        model, chosen = real_prior(config, model, dataset)
        priors.append(chosen)
        return model, chosen

    monkeypatch.setattr(trainer, "calibrate", recording)
    monkeypatch.setattr(trainer, "covisit_prior", recording_prior)
    project = str(tmp_path / "project")
    base = _base(data_dirs[1], repeat=True, repeat_explore="new", repeat_calibrate=True,
                 covisit=10)
    tune.tune(base, project, max_trials=5, max_minutes=30)
    rows = [row for row in _rows(project) if row["status"] == "COMPLETED"]
    assert (rows[0]["repeat"], rows[0]["repeat_explore"], rows[0]["repeat_calibrate"]) == (
        "True", "new", "True")  # trial 0: the base
    assert {row["repeat"] for row in rows} == {"True", "False"}
    calibrated = [row for row in rows if row["repeat_calibrate"] == "True"]
    assert len(calibrated) == len(calibrations) >= 1
    # Every trial is scored with the prior train adds (after the calibration, when on), the
    # prior's weight 0 being the calibrated model's figures.
    assert len(priors) == len(rows)
    for row, chosen in zip(rows, priors, strict=True):
        assert float(row["val_recall@20"]) == pytest.approx(100 * chosen["recall"], abs=1e-3)
        assert float(row["val_mrr@20"]) == pytest.approx(100 * chosen["mrr"], abs=1e-3)
    calibrated_priors = [chosen for row, chosen in zip(rows, priors, strict=True)
                         if row["repeat_calibrate"] == "True"]
    for chosen, calibration in zip(calibrated_priors, calibrations, strict=True):
        assert chosen["grid"][0]["recall"] == pytest.approx(calibration["recall@20"], abs=1e-5)
        assert chosen["grid"][0]["mrr"] == pytest.approx(calibration["mrr@20"], abs=1e-5)
    for row in rows:
        if row["repeat"] == "False":  # inactive rows: empty cells
            assert row["repeat_explore"] == row["repeat_calibrate"] == ""
