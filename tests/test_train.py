"""narm_tf.train end to end: real TFDS build, real model.fit, resume, divergence, the run
folder's owner and identity, flag checks, mirrored replicas."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

DATASET = "yoochoose/yoochoose_full"
# Without XLA (its compile costs ~15 s a run here) except where a test says otherwise: the
# properties tested do not depend on it; test_model and the demo run the XLA path.
SMALL = ("--batch_size=64", "--embedding_dim=16", "--hidden_units=16", "--eval_batch_size=256",
         "--jit_compile=off")


@pytest.fixture
def data_dir(synthetic_data_dir):
    return synthetic_data_dir


def _config(data_dir, model_dir, **overrides):
    from narm_tf import config as config_lib

    small = {"batch_size": 64, "embedding_dim": 16, "hidden_units": 16, "eval_batch_size": 256,
             "jit_compile": "off"}
    return config_lib.default_config(**{"dataset": DATASET, "data_dir": data_dir,
                                        "model_dir": str(model_dir), **small, **overrides})


def _train_command(data_dir, model_dir, *extra):
    return [sys.executable, "-m", "narm_tf.train", f"--dataset={DATASET}",
            f"--data_dir={data_dir}", f"--model_dir={model_dir}", *SMALL, *extra]


def _run(command, timeout=300, returncode=0):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == returncode, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _json(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


def test_train_writes_results_that_belong_together_and_beat_popularity(data_dir, tmp_path):
    import keras

    from narm_tf import evaluate
    from narm_tf.data import dataset as data
    from narm_tf.model import gru, narm
    from narm_tf.training import run_dir, trainer

    model_dir = tmp_path / "run"
    out = _run(_train_command(data_dir, model_dir, "--epochs=4", "--jit_compile=auto"))  # XLA
    metrics, config = _json(model_dir, "metrics.json"), _json(model_dir, "config.json")
    dataset = data.Dataset(DATASET, data_dir)
    test = dataset.split("test")
    assert metrics["test"]["count"] == metrics["popularity_baseline"]["count"] == len(test)
    # The synthetic log is learnable: NARM must beat popularity by a wide margin.
    assert metrics["test"]["recall@20"] >= metrics["popularity_baseline"]["recall@20"] + 15
    assert config["hidden_units"] == 16 and config["learning_rate"] == 1e-3
    assert metrics["run_id"] == config["run_id"] == _json(model_dir, "best.json")["run_id"]
    assert config["vocabulary_size"] == dataset.num_items
    assert [row["epoch"] for row in _history(model_dir)] == ["0", "1", "2", "3"]
    assert "Recall@20" in out and "Starting run " + config["run_id"] in out
    vocabulary = dataset.vocabulary
    rows = (model_dir / "vocabulary.tsv").read_text().splitlines()
    assert rows[0] == "index\titem_id\ttrain_count" and len(rows) == len(vocabulary) + 1
    assert rows[1].split("\t")[1] == str(vocabulary[0])

    results, table = evaluate.evaluate_model_dir(str(model_dir))
    assert f"{metrics['test']['recall@20']:6.2f}%" in evaluate.format_summary("NARM", results)
    # 64-row batches are stepped as one row set; the default 512 in four.
    layer = keras.models.load_model(str(model_dir / "best.keras")).get_layer(narm.GRU)
    assert layer.phases == gru.phases_for(64) == 1 and gru.phases_for(512) == 4
    assert "19+" in evaluate.format_by_length(table)

    # The same settings again: a finished run is never silently replaced (the command ends
    # on this error of our checks in one line, exit code 2: narm_tf.cli, test_cli).
    with pytest.raises(run_dir.RunFolderError, match="finished run(.|\n)*--overwrite"):
        trainer.train(_config(data_dir, model_dir, epochs=4, jit_compile="auto"))
    assert _json(model_dir, "metrics.json") == metrics


def test_reused_folder_of_another_run_is_refused_then_overwritten_cleanly(data_dir, tmp_path):
    from narm_tf import evaluate
    from narm_tf.training import run_dir, trainer

    first = tmp_path / "first"
    trainer.train(_config(data_dir, first, epochs=1, steps_per_epoch=16))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    with pytest.raises(run_dir.RunFolderError, match="--hidden_units: 16 there, 8 now"):
        trainer.train(_config(data_dir, copy, epochs=1, steps_per_epoch=16, hidden_units=8))
    assert _json(copy, "metrics.json") == _json(first, "metrics.json")  # nothing was touched

    # --overwrite clears the old results before anything else: a new run that dies in its
    # first epoch leaves no old model for evaluate to report.
    with pytest.raises(FileNotFoundError):  # a dataset not built: the folder is not claimed
        trainer.train(_config(str(tmp_path / "nowhere"), copy, overwrite=True))
    assert _json(copy, "metrics.json") == _json(first, "metrics.json")
    with pytest.raises(trainer.Diverged):
        trainer.train(_config(data_dir, copy, hidden_units=8, learning_rate=1e30,
                              overwrite=True))
    assert not (copy / "best.keras").exists() and not (copy / "metrics.json").exists()
    with pytest.raises(run_dir.RunFolderError, match="has not finished an epoch"):
        evaluate.evaluate_model_dir(str(copy))

    metrics = trainer.train(_config(data_dir, copy, epochs=1, steps_per_epoch=16,
                                    hidden_units=8, overwrite=True))
    run_id = _json(copy, "config.json")["run_id"]
    assert metrics["run_id"] == run_id != _json(first, "config.json")["run_id"]
    assert len(_history(copy)) == 1


def test_folder_in_use_is_refused_at_once(data_dir, tmp_path):
    from narm_tf.training import run_dir, trainer

    with run_dir.locked(str(tmp_path)):
        with pytest.raises(run_dir.RunFolderError, match=f"pid {os.getpid()} on host"):
            trainer.train(_config(data_dir, tmp_path, epochs=1))


def test_diverging_run_exits_nonzero_and_saves_nothing(data_dir, tmp_path):
    model_dir, export_base = tmp_path / "run", tmp_path / "exports"
    out = _run(_train_command(data_dir, model_dir, "--learning_rate=1e30", "--epochs=3",
                              "--steps_per_execution=1", f"--export_base={export_base}"),
               returncode=3)
    assert re.search(r"training diverged: loss (nan|inf) at epoch 1, batch \d+", out), out[-2000:]
    for name in ("best.keras", "best.json", "metrics.json", "backup"):
        assert not (model_dir / name).exists(), name
    assert not export_base.exists()
    assert _history(model_dir) == []


@pytest.mark.parametrize("name, value, words", [
    ("batch_size", 0, "--batch_size must be an integer >= 1"),
    ("epochs", 0, "--epochs must be an integer >= 1"),
    ("embedding_dropout", 1.5, "--embedding_dropout must be a rate in [0, 1)"),
    ("hidden_units", 0, "--hidden_units must be an integer >= 1"),
    ("learning_rate", -1.0, "--learning_rate must be a finite number > 0"),
    ("learning_rate_decay", 0.0, "--learning_rate_decay must be a factor in (0, 1]"),
    ("learning_rate_decay", 1.5, "--learning_rate_decay must be a factor in (0, 1]"),
])
def test_bad_flags_fail_before_any_work(tmp_path, name, value, words):
    from narm_tf import config as config_lib
    from narm_tf.training import trainer

    model_dir = tmp_path / "run"
    if name == "batch_size":  # one command line: absl refuses it while parsing
        out = _run(_train_command("/nonexistent", model_dir, f"--{name}={value}"), returncode=1)
        assert words in out
        assert not model_dir.exists()
    expected = f"--{name}={value}: must be {words.split(' be ')[1]}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        trainer.train({**config_lib.default_config(model_dir=str(model_dir)), name: value})
    assert not model_dir.exists()
    with pytest.raises(ValueError, match="--length_buckets="):
        config_lib.default_config(length_buckets=["4", "2"])


def _backed_up(metadata) -> bool:
    """Whether BackupAndRestore has written its epoch record (Keras writes it in place)."""
    try:
        return "epoch" in json.loads(metadata.read_text())
    except (FileNotFoundError, ValueError):
        return False


def _kill_after_first_backup(command, backup, output=None) -> int:
    """Starts `command` (its unbuffered output into the file `output`, if given), SIGKILLs it
    once BackupAndRestore has written into `backup` (a folder); returns the epochs that
    backup holds."""
    metadata = backup / "training_metadata.json"
    with open(output or os.devnull, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + 240
        while not _backed_up(metadata) and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert _backed_up(metadata), f"the run ended before writing its first backup in {backup}"
    return json.loads(metadata.read_text())["epoch"]


def test_mirrored_two_cpu_replicas_train_and_validate_as_one(data_dir, tmp_path):
    """Two logical CPU replicas (a fresh process: devices are set before TensorFlow starts)
    train to the same losses as one replica (trained here); their validation metrics, summed
    over replicas that hold unequal shares of the last batch, equal best.keras' ranks
    computed on one device; an odd `--eval_batch_size` is cut to an even one (Keras fails on
    a first batch the replicas cannot share evenly); `--jit_compile=auto` leaves XLA off on
    them (it cannot reach logical CPU devices) and on for one device."""
    import keras
    import tensorflow as tf

    from narm_tf import evaluate
    from narm_tf.data import dataset as data
    from narm_tf.training import trainer

    validation = data.Dataset(DATASET, data_dir).split("validation")
    eval_batch = 255  # cut to 254 for two replicas
    assert len(validation) % 254 % 2 == 1, "the last batch must split unevenly"
    two = tmp_path / "run2"
    out = _run(_train_command(data_dir, two, "--epochs=2", "--num_cpu_devices=2",
                              "--embedding_dropout=0", "--representation_dropout=0",
                              "--jit_compile=auto", f"--eval_batch_size={eval_batch}"))
    assert "over 2 replica(s)" in out
    metrics = _json(two, "metrics.json")
    assert metrics["replicas"] == 2 and metrics["xla"] is False
    single = trainer.train(_config(data_dir, tmp_path / "run1", epochs=2, embedding_dropout=0.0,
                                   representation_dropout=0.0, eval_batch_size=eval_batch))
    assert single["replicas"] == 1
    assert trainer.use_xla("auto", tf.distribute.MirroredStrategy(["/cpu:0"]))
    losses = {name: [float(row["loss"]) for row in _history(tmp_path / name)]
              for name in ("run1", "run2")}
    np.testing.assert_allclose(losses["run2"], losses["run1"], rtol=1e-4)
    assert losses["run2"][-1] < losses["run2"][0] - 1e-3

    best = _json(two, "best.json")
    row = _history(two)[best["epoch"] - 1]
    results = evaluate.evaluate_model(keras.models.load_model(str(two / "best.keras")),
                                      validation, batch_size=eval_batch)
    np.testing.assert_allclose([float(row["val_recall@20"]), float(row["val_mrr@20"])],
                               [results.recall, results.mrr], rtol=1e-5)
    assert float(row["val_recall@20"]) == pytest.approx(best["val_recall@20"])


def test_a_batch_the_replicas_cannot_share_evenly_is_refused_naming_sizes_that_work():
    from narm_tf.training import trainer

    with pytest.raises(ValueError, match=re.escape(
            "--batch_size=63: must be a multiple of the 2 replicas (each batch is split "
            "evenly over them), e.g. 62 or 64")):
        trainer.check_batch_split(63, 2)
    with pytest.raises(ValueError, match=r"--batch_size=2: .* 3 replicas .* e\.g\. 3$"):
        trainer.check_batch_split(2, 3)
    trainer.check_batch_split(64, 2)
    trainer.check_batch_split(7, 1)


def test_label_counts_read_once_agree_streamed_and_in_memory(data_dir):
    from narm_tf.data import dataset as data
    from narm_tf.training import trainer

    in_memory = trainer.label_counts(data.Dataset(DATASET, data_dir, input="memory"))
    streamed = trainer.label_counts(data.Dataset(DATASET, data_dir, input="stream"))
    dataset = data.Dataset(DATASET, data_dir)
    vocabulary = dataset.vocabulary
    splits = {name: dataset.split(name) for name in ("train", "validation")}
    for name, counts, split in zip(("train", "validation"), in_memory,
                                   (splits["train"], splits["validation"]), strict=True):
        assert counts.shape == (len(vocabulary),), name
        assert counts.sum() == len(split.labels), name  # every label once, padding never
        assert counts[split.labels[0] - 1] >= 1, name
        np.testing.assert_array_equal(streamed[0 if name == "train" else 1], counts)


# ------------------------------------------------------------------------------ --refit


def _steps_per_epoch_run(out: str) -> list[int]:
    """The step counts of the epoch lines (`Epoch 2/3 - N steps - ...`), in order."""
    return [int(m.group(1)) for m in re.finditer(r"^Epoch \d+/\d+ - (\d+) steps - ", out,
                                                 re.MULTILINE)]


SELECTION_EPOCHS, REFIT_BATCH = 3, 16


@pytest.fixture(scope="module")
def refit_run(synthetic_data_dir, tmp_path_factory):
    """One streamed --refit run (3 selection epochs at most, the learning rate halved each
    epoch, 16-row batches) killed twice and resumed each time by the same command: SIGKILL
    once the selection's first backup is written, then once the refit's is, then run to the
    end. Between the first kill and the first resume, a resume with another learning rate
    is tried in-process. Returns the folder and what happened, for the tests below."""
    from narm_tf.training import run_dir, trainer

    model_dir = tmp_path_factory.mktemp("refit") / "run"
    flags = ("--epochs=3", "--refit", "--input=stream", f"--batch_size={REFIT_BATCH}",
             "--learning_rate=0.004", "--learning_rate_decay=0.5")
    command = _train_command(synthetic_data_dir, model_dir, *flags)
    run = {"model_dir": model_dir}
    run["selection_done"] = _kill_after_first_backup(command, model_dir / "backup")
    run["best_before"] = _json(model_dir, "best.json")["val_recall@20"]
    # Resuming with a changed learning rate would silently keep the old optimizer: refused.
    try:
        trainer.train(_config(synthetic_data_dir, model_dir, epochs=3, refit=True,
                              input="stream", batch_size=REFIT_BATCH, learning_rate=0.01,
                              learning_rate_decay=0.5))
        run["changed_rate"] = None
    except run_dir.RunFolderError as error:
        run["changed_rate"] = str(error)
    output = model_dir.parent / "resumed_selection.txt"
    run["refit_done"] = _kill_after_first_backup(command, model_dir / "backup_refit", output)
    run["resumed_selection"] = output.read_text()
    run["selection_backup_left"] = (model_dir / "backup").exists()
    run["resumed_refit"] = _run(command)
    return run


def test_killed_run_resumes_once_per_epoch_and_never_loses_its_best(data_dir, refit_run):
    """The selection killed after its first backup resumes at the next epoch, keeps its best
    model and removes its backup once done; a resume with another learning rate is refused."""
    model_dir, done = refit_run["model_dir"], refit_run["selection_done"]
    assert done < SELECTION_EPOCHS
    assert "--learning_rate: 0.004 there, 0.01 now" in (refit_run["changed_rate"] or "")
    out = refit_run["resumed_selection"]
    epochs_run = [int(line.split()[1].split("/")[0]) for line in out.splitlines()
                  if line.startswith("Epoch ") and f"/{SELECTION_EPOCHS} " in line]
    assert "Resuming run" in out and epochs_run[:1] == [done + 1], out[-2000:]
    train_steps = -(-_split_sizes(data_dir)[0] // REFIT_BATCH)
    assert _steps_per_epoch_run(out)[:SELECTION_EPOCHS - done] == \
        [train_steps] * (SELECTION_EPOCHS - done), out[-2000:]
    assert not refit_run["selection_backup_left"]  # removed once the selection completes
    history = _history(model_dir)
    assert [row["epoch"] for row in history] == ["0", "1", "2"]
    best = _json(model_dir, "best.json")
    assert best["val_recall@20"] >= refit_run["best_before"]
    assert best["val_recall@20"] == pytest.approx(
        max(float(row["val_recall@20"]) for row in history))
    assert _json(model_dir, "metrics.json")["run_id"] == best["run_id"]


def test_killed_streamed_refit_resumes_the_refit_not_the_selection(data_dir, refit_run):
    """Streamed input too: the refit reads train + validation as one split."""
    model_dir, out = refit_run["model_dir"], refit_run["resumed_refit"]
    assert "Resuming run" in out and "val_recall@20 improved" not in out  # no selection rerun
    epochs = _json(model_dir, "final.json")["epochs"]
    assert _steps_per_epoch_run(out) == [-(-sum(_split_sizes(data_dir)) // REFIT_BATCH)] * (
        epochs - refit_run["refit_done"])
    assert _json(model_dir, "final.json")["finished"]
    assert _json(model_dir, "metrics.json")["model"] == "final.keras"


def test_refit_trains_a_fresh_model_on_train_and_validation_for_the_chosen_epochs(
        data_dir, refit_run):
    import keras

    from narm_tf import evaluate
    from narm_tf.data import dataset as data
    from narm_tf.model import narm as _registers_layers  # noqa: F401
    from narm_tf.training import run_dir

    model_dir = refit_run["model_dir"]
    dataset = data.Dataset(DATASET, data_dir)
    train_split, validation = dataset.split("train"), dataset.split("validation")
    best, final = _json(model_dir, "best.json"), _json(model_dir, "final.json")
    assert final == {"run_id": best["run_id"], "epochs": best["epoch"], "finished": True,
                     "splits": ["train", "validation"],
                     "examples": len(train_split) + len(validation)}
    # The selection's epochs stepped over train; the refit's, best.json's many, over both.
    train_steps = -(-len(train_split) // REFIT_BATCH)
    both_steps = -(-(len(train_split) + len(validation)) // REFIT_BATCH)
    steps = _steps_per_epoch_run(refit_run["resumed_selection"])
    selection = SELECTION_EPOCHS - refit_run["selection_done"]
    assert steps[:selection] == [train_steps] * selection
    assert set(steps[selection:]) <= {both_steps}  # the refit's epochs before the kill
    assert _steps_per_epoch_run(refit_run["resumed_refit"]) == \
        [both_steps] * (best["epoch"] - refit_run["refit_done"])
    assert not (model_dir / "backup_refit").exists()
    # The run tests (and delivers) final.keras; best.keras' test figures are beside it.
    metrics = _json(model_dir, "metrics.json")
    assert metrics["model"] == "final.keras"
    test = dataset.split("test")
    for name, key in (("final.keras", "test"), ("best.keras", "selected_model_test")):
        model = keras.models.load_model(str(model_dir / name))
        assert evaluate.summary(evaluate.evaluate_model(model, test))["recall@20"] == \
            metrics[key]["recall@20"], name
    results, _ = evaluate.evaluate_model_dir(str(model_dir))
    assert evaluate.summary(results)["mrr@20"] == metrics["test"]["mrr@20"]
    finals = keras.models.load_model(str(model_dir / "final.keras")).get_weights()
    bests = keras.models.load_model(str(model_dir / "best.keras")).get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(finals, bests, strict=True))
    assert run_dir.delivered_model(str(model_dir), _json(model_dir, "config.json")) == \
        str(model_dir / "final.keras")


def test_learning_rate_decays_per_epoch_in_the_selection_and_the_refit_alike(refit_run):
    import keras

    from narm_tf.model import narm as _registers_layers  # noqa: F401

    model_dir = refit_run["model_dir"]
    rates = [float(row["learning_rate"]) for row in _history(model_dir)]
    np.testing.assert_allclose(rates, [0.004 * 0.5 ** e for e in range(len(rates))], rtol=1e-6)
    # The refit's last epoch (best.json's count, from 1) ran at the same epoch's rate.
    epochs = _json(model_dir, "final.json")["epochs"]
    assert epochs > 1, "a one-epoch refit would run at the undecayed rate either way"
    final = keras.models.load_model(str(model_dir / "final.keras"))
    np.testing.assert_allclose(float(final.optimizer.learning_rate), 0.004 * 0.5 ** (epochs - 1),
                               rtol=1e-6)


def test_refit_run_without_a_finished_final_model_is_refused(refit_run, tmp_path):
    from narm_tf.serving import export_lib
    from narm_tf.training import run_dir

    copy = tmp_path / "run"
    shutil.copytree(refit_run["model_dir"], copy)
    record = _json(copy, "final.json")
    (copy / "final.json").write_text(json.dumps({**record, "finished": False}))
    with pytest.raises(run_dir.RunFolderError, match="no finished final.keras"):
        export_lib.export_from_model_dir(str(copy), str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


def test_warm_validation_after_a_refit_run_drops_its_validation_sessions_too(data_dir,
                                                                              refit_run):
    from narm_tf.data import dataset as data
    from narm_tf.training import warm_start

    sessions = data.Dataset(DATASET, data_dir).split("train+validation").session_ids
    np.testing.assert_array_equal(warm_start.old_train_sessions(str(refit_run["model_dir"])),
                                  np.unique(sessions))


def test_refit_carries_the_repeat_calibration_into_the_final_model(data_dir, tmp_path,
                                                                    monkeypatch):
    import keras

    from narm_tf.model import narm as narm_model
    from narm_tf.training import trainer

    calibrate = narm_model.calibrate_repeat  # the real one, on a one-point grid off 1.0
    monkeypatch.setattr(narm_model, "calibrate_repeat", lambda *args, **kwargs: calibrate(
        *args, **kwargs, explore_scales=(0.5,), repeat_scales=(0.25,)))
    config = _config(data_dir, tmp_path / "run", epochs=1, refit=True, repeat=True,
                     repeat_calibrate=True)
    metrics = trainer.train(config)
    assert metrics["repeat_calibration"]["explore_scale"] == 0.5
    for name in ("best.keras", "final.keras"):
        layer = keras.models.load_model(str(tmp_path / "run" / name)).get_layer(
            narm_model.REPEAT_EXPLORE)
        assert (float(layer.explore_scale.numpy()), float(layer.repeat_scale.numpy())) == \
            (0.5, 0.25), name


def _split_sizes(data_dir):
    from narm_tf.data import dataset as data

    sizes = data.Dataset(DATASET, data_dir).sizes
    return sizes["train"], sizes["validation"]


def test_refit_is_refused_in_multi_worker_training(data_dir, tmp_path, monkeypatch):
    from narm_tf.training import trainer

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="--refit: not available in multi-worker"):
        trainer.train(_config(data_dir, tmp_path / "run", refit=True))
    assert not (tmp_path / "run").exists()
