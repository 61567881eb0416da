"""narm_tf.cli through the real commands, run as a user runs them: from another working
directory, with its own HOME, `~` in the path flags and no TensorFlow log settings. Training is
interrupted with Ctrl-C (SIGINT) after its first epoch and resumed by the same command."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from absl import flags

from conftest import ROOT

DATASET = "yoochoose/yoochoose_full"
# Three slow-enough epochs (no XLA) so that SIGINT lands in the middle of the run.
TRAIN = ("-m", "narm_tf.train", f"--dataset={DATASET}", "--data_dir=~/tensorflow_datasets",
         "--model_dir=$HOME/runs/narm", "--epochs=3",
         "--steps_per_epoch=40", "--batch_size=16", "--embedding_dim=16", "--hidden_units=16",
         "--eval_batch_size=256", "--jit_compile=off", "--steps_per_execution=4")
# What TensorFlow's and absl's logs look like: none may reach a user without NARM_VERBOSE.
LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit")


def _env(home):
    """A user's shell: its own HOME, the clone importable, no TF / NARM log settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "NARM_VERBOSE")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT)}


def _run(args, home, cwd, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_env(home), capture_output=True,
                          text=True, timeout=timeout)


def _wait_for_backup(metadata, seconds=60):
    """Returns once BackupAndRestore has recorded an epoch in `metadata`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if "epoch" in json.loads(metadata.read_text()):
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no backup written in {metadata}")


@pytest.fixture(scope="module")
def user(tmp_path_factory, synthetic_data_dir):
    """(home, cwd, interrupted, resumed): the training command interrupted by SIGINT once its
    first epoch has ended (its output after the signal and its exit code), then run again."""
    home, cwd = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("cwd")
    (home / "tensorflow_datasets").symlink_to(synthetic_data_dir)
    process = subprocess.Popen([sys.executable, *TRAIN], cwd=cwd, env=_env(home),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before = []
    for line in process.stdout:
        before.append(line)
        if line.startswith("Epoch 1/3"):
            _wait_for_backup(home / "runs" / "narm" / "backup" / "training_metadata.json")
            process.send_signal(signal.SIGINT)  # during epoch 2
            break
    after = process.stdout.read()
    process.wait(timeout=60)
    backup = home / "runs" / "narm" / "backup" / "training_metadata.json"
    interrupted = {"before": "".join(before), "after": after, "code": process.returncode,
                   "epochs_done": json.loads(backup.read_text())["epoch"]}
    resumed = _run(TRAIN, home, cwd)
    return home, cwd, interrupted, resumed


def test_ctrl_c_ends_training_with_one_line_naming_how_to_resume(user):
    _, _, interrupted, _ = user
    assert interrupted["code"] == 130, interrupted
    assert "Epoch 1/3" in interrupted["before"] and interrupted["epochs_done"] in (1, 2)
    # Epoch 2's line, if the signal came while that epoch's files were written (they are
    # finished first), then the one line.
    assert interrupted["after"].splitlines()[interrupted["epochs_done"] - 1:] == [
        "narm_tf.train: interrupted; rerun the same command to resume from the last finished "
        "epoch"], interrupted["after"]
    assert "Traceback" not in interrupted["after"]


def test_the_same_command_resumes_and_is_quiet(user):
    _, _, interrupted, resumed = user
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    out = resumed.stdout + resumed.stderr
    assert not [line for line in out.splitlines() if LOG_LINE.search(line)], out
    # Only the command's own lines: strategy, dataset, run, one per epoch run, NARM and POP.
    epochs = [f"Epoch {epoch}/3 - " for epoch in range(interrupted["epochs_done"] + 1, 4)]
    starts = ["MirroredStrategy over 1 replica(s)", f"{DATASET}: ", "Resuming run ", *epochs,
              "NARM ", "POP "]
    lines = resumed.stdout.splitlines()
    assert len(lines) == len(starts) and resumed.stderr == "", out
    assert all(line.startswith(start) for line, start in zip(lines, starts, strict=True)), out


def test_tilde_and_variables_in_path_flags_land_under_home(user):
    home, cwd, _, _ = user
    run = home / "runs" / "narm"
    assert (run / "metrics.json").exists()
    with open(run / "config.json") as f:
        assert f'"data_dir": "{home}/tensorflow_datasets"' in f.read()
    assert os.listdir(cwd) == []  # no folder named "~" or "$HOME" where the command ran

    exported = _run(["-m", "export.export_saved_model", "--model_dir=~/runs/narm",
                     "--export_base=~/exports"], home, cwd)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert exported.stdout.splitlines() == [f"exported {home}/exports/1"]
    assert (home / "exports" / "1" / "saved_model.pb").exists()
    assert os.listdir(cwd) == [] and not LOG_LINE.search(exported.stderr), exported.stderr


def test_a_dataset_not_built_ends_in_one_line_naming_what_the_data_dir_holds(user):
    home, cwd, _, _ = user
    (home / "tfds_typo").mkdir()
    (home / "tfds_typo" / "yoochoose").symlink_to(os.path.join(
        os.path.realpath(home / "tensorflow_datasets"), "yoochoose"))
    failed = _run(["-m", "narm_tf.train", "--dataset=click_log/x", "--data_dir=~/tfds_typo",
                   "--model_dir=~/runs/x"], home, cwd)
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr and "closely match" not in failed.stderr
    last = failed.stderr.splitlines()
    assert len(last) == 1, failed.stderr
    assert last[0].startswith(f"narm_tf.train: Dataset click_log/x is not built in "
                              f"{home}/tfds_typo (it holds {DATASET});")
    assert not (home / "runs" / "x").exists()


@pytest.mark.parametrize("module, names", [
    ("narm_tf.train", ["data_dir", "model_dir", "warm_start_from", "export_base"]),
    ("narm_tf.evaluate", ["model_dir", "data_dir"]),
    ("narm_tf.predict", ["export_dir"]),
    ("export.export_saved_model", ["model_dir", "export_base", "data_dir"]),
])
def test_every_path_flag_expands_tilde_and_variables(module, names, monkeypatch):
    import importlib

    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("NARM_TEST_ROOT", "/data")
    flag_values = flags.FlagValues()
    importlib.import_module(module).define_flags(flag_values)
    flag_values(["command"] + [f"--{name}=~/{name}" for name in names[:-1]]
                + [f"--{names[-1]}=$NARM_TEST_ROOT/x"])
    assert [flag_values[name].value for name in names] == (
        [f"/home/someone/{name}" for name in names[:-1]] + ["/data/x"])


def test_keras_extras_are_kept_out_of_the_import_and_stay_importable(tmp_path, monkeypatch,
                                                                     capfd):
    """A module imported as the commands import TensorFlow finds the hidden packages missing
    (as Keras finds scikit-learn, matplotlib and IPython, about 2 s of a command's start);
    afterwards they import; what the module writes to stderr still reaches it."""
    from narm_tf import cli

    (tmp_path / "narm_probe_extra.py").write_text("VALUE = 1\n")
    (tmp_path / "narm_probe_lib.py").write_text(
        "import sys\n"
        "try:\n    import narm_probe_extra\nexcept ImportError:\n    narm_probe_extra = None\n"
        "print('from the library', file=sys.stderr)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("narm_probe_lib", "narm_probe_extra"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    cli._import_quietly("narm_probe_lib", hidden=("narm_probe_extra",))
    assert sys.modules["narm_probe_lib"].narm_probe_extra is None
    import narm_probe_extra

    assert narm_probe_extra.VALUE == 1
    assert "from the library" in capfd.readouterr().err
