"""The run folder (`--model_dir`): its file names, readers and writers, its lock and identity.

One module owns the folder, so training writes what evaluation and export read:
  config.json      the resolved flags + the run's identity (run_id, dataset version, items)
  vocabulary.tsv   index, raw item id, training-label count (popularity) of every item
  best.keras       the model with the best validation Recall@20 (written atomically)
  best.json        that model's epoch and validation Recall@20, with the run_id
  final.keras      with --refit only: a fresh model trained on train + validation for best.json's
                   epochs (no validation score exists for it); the model the run delivers
  final.json       its epochs, examples and run_id; `finished` once final.keras is written
  metrics.json     test metrics of the delivered model (`delivered_model`), with the run_id
  history.csv      per-epoch loss and metrics;  logs/  TensorBoard;  backup/  BackupAndRestore
  backup_refit/    BackupAndRestore of the --refit training
  warm_start.tsv   old index -> new index of a warm-started run (`narm_tf.training.warm_start`)
  .lock            held (flock) for a training run's life: one writer per folder

A folder's results belong together when best.json and metrics.json carry config.json's run_id;
`check_complete` refuses any other folder, so a reader never scores one run's model with
another run's dataset or vocabulary.

A run is finished once it wrote metrics.json, the file it writes last: training ended (at
--epochs or by early stopping), a --refit run's final.keras was saved, and the delivered model
was tested. `check_finished` refuses any other run, naming what is missing: export, publish
and warm start read finished runs only (an export may be told otherwise). Folders written before
that rule hold the same files, so a finished one counts as finished.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import json
import os
import shutil
import socket
import uuid

import numpy as np

from narm_tf import config as config_lib
from narm_tf.serving import contract

CONFIG = "config.json"
VOCABULARY = "vocabulary.tsv"
BEST_MODEL = "best.keras"
BEST_RECORD = "best.json"
FINAL_MODEL = "final.keras"
FINAL_RECORD = "final.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
LOGS = "logs"
BACKUP = "backup"
REFIT_BACKUP = "backup_refit"
LOCK = ".lock"
WARM_START_MAP = "warm_start.tsv"
MONITOR = config_lib.MONITOR  # The validation metric that selects best.keras (Keras' log key).
RESULTS = (CONFIG, METRICS, BEST_RECORD, BEST_MODEL, FINAL_RECORD, FINAL_MODEL, VOCABULARY,
           HISTORY, LOGS, BACKUP, REFIT_BACKUP, WARM_START_MAP)

# Flags that may differ when a killed run is resumed (the `resumable` settings of
# narm_tf.config): they extend the run, say where things are, or change how (not what) it
# computes. Every other flag, the dataset's version and its number of items must match the run
# being resumed.
RESUMABLE_CHANGES = config_lib.with_role(config_lib.RESUMABLE)
# Flags added after runs were written: a config.json without one holds this value (each
# setting's `older_runs` in narm_tf.config).
ADDED_FLAG_DEFAULTS = config_lib.older_run_values()
# The identity of a run besides its flags (written into config.json, compared on resume).
IDENTITY = ("dataset_version", "vocabulary_size")


class RunFolderError(RuntimeError):
    """The run folder is in use, belongs to another run, or is incomplete (the message says)."""


def path(model_dir: str, name: str) -> str:
    return os.path.join(model_dir, name)


# ------------------------------------------------------------------------- writers, readers


def write_json(file_path: str, value: dict) -> None:
    """Writes JSON atomically (temp file + rename) so a reader never sees half a file."""
    tmp = f"{file_path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, file_path)


def save_model(model_dir: str, model, name: str = BEST_MODEL) -> None:
    """best.keras (or final.keras), atomically (a temp file Keras can write, then a rename)."""
    tmp = path(model_dir, f".{name}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path(model_dir, name))


def delivered_model(model_dir: str, config: dict) -> str:
    """The path of the model a run delivers (tested, exported, warm-started from): final.keras
    of a `--refit` run, else best.keras."""
    return path(model_dir, FINAL_MODEL if config.get("refit") else BEST_MODEL)


def read_json(model_dir: str, name: str) -> dict | None:
    """`model_dir/name` parsed, or None when absent."""
    try:
        with open(path(model_dir, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_vocabulary(model_dir: str, vocabulary, counts) -> None:
    """vocabulary.tsv: `index, item_id, train_count` for indices 1..N, atomically; the column
    is `item_string` for a catalogue of string ids (kept exactly, zero padding included)."""
    tmp = path(model_dir, VOCABULARY + ".tmp")
    column = "item_string" if contract.is_string_vocabulary(vocabulary) else "item_id"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"index\t{column}\ttrain_count\n")
        for index, (item, count) in enumerate(zip(vocabulary, counts, strict=True), start=1):
            f.write(f"{index}\t{item}\t{count}\n")
    os.replace(tmp, path(model_dir, VOCABULARY))


def read_vocabulary(model_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """vocabulary.tsv -> (raw item ids `[N]`: int64, or the strings of a string catalogue;
    training label counts `[N]`)."""
    file_path = path(model_dir, VOCABULARY)
    with open(file_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    indices = np.array([int(row["index"]) for row in rows], np.int64)
    if not np.array_equal(indices, np.arange(1, len(rows) + 1)):
        raise RunFolderError(f"{file_path} must list indices 1..N in order")
    if rows and "item_string" in rows[0]:
        vocabulary = np.array([row["item_string"] for row in rows], dtype=object)
    else:
        vocabulary = np.array([int(row["item_id"]) for row in rows], np.int64)
    popularity = np.array([int(row["train_count"]) for row in rows], np.int64)
    return vocabulary, popularity


def truncate_history(model_dir: str, first_epoch: int) -> None:
    """Drops history.csv rows of epochs >= `first_epoch` (0-based, CSVLogger's `epoch`), in
    place: an open append handle (CSVLogger's) keeps writing after the kept rows."""
    file_path = path(model_dir, HISTORY)
    if not os.path.exists(file_path):
        return
    with open(file_path, "r+", newline="") as f:
        lines = f.readlines()
        if not lines:
            return
        keep = [lines[0]] + [line for line in lines[1:] if int(line.split(",")[0]) < first_epoch]
        if len(keep) < len(lines):
            f.seek(0)
            f.writelines(keep)
            f.truncate()


# ------------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def locked(model_dir: str):
    """Holds `model_dir/.lock` for the block; a second holder fails at once naming the first.

    An flock ends with its process, so a killed run never leaves the folder locked. When the
    block fails before the run wrote anything, the lock file (and a folder it created) go.
    """
    created = not os.path.isdir(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    lock_path = path(model_dir, LOCK)
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderError(
            f"{model_dir} is in use by another training run ({holder}); wait for it to "
            "finish or use another --model_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on host {socket.gethostname()} since "
                 f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    handle.flush()
    try:
        yield
    finally:
        started = os.path.exists(path(model_dir, CONFIG))
        if not started:
            os.remove(lock_path)
            if created and not os.listdir(model_dir):
                os.rmdir(model_dir)
        handle.close()


# --------------------------------------------------------------------------- the identity


def new_identity(config: dict, dataset_version: str, vocabulary_size: int) -> dict:
    """config.json's content: the flags, a fresh run_id and the dataset's identity."""
    return {**config, "run_id": uuid.uuid4().hex, "dataset_version": str(dataset_version),
            "vocabulary_size": int(vocabulary_size)}


def differences(old: dict, new: dict) -> dict:
    """{key: (old, new)} over the flags and IDENTITY that a resumed run must keep."""
    keys = (set(old) | set(new)) - RESUMABLE_CHANGES - {"run_id"}
    old = {**ADDED_FLAG_DEFAULTS, **old}
    new = {**ADDED_FLAG_DEFAULTS, **new}
    return {key: (old.get(key), new.get(key)) for key in sorted(keys)
            if old.get(key) != new.get(key)}


def describe_differences(changed: dict, old: dict) -> str:
    """`differences` in words, "--key: OLD there, NEW now; ...": a key that `old` (a
    config.json) does not record, and whose value in older runs is not known, reads "not
    recorded there (written before the flag existed)"."""
    def there(key, value):
        if key not in old and key not in ADDED_FLAG_DEFAULTS:
            return "not recorded there (written before the flag existed)"
        return f"{value!r} there"

    return "; ".join(f"--{key}: {there(key, a)}, {b!r} now" for key, (a, b) in changed.items())


def start(model_dir: str, identity: dict, overwrite: bool) -> tuple[dict, bool]:
    """Claims `model_dir` (held locked) for a run: returns (config to write, resuming).

    - empty folder, or `overwrite`: a new run (old results cleared first);
    - a killed run (backup/, or final.json of a --refit begun but no metrics.json) with the
      same settings: resumed, keeping its run_id;
    - a run killed before its first backup, same settings: restarted afresh;
    - a finished run, or any run with other settings: RunFolderError naming the differences.
    """
    old = read_json(model_dir, CONFIG)
    if overwrite:
        clear(model_dir)
        return identity, False
    if old is None:
        leftovers = [name for name in RESULTS if os.path.exists(path(model_dir, name))]
        if leftovers:
            raise RunFolderError(
                f"{model_dir} holds {', '.join(leftovers)} but no {CONFIG}: not a run this "
                "version can resume. Pass --overwrite to clear it, or use another --model_dir")
        return identity, False
    changed = differences(old, identity)
    if changed:
        listed = describe_differences(changed, old)
        raise RunFolderError(
            f"{model_dir} holds a run with other settings ({listed}). Resume it with its own "
            f"settings (only {', '.join(sorted(RESUMABLE_CHANGES - {'overwrite'}))} may "
            "change), use another --model_dir, or pass --overwrite to delete it and start afresh")
    finished = read_json(model_dir, METRICS) is not None
    refitting = (not finished  # a --refit begun, not ended
                 and (read_json(model_dir, FINAL_RECORD) or {}).get("run_id") == old["run_id"])
    if os.path.isdir(path(model_dir, BACKUP)) or refitting:
        return {**identity, "run_id": old["run_id"]}, True
    if finished:
        raise RunFolderError(
            f"{model_dir} holds a finished run with these settings (see {METRICS}). Pass "
            "--overwrite to train it again, or use another --model_dir")
    clear(model_dir)  # killed before its first epoch's backup: nothing to resume
    return identity, False


def clear(model_dir: str) -> None:
    """Removes a run's results: config.json goes first (by rename), so an interrupted clear
    leaves files no reader takes for a run."""
    trash = path(model_dir, f".cleared-{uuid.uuid4().hex[:8]}")
    os.makedirs(trash)
    for name in RESULTS:
        if os.path.lexists(path(model_dir, name)):
            os.rename(path(model_dir, name), os.path.join(trash, name))
    shutil.rmtree(trash)


def check_complete(model_dir: str, need_metrics: bool = False) -> dict:
    """config.json of a run whose best.keras, best.json (a --refit run's final.keras and
    final.json, and metrics.json) belong together.

    Raises RunFolderError naming what is missing or foreign: evaluation and export read only
    a model with the vocabulary and dataset of its own run.
    """
    config = check_belongs(model_dir)
    run_id = config["run_id"]
    if config.get("refit") and not refit_finished(model_dir, config):
        raise RunFolderError(f"{model_dir} has no finished {FINAL_MODEL} of run {run_id}: "
                             "its --refit training has not ended (rerun it to resume)")
    if need_metrics and read_json(model_dir, METRICS) is None:
        raise RunFolderError(f"{model_dir} has no {METRICS}: the run has not finished")
    return config


def check_belongs(model_dir: str) -> dict:
    """config.json of a run with a best.keras, and whose best.json and metrics.json (when
    present) carry its run_id, and a vocabulary.tsv; RunFolderError naming what is not so."""
    config = read_json(model_dir, CONFIG)
    if config is None:
        raise RunFolderError(f"{model_dir} holds no {CONFIG}: not a narm_tf.train run folder")
    run_id = config.get("run_id")
    if run_id is None:
        raise RunFolderError(f"{path(model_dir, CONFIG)} has no run_id: written by an older "
                             "narm-tf; retrain with --overwrite")
    best = read_json(model_dir, BEST_RECORD)
    if best is None or not os.path.exists(path(model_dir, BEST_MODEL)):
        raise RunFolderError(f"{model_dir} has no {BEST_MODEL} of run {run_id}: the run has not "
                             "finished an epoch yet")
    if best.get("run_id") != run_id:
        raise RunFolderError(f"{path(model_dir, BEST_MODEL)} belongs to run {best.get('run_id')}"
                             f", not to the run in {CONFIG} ({run_id}); retrain with --overwrite")
    metrics = read_json(model_dir, METRICS)
    if metrics is not None and metrics.get("run_id") != run_id:
        raise RunFolderError(f"{path(model_dir, METRICS)} belongs to run {metrics.get('run_id')}"
                             f", not to the run in {CONFIG} ({run_id}); retrain with --overwrite")
    if not os.path.exists(path(model_dir, VOCABULARY)):
        raise RunFolderError(f"{model_dir} has no {VOCABULARY}")
    return config


# ------------------------------------------------------------------------- finished or not


def refit_finished(model_dir: str, config: dict) -> bool:
    """Whether the --refit of the run in `config` ended: final.json of its run_id says
    `finished` and final.keras exists."""
    final = read_json(model_dir, FINAL_RECORD) or {}
    return bool(final.get("run_id") == config["run_id"] and final.get("finished")
                and os.path.exists(path(model_dir, FINAL_MODEL)))


def epochs_done(model_dir: str) -> int:
    """The epochs history.csv records (one row each; a resumed run keeps one row per epoch)."""
    try:
        with open(path(model_dir, HISTORY)) as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    except FileNotFoundError:
        return 0


def training_progress(model_dir: str, config: dict) -> str:
    """Where the selection training stands, in words, from history.csv and best.json. It
    ended at --epochs, or by early stopping (--patience epochs after best.json's), once
    Keras removed backup/; with backup/ left it was stopped midway."""
    done, cap, patience = epochs_done(model_dir), config.get("epochs"), config.get("patience")
    best_epoch = (read_json(model_dir, BEST_RECORD) or {}).get("epoch", 0)
    ended = ((cap is not None and done >= cap)
             or (patience is not None and done - best_epoch >= patience))
    if ended and not os.path.isdir(path(model_dir, BACKUP)):
        return (f"training ended after epoch {done} ({HISTORY}) but the run stopped before "
                "its model was tested")
    of = "" if cap is None else f" of {cap}"
    return f"training stopped after epoch {done}{of} ({HISTORY})"


def unfinished(model_dir: str, config: dict) -> list[str]:
    """What the run in `model_dir` (config.json: `config`) lacks to be finished, in words;
    [] when it is finished (see the module docstring)."""
    missing = []
    refit_begun = (read_json(model_dir, FINAL_RECORD) or {}).get("run_id") == config["run_id"]
    if config.get("refit") and not refit_finished(model_dir, config):
        missing.append(f"no finished {FINAL_MODEL} of run {config['run_id']}: its --refit "
                       f"training has {'not ended' if refit_begun else 'not begun'}")
    if read_json(model_dir, METRICS) is None:
        progress = ("its model was not tested" if refit_begun
                    else training_progress(model_dir, config))
        missing.append(f"no {METRICS}, the file a run writes last: {progress}")
    return missing


def resume_hint(model_dir: str, config: dict) -> str:
    """What rerunning the run's training command does to an unfinished run (`start`)."""
    command = ("rerun the narm_tf.train command that wrote it (same --model_dir and flags) to "
               "finish it")
    refit_begun = (read_json(model_dir, FINAL_RECORD) or {}).get("run_id") == config["run_id"]
    if os.path.isdir(path(model_dir, BACKUP)) or refit_begun:
        return command + ": it resumes where it stopped"
    return command + f": no {BACKUP}/ is left to resume from, so it trains again from the start"


def available_model(model_dir: str, config: dict) -> str:
    """The model an unfinished run has so far: its delivered model (`delivered_model`) once
    that exists, else best.keras (a --refit run whose refit has not ended)."""
    if config.get("refit") and not refit_finished(model_dir, config):
        return path(model_dir, BEST_MODEL)
    return delivered_model(model_dir, config)


def check_finished(model_dir: str, allow_unfinished: bool = False,
                   opt_in: str = "") -> tuple[dict, list[str]]:
    """(config.json, what is missing) of a run whose files belong together (`check_belongs`)
    and that finished (`unfinished` is []). An unfinished run raises RunFolderError naming
    what is missing and that rerunning its command finishes it (and `opt_in`, the flag that
    would accept it, if given), unless `allow_unfinished`: then its missing parts return."""
    config = check_belongs(model_dir)
    missing = unfinished(model_dir, config)
    if missing and not allow_unfinished:
        accept = (f"; or pass {opt_in} to use its "
                  f"{os.path.basename(available_model(model_dir, config))} as it is"
                  if opt_in else "")
        raise RunFolderError(f"{model_dir} holds an unfinished training run "
                             f"({config['run_id']}): {'; '.join(missing)}. "
                             f"{resume_hint(model_dir, config).capitalize()}{accept}")
    return config, missing


# ------------------------------------------------------------------- matching raw item ids


ID_KIND_WORDS = {"int64": "integer", "string": "string"}  # `id_kind` in messages


def id_kind(vocabulary) -> str:
    """"string" for a catalogue of string ids (an array of str or bytes), else "int64"."""
    return "string" if contract.is_string_vocabulary(vocabulary) else "int64"


def matching_keys(first, second, first_name: str, second_name: str) -> tuple[list, list]:
    """The raw ids of two vocabularies as keys equal exactly for the same item: ints, or
    strings as written (bytes decoded). ValueError naming both when one holds integer ids and
    the other string ids: "00215336475" is not item 215336475, so they are never matched."""
    kinds = id_kind(first), id_kind(second)
    if len(first) and len(second) and kinds[0] != kinds[1]:
        raise ValueError(f"{first_name} holds {ID_KIND_WORDS[kinds[0]]} item ids, "
                         f"{second_name} {ID_KIND_WORDS[kinds[1]]} ids: an integer catalogue "
                         "and a string catalogue have no items in common by raw id")
    return id_keys(first), id_keys(second)


def id_keys(vocabulary) -> list:
    """Raw ids as Python ints (integer ids) or str (string ids as written; bytes as UTF-8)."""
    if id_kind(vocabulary) == "int64":
        return [int(item) for item in vocabulary]
    return [item.decode() if isinstance(item, bytes) else str(item) for item in vocabulary]
