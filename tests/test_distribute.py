"""narm_tf.training.distribute: two real worker processes on 127.0.0.1 under
MultiWorkerMirroredStrategy (TF_CONFIG), against one process with the same global batch;
chief-only outputs; resume after a worker is killed."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

DATASET = "yoochoose/yoochoose_full"
# Tiny model, no dropout (dropout masks are drawn per process, so they would differ between one
# and two workers), no XLA (the 2-replica CPU path runs without it: same kernels on both sides).
# learning_rate_decay: the resumed epochs' rates are checked. With it the first resumed epoch
# scores below epoch 1 here, so the chief's best checkpoint does not save: a worker that did not
# get the chief's best score saved alone and failed the cluster (fixed in train/distribute).
SETTINGS = {"batch_size": 64, "embedding_dim": 8, "hidden_units": 8, "eval_batch_size": 256,
            "embedding_dropout": 0.0, "representation_dropout": 0.0, "jit_compile": "off",
            "steps_per_epoch": 24, "epochs": 3, "steps_per_execution": 4, "input": "stream",
            "learning_rate_decay": 0.5}


@pytest.fixture
def data_dir(synthetic_data_dir):
    return synthetic_data_dir


def test_cluster_size_reads_tf_config():
    from narm_tf.training import distribute

    two = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
           "task": {"type": "worker", "index": 0}}
    assert distribute.cluster_size(json.dumps(two)) == 2
    assert distribute.cluster_size("") == 0
    with pytest.raises(ValueError, match="TF_CONFIG is not a cluster description"):
        distribute.cluster_size("{not json")


def test_loop_gives_what_keras_fit_gives(data_dir):
    """distribute.fit under a (one-device) strategy: the weights, History and callback calls
    of model.fit on the same batches."""
    import keras
    import numpy as np
    import tensorflow as tf

    from narm_tf.data import dataset as data
    from narm_tf.model import narm as narm_model
    from narm_tf.training import distribute

    dataset = data.Dataset(DATASET, data_dir, input="stream")

    def stream(batch_size, context=None):
        return dataset.batches("train", batch_size, shuffle=True, repeat=True,
                               shuffle_buffer=500, input_context=context)

    class Calls(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_epoch_begin(self, epoch, logs=None):
            self.calls.append(("epoch", epoch))

        def on_train_batch_end(self, batch, logs=None):
            self.calls.append(("batch", batch, sorted(logs)))

    def run(loop):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = narm_model.build_narm(119, embedding_dim=8, hidden_units=8)
            narm_model.compile_narm(model, jit_compile=False, steps_per_execution=3)
        calls = Calls()
        if loop:
            history = distribute.fit(
                model, strategy, lambda c: stream(c.get_per_replica_batch_size(32), c),
                epochs=2, steps_per_epoch=6, callbacks=[calls], log_every=3, verbose=0)
        else:
            history = model.fit(stream(32), epochs=2, steps_per_epoch=6, callbacks=[calls],
                                verbose=0)
        return [w.numpy() for w in model.weights], history.history, calls.calls

    weights, history, calls = run(loop=True)
    want_weights, want_history, want_calls = run(loop=False)
    assert calls == want_calls == [("epoch", 0), ("batch", 2, ["loss"]), ("batch", 5, ["loss"]),
                                   ("epoch", 1), ("batch", 2, ["loss"]), ("batch", 5, ["loss"])]
    assert history.keys() == want_history.keys() == {"loss"}
    np.testing.assert_allclose(history["loss"], want_history["loss"], rtol=1e-6)
    for got, want in zip(weights, want_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(data_dir, model_dir, ports, temp_dir):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    flags = [f"--{key}={value}" for key, value in SETTINGS.items()]
    workers = []
    for index in range(len(ports)):
        env = {**os.environ, "TMPDIR": str(temp_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        log = open(temp_dir.parent / f"worker{index}-{time.time():.0f}.log", "w+")
        command = [sys.executable, "-m", "narm_tf.train", f"--dataset={DATASET}",
                   f"--data_dir={data_dir}", f"--model_dir={model_dir}", *flags]
        workers.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT), log))
    return workers


def _output(log):
    log.seek(0)
    return log.read()


def _backed_up_epoch(model_dir):
    path = os.path.join(model_dir, "backup", "training_metadata.json")
    try:
        with open(path) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):
        return 0


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_two_workers_match_one_write_from_the_chief_and_resume_after_a_kill(data_dir,
                                                                            tmp_path):
    from narm_tf import config as config_lib
    from narm_tf.training import trainer

    started = time.time()
    model_dir, temp_dir = tmp_path / "run", tmp_path / "tmp"
    temp_dir.mkdir()
    workers = _start_workers(data_dir, model_dir, _free_ports(2), temp_dir)
    deadline = time.time() + 300  # generous: the 2 cores may be shared
    # Poll often: on an idle machine a later epoch takes about a second.
    while _backed_up_epoch(model_dir) < 1:  # the first epoch's backup is written
        assert time.time() < deadline and workers[1][0].poll() is None, \
            _output(workers[0][1])[-3000:] + _output(workers[1][1])[-3000:]
        time.sleep(0.01)
    workers[1][0].send_signal(signal.SIGKILL)
    workers[1][0].wait()
    time.sleep(1)
    workers[0][0].kill()  # the chief waits on the dead worker's collectives
    workers[0][0].wait()
    resume_from = _backed_up_epoch(model_dir)
    assert resume_from < 3, "killed too late: the run had finished"

    restarted = _start_workers(data_dir, model_dir, _free_ports(2), temp_dir)
    for process, log in restarted:
        assert process.wait(timeout=300) == 0, _output(log)[-3000:]
    chief_out, other_out = (_output(log) for _, log in restarted)
    assert "Resuming run" in chief_out
    assert f"Epoch {resume_from + 1}/3" in chief_out and f"Epoch {resume_from}/3" not in chief_out

    # The reference: one process, same global batch, same seed.
    single = tmp_path / "single"
    trainer.train(config_lib.default_config(dataset=DATASET, data_dir=data_dir,
                                            model_dir=str(single), **{**SETTINGS, "epochs": 1}))
    rows, reference = _history(model_dir), _history(single)[0]
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]  # each epoch once
    # The resumed epochs run at their own decayed rate (1e-3 x 0.5^epoch), not from the top.
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    # Epoch 1 ran before the kill from the same initial weights and the same global batches as
    # the single process: only the order of float32 sums differs (the all-reduce adds two
    # half-batch gradients), ~1e-7 relative a step, well inside 1e-4 after 24 Adam steps.
    for key in ("loss", "val_loss"):
        assert float(rows[0][key]) == pytest.approx(float(reference[key]), rel=1e-4), key
    # Recall@20 counts validation prefixes: a tie flip would move it by 1/533.
    assert float(rows[0]["val_recall@20"]) == pytest.approx(
        float(reference["val_recall@20"]), abs=2 / 533)

    outputs = set(os.listdir(model_dir))
    assert {"best.keras", "metrics.json", "history.csv", "config.json", "logs"} <= outputs
    assert "backup" not in outputs  # BackupAndRestore deletes it when training ends
    # The other worker's folder, and the one the killed worker left, are gone.
    assert [name for name in os.listdir(temp_dir) if name.startswith("narm-worker")] == []
    assert "Recall@20" in chief_out and "Recall@20" not in other_out  # chief reports alone
    print(f"two-worker test: {time.time() - started:.0f} s")
