"""Writing an export: a model (or a training run's folder) -> `export_base/<version>/` for TF
Serving, atomically, with its vocabulary asset and warm-up requests.

Everything is written to a hidden temporary folder beside the versions (`.tmp-export-*`, a name
TF Serving ignores) that is renamed to `<version>` only once complete, with the modes a plain
`mkdir`/`open` would give under the umask (0755 folders, 0644 files under umask 022), so a
server running as another user can read it. The version is claimed by that rename, which fails
when the folder exists: exports running at once into one base each get their own version
(`claim_version`). The signatures are `narm_tf.serving.signatures`'. `assets.extra/export.json`
(EXPORT_RECORD) says what was exported: the settings and, from a run folder, which run and
model, and whether the run had finished (`--allow_unfinished`).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from narm_tf.data.examples import MAX_LEN
from narm_tf.serving import contract, reduced_precision
from narm_tf.serving.signatures import ServingModule
from narm_tf.training import run_dir

EXPORT_RECORD = "export.json"  # under assets.extra/: what was exported, from which run
ALLOW_UNFINISHED = "--allow_unfinished"  # the flag that exports an unfinished run


def export_model(model: keras.Model, vocabulary: np.ndarray, popularity: np.ndarray,
                 export_base: str, version: int | None = None, k: int = 20,
                 exclude_seen: bool = False, max_len: int = MAX_LEN, scoring: str = "exact",
                 candidate_dims: int = reduced_precision.CANDIDATE_DIMS,
                 candidates: int = reduced_precision.CANDIDATES,
                 source: dict | None = None) -> str:
    """Writes `export_base/<version>/` for TF Serving, atomically; returns that folder.

    Args:
        model: a NARM model from `narm_tf.model.narm.build_narm` (input
            `item_ids [batch, max_len]`).
        vocabulary: raw item ids `[N]`, int64 or the log's strings (then only the string
            signatures exist): vocabulary index `i` is `vocabulary[i - 1]`.
        popularity: training label counts `[N]`, same order; its top k answer empty sessions.
        export_base: the model's base path in TF Serving (`--model_base_path`).
        version: the version folder; default: the next integer.
        k: number of items returned.
        exclude_seen: whether the two single-input signatures drop the session's own items.
        max_len: the model's session length.
        scoring: `exact` (float32), `bfloat16` or `two_stage` (with `candidate_dims`,
            `candidates`): `narm_tf.serving.reduced_precision`, for catalogues of millions.
        source: the training run exported (`export_from_model_dir`), kept in EXPORT_RECORD.
    """
    if k < 1:
        raise ValueError(f"k (--k), the number of recommended items, must be >= 1, got {k}")
    if max_len < 1:
        raise ValueError(f"max_len, the model's session length, must be >= 1, got {max_len}")
    vocabulary = contract.vocabulary_array(vocabulary)
    popularity = np.asarray(popularity)
    _check_vocabulary(vocabulary, popularity)
    if scoring == "two_stage" and candidates < min(k, len(vocabulary)):
        raise ValueError(f"--candidates={candidates} is below --k={k}: the top k are chosen "
                         "among the candidates")
    inference = reduced_precision.make_inference(model, scoring, candidate_dims, candidates)
    record = {"items": len(vocabulary), "k": k, "exclude_seen": exclude_seen, "max_len": max_len,
              "scoring": scoring, "source": source}
    if scoring == "two_stage":
        record.update(candidate_dims=candidate_dims, candidates=candidates)

    def write(temp_dir):
        _write_export(temp_dir, model, vocabulary, popularity, k, exclude_seen, max_len,
                      inference)
        write_record(temp_dir, record)

    return write_new_version(export_base, version, write)


def write_record(export_dir: str, record: dict) -> str:
    """`assets.extra/export.json`: `record` and the time of the export."""
    file_path = os.path.join(export_dir, "assets.extra", EXPORT_RECORD)
    os.makedirs(os.path.dirname(file_path), exist_ok=True)
    exported_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(file_path, "w") as f:
        json.dump({"exported_at": exported_at, **record}, f, indent=2, sort_keys=True)
        f.write("\n")
    return file_path


def read_record(export_dir: str) -> dict | None:
    """An export's EXPORT_RECORD, or None (an export written before it existed)."""
    try:
        with open(os.path.join(export_dir, "assets.extra", EXPORT_RECORD)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_new_version(export_base: str, version: int | None, write) -> str:
    """`write(temp_dir)` in a hidden folder under `export_base`, then renamed to
    `export_base/<version>` (default: the next free integer) atomically; returns that folder."""
    os.makedirs(export_base, exist_ok=True)
    if version is not None:  # refused before the work, and again when claimed
        version = int(version)
        if version < 0:
            raise ValueError(f"TF Serving versions are integers >= 0, got {version}")
        if os.path.lexists(os.path.join(export_base, str(version))):
            raise FileExistsError(f"{os.path.join(export_base, str(version))} exists: pass "
                                  "another --version or remove it")
    temp_dir = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_base)
    try:
        write(temp_dir)
        make_readable(temp_dir)  # mkdtemp's 0700 would hide it from a server run as another user
        return claim_version(temp_dir, export_base, version)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def claim_version(folder: str, export_base: str, version: int | None = None) -> str:
    """Renames the complete `folder` to `export_base/<version>` and returns that path. The
    rename is atomic (TF Serving sees no version or a complete one) and never replaces a
    version: with `version` None the next free integer is taken, and when another export
    takes it first, the one after; a given `version` already taken raises FileExistsError.
    `folder` stays in place when nothing was claimed."""
    number = None
    while True:
        if version is None:
            number = max(contract.next_version(export_base), (number or 0) + 1)
        else:
            number = version
        target = os.path.join(export_base, str(number))
        try:
            if os.path.lexists(target):  # rename(2) would replace an empty folder
                raise FileExistsError(errno.EEXIST, "exists", target)
            os.rename(folder, target)
            return target
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            if version is not None:
                raise FileExistsError(f"{target} exists (another export took version "
                                      f"{version}): pass another --version or none") from None


def export_from_model_dir(model_dir: str, export_base: str, version: int | None = None,
                          k: int = 20, exclude_seen: bool = False,
                          allow_unfinished: bool = False, **scoring) -> str:
    """Exports the model a training run delivers (`best.keras`, or a `--refit` run's
    `final.keras`) with its own `vocabulary.tsv`; returns the version dir. Refuses
    (`run_dir.RunFolderError`) a folder whose model, metrics and config do not belong to one
    run, or whose run has not finished (`run_dir.check_finished`) unless `allow_unfinished`:
    then the model it has so far is exported, and EXPORT_RECORD says what the run lacked.
    `scoring`: `export_model`'s `scoring`, `candidate_dims`, `candidates`."""
    import narm_tf.model.narm  # noqa: F401  (registers the custom layers for load_model)

    config, missing = run_dir.check_finished(model_dir, allow_unfinished, ALLOW_UNFINISHED)
    model_path = run_dir.available_model(model_dir, config)
    if missing:
        logging.warning("exporting the unfinished run in %s (%s): %s", model_dir,
                        ALLOW_UNFINISHED, "; ".join(missing))
    model = keras.models.load_model(model_path, compile=False)
    vocabulary, popularity = run_dir.read_vocabulary(model_dir)
    source = {"model_dir": os.path.abspath(model_dir), "run_id": config["run_id"],
              "model": os.path.basename(model_path), "dataset": config.get("dataset"),
              "dataset_version": config.get("dataset_version"), "finished": not missing,
              "allow_unfinished": allow_unfinished, "missing": missing}
    return export_model(model, vocabulary, popularity, export_base, version=version, k=k,
                        exclude_seen=exclude_seen, source=source, **scoring)


def current_umask() -> int:
    """The process umask (Python can only read it by setting it: 0o077 meanwhile, so a file
    another thread creates in between is never more open than it should be)."""
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def make_readable(root: str, umask: int | None = None) -> None:
    """Gives `root` and everything below it the modes a plain `mkdir` / `open` would:
    folders `0o777 & ~umask`, files `0o666 & ~umask` (0755 / 0644 under umask 022)."""
    umask = current_umask() if umask is None else umask
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def _check_vocabulary(vocabulary, popularity) -> None:
    if len(popularity) != len(vocabulary):
        raise ValueError(f"popularity has {len(popularity)} counts for {len(vocabulary)} items")
    if len(popularity) and np.min(popularity) < 0:
        raise ValueError(f"popularity holds a negative count ({np.min(popularity)})")
    if len(np.unique(vocabulary)) != len(vocabulary):
        raise ValueError("the vocabulary has duplicate raw ids")
    if np.any(vocabulary == 0):
        logging.warning("raw item id 0 is in the vocabulary: the int64 signatures read 0 as "
                        "padding, so only the string signatures can ask for it")


def _write_export(export_dir, model, vocabulary, popularity, k, exclude_seen, max_len,
                  inference) -> None:
    with tempfile.TemporaryDirectory() as staging:
        vocabulary_file = os.path.join(staging, contract.VOCABULARY_ASSET)
        with open(vocabulary_file, "w") as f:
            f.writelines(f"{item_id}\n" for item_id in vocabulary)
        num_scores = model(np.ones((1, max_len), np.int32), training=False).shape[-1]
        if num_scores != len(vocabulary) + 1:
            raise ValueError(f"the model scores {num_scores - 1} items, the vocabulary has "
                             f"{len(vocabulary)}: export with the model_dir's own vocabulary.tsv")
        module = ServingModule(model, vocabulary, popularity, vocabulary_file,
                               k, exclude_seen, max_len, inference)
        tf.saved_model.save(module, export_dir, signatures=module.signatures())
    write_warmup_requests(export_dir, vocabulary, popularity)


def warmup_inputs(vocabulary: np.ndarray, popularity: np.ndarray) -> dict:
    """Example `item_ids` for the warm-up: sessions of popular items, batch 1 and batch 8."""
    popular = vocabulary[np.argsort(-np.asarray(popularity), kind="stable")[:24]]
    batch = np.resize(popular, (8, 3))
    batch[1:, 0] = "" if contract.is_string_vocabulary(vocabulary) else 0  # padded rows too
    return {"batch_1": batch[:1], "batch_8": batch}


def write_warmup_requests(export_dir: str, vocabulary: np.ndarray, popularity: np.ndarray,
                          model_name: str = "narm") -> str:
    """`assets.extra/tf_serving_warmup_requests`: PredictionLog records for every signature."""
    from tensorflow_serving.apis import prediction_log_pb2

    from narm_tf.serving.client_lib import build_request

    path = os.path.join(export_dir, "assets.extra", contract.WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for ids in warmup_inputs(vocabulary, popularity).values():
            for signature in contract.signatures_of(vocabulary):
                int64 = signature in (contract.SIGNATURE_INT64, contract.SIGNATURE_INT64_OPTIONS)
                with_options = signature in (contract.SIGNATURE_STRING_OPTIONS,
                                             contract.SIGNATURE_INT64_OPTIONS)
                values = (ids.astype(np.int64) if int64 else ids.astype(str)
                          if contract.is_string_vocabulary(vocabulary)
                          else np.where(ids == 0, "", ids.astype(str)))
                flags_ = np.arange(len(ids)) % 2 == 0 if with_options else None
                request = build_request(values, model_name, flags_, int64)
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
    return path
