"""Warm start: a new run's model starts from an older run's model (the one it delivers:
best.keras, or final.keras of a `--refit` run) as the catalogue moves.

    python -m narm_tf.train --dataset=NEW_WINDOW ... --warm_start_from=OLD_MODEL_DIR

Items are matched by raw item id through the two runs' vocabularies (the old run's
`vocabulary.tsv`, the new dataset's vocabulary), integer ids as integers, string ids (SKUs,
zero-padded numbers) as written; an integer catalogue and a string one are never matched:
- an item both know keeps its learned rows (embedding row; dense decoder column and bias);
- an item new to the catalogue gets the mean of the known items' rows plus Gaussian noise of
  NEW_ROW_NOISE times their per-dimension standard deviation (seeded by `--seed`): it starts
  as an average item, told apart from the other new ones;
- an item gone from the new vocabulary is dropped.
Every other weight (GRU, attention, bilinear decoder, any layer a flag adds) is copied by its
path (`layer/variable`) and must have the same shape. The optimizer starts fresh (the model is
compiled anew). `warm_start.tsv` in the new run folder maps every old index to its new one.

A run's `--warm_start_from` is part of its identity (config.json): a killed warm-started run
resumes from its own backup (BackupAndRestore) and is not warm-started again.

Validation (`--warm_validation`, part of the identity too): the new window's validation
sessions are a seeded draw of its own, so many of them are sessions the old model trained on.
Warm-started, it starts out remembering them: their Recall@20 flatters the first epochs, then
falls as the memory fades, and early stopping picks an early epoch. With `unseen` (default)
the validation split that early stopping and best.keras see drops every session of the old
run's train split (and validation split, when the old run was `--refit` on both), read from
the dataset its config.json names; the old run's own warm-start source is not followed. `all`
keeps every session. The test split is never filtered.
"""

from __future__ import annotations

import os

import numpy as np

from narm_tf import config as config_lib
from narm_tf.training import run_dir

NEW_ROW_NOISE = 0.1  # noise of a new item's rows, in units of the known rows' std
# Flags that may differ from the old run: what and how the new run trains, not the model's
# shape (every setting of narm_tf.config but the `architecture` ones), and the dataset's
# identity. Every other flag (embedding_dim, hidden_units, variant, ...) must match.
WARM_START_CHANGES = (frozenset(config_lib.SETTINGS)
                      - config_lib.with_role(config_lib.ARCHITECTURE)
                      | frozenset(run_dir.IDENTITY))
VALIDATION_CHOICES = config_lib.SETTINGS["warm_validation"].choices  # --warm_validation
# Layers whose weights are indexed by item (axis of size N + 1): remapped, not copied.
ITEM_AXES = {"item_embedding": 0, "dense_decoder": -1}


class WarmStartError(run_dir.RunFolderError):
    """The old run folder cannot seed this run (the message names the flag or weight)."""


def architecture_differences(old_config: dict, new_config: dict) -> dict:
    """{flag: (old, new)} of the flags that shape the model and differ between the runs."""
    return {key: values for key, values in run_dir.differences(old_config, new_config).items()
            if key not in WARM_START_CHANGES}


def source_indices(old_vocabulary: np.ndarray, new_vocabulary: np.ndarray) -> np.ndarray:
    """The old index of every new index `[N_new + 1]` (0 -> 0, padding); -1 for a new item.
    Raw ids int64 or str (`run_dir.matching_keys`); WarmStartError when the kinds differ."""
    try:
        old, new = run_dir.matching_keys(old_vocabulary, new_vocabulary,
                                         f"the old run's {run_dir.VOCABULARY}",
                                         "the new dataset's vocabulary")
    except ValueError as error:
        raise WarmStartError(f"--warm_start_from: {error}") from None
    position = {item: index for index, item in enumerate(old, start=1)}
    return np.array([0] + [position.get(item, -1) for item in new], np.int64)


def index_map(old_vocabulary: np.ndarray, new_vocabulary: np.ndarray) -> np.ndarray:
    """The new index of every old index `[N_old + 1]` (0 -> 0); 0 for an item dropped."""
    source = source_indices(old_vocabulary, new_vocabulary)
    mapping = np.zeros(len(old_vocabulary) + 1, np.int64)
    known = np.flatnonzero(source > 0)
    mapping[source[known]] = known
    return mapping


def remap_items(old: np.ndarray, source: np.ndarray, axis: int,
                rng: np.random.Generator) -> np.ndarray:
    """An item-indexed weight (`[N_old + 1, ...]` along `axis`) -> `[N_new + 1, ...]`: known
    items' slices copied, new items' the mean of the known ones plus NEW_ROW_NOISE * std."""
    old = np.moveaxis(np.asarray(old), axis, 0)
    items = old[1:]
    mean, std = items.mean(axis=0), items.std(axis=0)
    new = mean + NEW_ROW_NOISE * std * rng.standard_normal((len(source), *old.shape[1:]))
    known = source >= 0
    new[known] = old[source[known]]
    return np.moveaxis(new.astype(old.dtype), 0, axis)


# `--repeat_calibrate`'s temperatures (narm_tf.model.layers.RepeatExplore): not carried over.
CALIBRATION_WEIGHTS = ("explore_scale", "repeat_scale")


def transfer_weights(old_model, new_model, source: np.ndarray, seed: int = 0) -> None:
    """Assigns `old_model`'s weights to `new_model`'s by path, item-indexed ones remapped
    through `source` (`source_indices`). WarmStartError names a weight without a match."""
    import keras

    rng = np.random.default_rng(seed)
    old_weights = {weight.path: weight for weight in old_model.weights}
    for weight in new_model.weights:
        if weight.path.split("/")[-1] in CALIBRATION_WEIGHTS:
            continue  # fitted after training: the warm run trains at 1 and recalibrates
        old = old_weights.get(weight.path)
        if old is None:
            raise WarmStartError(f"the old model has no weight {weight.path}: it was built "
                                 "with other architecture flags")
        value = keras.ops.convert_to_numpy(old)
        axis = ITEM_AXES.get(weight.path.split("/")[0])
        if axis is not None:
            value = remap_items(value, source, axis, rng)
        if tuple(value.shape) != tuple(weight.shape):
            raise WarmStartError(f"weight {weight.path} has shape {tuple(value.shape)} in the "
                                 f"old model, {tuple(weight.shape)} in the new one")
        weight.assign(value)


def write_map(model_dir: str, old_vocabulary: np.ndarray, new_vocabulary: np.ndarray) -> None:
    """warm_start.tsv: `old_index, new_index, item_id` of every old item (new_index 0: the
    item is gone from the new vocabulary), written atomically."""
    mapping = index_map(old_vocabulary, new_vocabulary)
    tmp = run_dir.path(model_dir, run_dir.WARM_START_MAP + ".tmp")
    with open(tmp, "w") as f:
        f.write("old_index\tnew_index\titem_id\n")
        for old_index, item in enumerate(old_vocabulary, start=1):
            f.write(f"{old_index}\t{mapping[old_index]}\t{item}\n")
    os.replace(tmp, run_dir.path(model_dir, run_dir.WARM_START_MAP))


def finished_source(old_dir: str) -> dict:
    """config.json of the finished run in `old_dir` (`run_dir.check_finished`): a run killed
    midway is refused, naming what it lacks and that rerunning its command finishes it."""
    try:
        return run_dir.check_finished(old_dir)[0]
    except run_dir.RunFolderError as error:
        raise WarmStartError(f"--warm_start_from={old_dir}: {error}") from None


def load_source(old_dir: str, config: dict):
    """The old run's (best model, raw-id vocabulary), after checking it can seed `config`."""
    import keras

    import narm_tf.model.narm  # noqa: F401  (registers the custom layers for load_model)

    if os.path.realpath(old_dir) == os.path.realpath(config["model_dir"]):
        raise WarmStartError(f"--warm_start_from={old_dir} is this run's own --model_dir: "
                             "warm start from another run's folder")
    old_config = finished_source(old_dir)
    changed = architecture_differences(old_config, config)
    if changed:
        listed = run_dir.describe_differences(changed, old_config)
        raise WarmStartError(f"--warm_start_from={old_dir} holds a model with other "
                             f"architecture flags ({listed}): train with its flags, or "
                             "from scratch")
    model = keras.models.load_model(run_dir.delivered_model(old_dir, old_config), compile=False)
    return model, run_dir.read_vocabulary(old_dir)[0], old_config["run_id"]


def warm_start(model, config: dict, vocabulary: np.ndarray, clear_on_failure: bool = True
               ) -> dict:
    """The train hook: `model` (built and compiled for `config`) takes the weights of the run
    in `config["warm_start_from"]`; writes warm_start.tsv; returns counts (kept, new,
    dropped). On failure WarmStartError is raised, and the new run folder cleared when
    `clear_on_failure` (before training; not before a `--refit`, which follows it)."""
    model_dir = config["model_dir"]
    try:
        old_model, old_vocabulary, old_run = load_source(config["warm_start_from"], config)
        source = source_indices(old_vocabulary, np.asarray(vocabulary))
        transfer_weights(old_model, model, source, config["seed"])
    except WarmStartError:
        if clear_on_failure:
            run_dir.clear(model_dir)
        raise
    write_map(model_dir, old_vocabulary, np.asarray(vocabulary))
    counts = {"kept": int((source[1:] > 0).sum()), "new": int((source[1:] < 0).sum()),
              "dropped": int(len(old_vocabulary) - (source[1:] > 0).sum())}
    print(f"Warm start from {config['warm_start_from']} (run {old_run}): {counts['kept']} "
          f"items kept, {counts['new']} new, {counts['dropped']} dropped; mapping in "
          f"{run_dir.WARM_START_MAP}", flush=True)
    return counts


def old_train_sessions(old_dir: str) -> np.ndarray:
    """The distinct session ids `[S]` the model of the run in `old_dir` trained on: its train
    split, plus its validation split when it was `--refit` (its config.json's dataset and
    data_dir, at the version it recorded), read by narm_tf.data.dataset."""
    import tensorflow as tf

    from narm_tf.data import dataset as data

    old_config = finished_source(old_dir)
    name, data_dir = old_config["dataset"], old_config["data_dir"]
    where = f"--warm_start_from={old_dir} trained on {name} in {data_dir}"
    remedy = ("build it there again, or pass --warm_validation=all to validate on every "
              "session")
    try:
        old_data = data.Dataset(name, data_dir)
        version = old_data.version
        splits = ("train", "validation") if old_config.get("refit") else ("train",)
        sessions = np.concatenate([old_data.split(split).session_ids for split in splits])
    except (OSError, ValueError, TypeError, tf.errors.OpError) as error:
        raise WarmStartError(f"{where}, whose training splits cannot be read ({error}): "
                             f"{remedy}") from error
    if version != old_config.get("dataset_version"):
        raise WarmStartError(f"{where} at version {old_config.get('dataset_version')}; "
                             f"version {version} is built there now: {remedy}")
    return np.unique(sessions)


def unseen_validation(validation, old_sessions: np.ndarray):
    """The validation Prefixes whose session is not in `old_sessions` `[S]`, and counts
    {sessions, prefixes} x {dropped, kept}."""
    seen = np.isin(validation.session_ids, old_sessions)
    kept = validation.take(np.flatnonzero(~seen))
    counts = {"dropped_sessions": len(np.unique(validation.session_ids[seen])),
              "kept_sessions": len(np.unique(kept.session_ids)),
              "dropped_prefixes": int(seen.sum()), "kept_prefixes": len(kept)}
    return kept, counts


def validation_split(config: dict, dataset, resuming: bool):
    """The train hook before fit, in a warm-started run: the run's `dataset`
    (`narm_tf.data.dataset.Dataset`) with the validation that early stopping sees
    (`--warm_validation`, see the module docstring; held in memory even when streamed). Prints
    the counts. WarmStartError when the old data is gone or no session is left; a run not yet
    trained (not `resuming`) then has its folder cleared."""
    from narm_tf.training import distribute

    if config["warm_validation"] == "all":
        return dataset
    old_dir = config["warm_start_from"]
    try:
        if distribute.is_multi_worker():
            raise WarmStartError("--warm_validation=unseen: multi-worker training streams "
                                 "unfiltered validation shards; pass --warm_validation=all")
        validation = dataset.split("validation")  # streamed input too: this split, in memory
        kept, counts = unseen_validation(validation, old_train_sessions(old_dir))
        print(f"Warm validation (--warm_validation=unseen): dropped "
              f"{counts['dropped_sessions']} sessions ({counts['dropped_prefixes']} prefixes) "
              f"the old run trained on; kept {counts['kept_sessions']} sessions "
              f"({counts['kept_prefixes']} prefixes)", flush=True)
        if not len(kept):
            raise WarmStartError(f"--warm_validation=unseen: every validation session of "
                                 f"{config['dataset']} is in the train split of "
                                 f"--warm_start_from={old_dir}: none is left to stop on; "
                                 "pass --warm_validation=all")
    except WarmStartError:
        if not resuming:
            run_dir.clear(config["model_dir"])
        raise
    return dataset.with_split("validation", kept)
