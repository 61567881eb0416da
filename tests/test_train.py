"""narm_tf.train end to end: real TFDS build, real model.fit, resume, mirrored replicas."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

DATASET = "yoochoose/yoochoose_full"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small synthetic click log built with the real YOOCHOOSE builder."""
    from narm_tf import data, synthetic

    root = tmp_path_factory.mktemp("train_data")
    manual = root / "manual"
    manual.mkdir()
    synthetic.write_synthetic_clicks(str(manual / "yoochoose-clicks.dat"), num_sessions=1500,
                                     num_items=120, seed=3)
    data.build_dataset(DATASET, manual_dir=str(manual), data_dir=str(root / "tfds"))
    return str(root / "tfds")


def _train_command(data_dir, model_dir, *extra):
    return [sys.executable, "-m", "narm_tf.train", f"--dataset={DATASET}",
            f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=64",
            "--embedding_dim=16", "--hidden_units=16", "--eval_batch_size=256", *extra]


def _run(command, timeout=300):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_train_writes_metrics_config_and_model_that_evaluate_agrees_with(data_dir, tmp_path):
    from narm_tf import data

    model_dir = str(tmp_path / "run")
    out = _run(_train_command(data_dir, model_dir, "--epochs=3"))
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    config = json.load(open(os.path.join(model_dir, "config.json")))
    test = data.load_split(DATASET, "test", data_dir)
    assert metrics["test"]["count"] == len(test)
    assert metrics["popularity_baseline"]["count"] == len(test)
    assert 0 <= metrics["test"]["mrr@20"] <= metrics["test"]["recall@20"] <= 100
    assert config["hidden_units"] == 16 and config["learning_rate"] == 1e-3
    assert len(_history(model_dir)) == 3
    assert "Recall@20" in out
    vocabulary = data.load_vocabulary(DATASET, data_dir)
    rows = open(os.path.join(model_dir, "vocabulary.tsv")).read().splitlines()
    assert rows[0] == "index\titem_id\ttrain_count" and len(rows) == len(vocabulary) + 1
    assert rows[1].split("\t")[1] == str(vocabulary[0])

    evaluated = _run([sys.executable, "-m", "narm_tf.evaluate", f"--model_dir={model_dir}"])
    assert f"{metrics['test']['recall@20']:6.2f}%" in evaluated
    assert "19+" in evaluated

    # A new run in the same folder starts afresh: its own history and best model only.
    _run(_train_command(data_dir, model_dir, "--epochs=1"))
    assert len(_history(model_dir)) == 1
    assert json.load(open(os.path.join(model_dir, "metrics.json")))["best_epoch"] == 1


def test_killed_run_resumes_at_the_next_epoch(data_dir, tmp_path):
    model_dir = tmp_path / "run"
    command = _train_command(data_dir, str(model_dir), "--epochs=4", "--steps_per_epoch=60",
                             "--batch_size=16")
    metadata = model_dir / "backup" / "training_metadata.json"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not metadata.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert metadata.exists(), "the run ended before writing its first epoch backup"
    done = json.loads(metadata.read_text())["epoch"]
    assert done < 4

    out = _run(command)
    epochs_run = [int(line.split()[1].split("/")[0]) for line in out.splitlines()
                  if line.startswith("Epoch ") and "/4" in line]
    assert epochs_run and epochs_run[0] == done + 1, out[-2000:]
    assert not (model_dir / "backup").exists()  # removed once training completes
    assert os.path.exists(model_dir / "metrics.json")


def test_mirrored_two_cpu_replicas_train_to_the_same_loss_as_one(data_dir, tmp_path):
    losses = {}
    for devices in (1, 2):
        model_dir = str(tmp_path / f"run{devices}")
        out = _run(_train_command(data_dir, model_dir, "--epochs=2",
                                  f"--num_cpu_devices={devices}", "--embedding_dropout=0",
                                  "--representation_dropout=0"))
        assert f"over {devices} replica(s)" in out
        losses[devices] = [float(row["loss"]) for row in _history(model_dir)]
    np.testing.assert_allclose(losses[2], losses[1], rtol=2e-3)
