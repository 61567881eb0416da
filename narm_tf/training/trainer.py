"""The training library behind `narm_tf.train`: strategy, model, fit, callbacks, refit, report.

`train(config)` runs one training as a flat config says (`narm_tf.config.default_config`, or the
command's flags): under MirroredStrategy, or under MultiWorkerMirroredStrategy when TF_CONFIG
names a cluster (`narm_tf.training.distribute.fit` on streamed input; the chief writes the run).
The run folder (`config["model_dir"]`, its files listed in `narm_tf.training.run_dir`) has one
owner: a lock held for the run's life, and an identity (the settings, the dataset's version and
size) that a rerun must match to resume a killed run (`overwrite` starts afresh). A loss or
validation score that turns NaN or infinite raises `Diverged`, before anything is saved from it.
The steps (`load`, `build_and_compile`, `fit`, `calibrate`, `covisit_prior`, `refit`,
`report`) are what the tuner (`narm_tf.tune`) reuses for its trials; they read the run's data
through one handle (`narm_tf.data.dataset.Dataset`: splits, vocabulary, batches in memory or
streamed).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from narm_tf import cli
from narm_tf import config as config_lib
from narm_tf.training import run_dir


def configure_devices(num_cpu_devices: int) -> None:
    """Splits the CPU into logical devices; must run before TensorFlow creates any op."""
    import tensorflow as tf

    if num_cpu_devices > 1 and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)


def make_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster; else MirroredStrategy over all
    GPUs, else over the (logical) CPU devices: one code path."""
    import tensorflow as tf

    from narm_tf.training import distribute

    if distribute.is_multi_worker():
        return distribute.make_strategy()

    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    print(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s): {devices}",
          flush=True)
    return strategy


def use_xla(setting: str, strategy) -> bool:
    """`--jit_compile`: on, off, or auto (on unless replicas sit on logical CPU devices)."""
    from narm_tf.model import narm as narm_model

    if setting != "auto":
        return setting == "on"
    return narm_model.xla_supported(strategy)


# -------------------------------------------------------------------------------- callbacks


class Diverged(RuntimeError):
    """The loss, a validation score or the weights became NaN or infinite."""


def _make_divergence_guard(model_dir: str, history: bool = True):
    import keras

    class StopOnDivergence(keras.callbacks.Callback):
        """Raises `Diverged` at the first non-finite loss (naming epoch and batch), validation
        loss or weight, before any later callback saves a checkpoint, backup or history row:
        place it first. At the first epoch (after BackupAndRestore restored a killed run) it
        refuses non-finite restored weights and drops history rows of epochs to be rerun."""

        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.checked_start = False

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if not self.checked_start:  # after BackupAndRestore restored, before any step
                self.checked_start = True
                self._check_weights("the weights this run starts from")
                # A run killed between logging epoch N and backing it up reruns epoch N.
                if history:
                    run_dir.truncate_history(model_dir, epoch)

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                raise Diverged(
                    f"training diverged: loss {float(loss)} at epoch {self.epoch + 1}, batch "
                    f"{batch + 1} (the first batch at which it was read). Nothing was saved "
                    "from this epoch; lower --learning_rate and rerun with --overwrite")

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                if key in ("loss", "val_loss", run_dir.MONITOR) and not np.isfinite(value):
                    raise Diverged(f"training diverged: {key} {value} at the end of epoch "
                                   f"{epoch + 1}. Nothing was saved from this epoch; lower "
                                   "--learning_rate and rerun with --overwrite")
            self._check_weights(f"the weights after epoch {epoch + 1}")

        def _check_weights(self, what):
            for weight in self.model.weights:
                if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
                    raise Diverged(f"{what} hold NaN or infinite values ({weight.path}); "
                                   "rerun with --overwrite and a lower --learning_rate")

    return StopOnDivergence()


def _make_best_checkpoint(model_dir: str, run_id: str, start: float | None):
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        """best.keras (atomically: temp file + rename) and best.json (epoch, score, run_id)
        whenever validation Recall@20 improves; `start` is the best of a resumed run."""

        def __init__(self):
            super().__init__()
            self.best = start
            self.improved = None  # (epoch, the best before it) when an epoch improved

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {})[run_dir.MONITOR])
            if self.best is not None and value <= self.best:
                return
            self.improved = (epoch, self.best)
            self.best = value
            with cli.interrupts_deferred():  # best.keras and best.json agree
                run_dir.save_model(model_dir, self.model)
                run_dir.write_json(run_dir.path(model_dir, run_dir.BEST_RECORD),
                                   {run_dir.MONITOR: value, "epoch": epoch + 1,
                                    "run_id": run_id})

    return BestCheckpoint()


def _make_epoch_line(checkpoint=None):
    import keras

    class EpochLine(keras.callbacks.Callback):
        """One line per epoch, once it has ended: its number, steps, seconds and logs, and whether
        `checkpoint` (a BestCheckpoint placed before it) saved best.keras (fit runs with
        verbose=0: Keras' progress bar writes many lines into a captured log)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.steps = time.time(), 0

        def on_train_batch_end(self, batch, logs=None):
            # The last step of the call (--steps_per_execution), at most the epoch's steps.
            self.steps = min(batch + 1, self.params.get("steps") or math.inf)

        def on_epoch_end(self, epoch, logs=None):
            line = [f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}",
                    f"{self.steps} steps", f"{time.time() - self.started:.0f}s"]
            line += [f"{key} {float(value):.4f}" for key, value in (logs or {}).items()]
            if checkpoint is not None and checkpoint.improved and checkpoint.improved[0] == epoch:
                before = checkpoint.improved[1]
                line.append(f"{run_dir.MONITOR} improved from "
                            f"{'none' if before is None else f'{before:.5f}'}, saved "
                            f"{run_dir.BEST_MODEL}")
            print(" - ".join(line), flush=True)

    return EpochLine()


def _whole_at_ctrl_c(callback_class, *args):
    """`callback_class(*args)` (a Keras callback writing files at each epoch's end) whose
    epoch-end writes a Ctrl-C does not cut short: a rerun resumes from whole files."""
    class Whole(callback_class):
        def on_epoch_end(self, epoch, logs=None):
            with cli.interrupts_deferred():
                super().on_epoch_end(epoch, logs)

    return Whole(*args)


def learning_rate_schedule(config: dict) -> list:
    """`--learning_rate_decay` below 1: a callback setting epoch e's rate to
    learning_rate x decay^e (a resumed or refit run gets the same rate per epoch); else []."""
    import keras

    rate, decay = config["learning_rate"], config["learning_rate_decay"]
    if decay == 1.0:
        return []
    return [keras.callbacks.LearningRateScheduler(lambda epoch: rate * decay ** epoch)]


def callbacks(model_dir: str, run_id: str, patience: int, resuming: bool,
              schedule: tuple = ()) -> list:
    """`schedule` (learning_rate_schedule), divergence guard, best checkpoint, one line per
    epoch, history, BackupAndRestore, early stopping and TensorBoard."""
    import keras

    best = run_dir.read_json(model_dir, run_dir.BEST_RECORD) if resuming else None
    checkpoint = _make_best_checkpoint(model_dir, run_id, best and best[run_dir.MONITOR])
    return [  # The epoch's rate first; at its end: check, save the best, print, log, back up.
        *schedule,
        _make_divergence_guard(model_dir),
        checkpoint,
        _make_epoch_line(checkpoint),
        _whole_at_ctrl_c(keras.callbacks.CSVLogger, run_dir.path(model_dir, run_dir.HISTORY),
                         ",", True),
        _whole_at_ctrl_c(keras.callbacks.BackupAndRestore,
                         run_dir.path(model_dir, run_dir.BACKUP)),
        keras.callbacks.EarlyStopping(monitor=run_dir.MONITOR, mode="max", patience=patience,
                                      verbose=1),
        keras.callbacks.TensorBoard(run_dir.path(model_dir, run_dir.LOGS)),
    ]


# ------------------------------------------------------------------------------ the steps


def input_mode(config: dict) -> str:
    """`--input` for the run's dataset (the dataset resolves auto): multi-worker training
    always streams."""
    from narm_tf.training import distribute

    if distribute.is_multi_worker():
        if config["input"] == "memory":
            raise ValueError("--input=memory: multi-worker training (TF_CONFIG names a "
                             "cluster) streams its input; use --input=auto or --input=stream")
        return "stream"
    return config["input"]


def load(config: dict):
    """The run's dataset (`narm_tf.data.dataset.Dataset`, reading as `input_mode` says), its
    splits held in memory read now (the test split always; train and validation unless
    streamed, then read batch by batch by `fit`)."""
    from narm_tf.data import dataset as data

    started = time.time()
    dataset = data.Dataset(config["dataset"], config["data_dir"], input_mode(config))
    streamed = ("train", "validation") if dataset.input == "stream" else ()
    splits = ("train", "validation", "test")
    for split in splits:
        if split not in streamed:
            dataset.split(split)
    sizes = dataset.sizes
    print(f"{config['dataset']}: {dataset.num_items} items; "
          + ", ".join(f"{s} {sizes[s]} prefixes" + (" (streamed)" if s in streamed else "")
                      for s in splits)
          + f" (loaded in {time.time() - started:.1f}s)", flush=True)
    return dataset


def label_counts(dataset) -> tuple[np.ndarray, np.ndarray]:
    """`(train, validation)` label counts `[N]`, in memory or streamed, each split read once:
    their sum is the popularity (vocabulary.tsv, POP); train's the `--loss=sampled` proposal."""
    return dataset.label_counts("train"), dataset.label_counts("validation")


def build_and_compile(config: dict, num_items: int, strategy, label_counts=None):
    """The NARM model of `config`, compiled, its variables placed by `strategy`.
    label_counts: training-label counts `[N]`, the negatives' proposal of `--loss=sampled`."""
    import keras

    from narm_tf.model import gru
    from narm_tf.model import narm as narm_model

    policy = config["mixed_precision"]
    keras.mixed_precision.set_global_policy("float32" if policy == "off" else policy)
    with strategy.scope():
        model_config = config_lib.Config.from_dict(config).model
        per_replica = max(1, config["batch_size"] // strategy.num_replicas_in_sync)
        model = narm_model.build_narm(num_items, **dataclasses.asdict(model_config),
                                      gru_phases=gru.phases_for(per_replica))
        narm_model.compile_narm(model, learning_rate=config["learning_rate"], k=config_lib.K,
                                jit_compile=use_xla(config["jit_compile"], strategy),
                                train_metrics=config["train_metrics"],
                                steps_per_execution=config["steps_per_execution"])
        if config["loss"] == "sampled":
            from narm_tf.model import sampled

            if label_counts is None:
                raise ValueError("--loss=sampled needs the training-label counts")
            sampled.attach(model, np.concatenate([[0], label_counts]),
                           config["num_negatives"], config["seed"])
    return model


def fit(config: dict, model, dataset, resuming: bool, strategy=None,
        extra_callbacks: tuple = ()) -> None:
    """`model.fit` on the `dataset`'s train split, validated on its validation split, with
    `callbacks` (then `extra_callbacks`, e.g. the tuner's wall clock); under a multi-worker
    strategy `narm_tf.training.distribute.fit`, each worker on its shard."""
    from narm_tf.training import distribute

    buckets = config["length_buckets"]
    steps = config["steps_per_epoch"] or None
    callback_list = callbacks(config["model_dir"], config["run_id"], config["patience"],
                              resuming, learning_rate_schedule(config)) + list(extra_callbacks)
    if strategy is not None and distribute.is_multi_worker():
        _fit_multi_worker(config, model, dataset, strategy, callback_list)
        return
    train_ds = dataset.batches("train", config["batch_size"], shuffle=True, seed=config["seed"],
                               repeat=steps is not None, length_buckets=buckets)
    valid_ds = dataset.batches("validation", validation_batch_size(config, model),
                               length_buckets=buckets)  # metrics do not depend on order
    model.fit(train_ds, validation_data=valid_ds, epochs=config["epochs"],
              steps_per_epoch=steps, callbacks=callback_list, shuffle=False, verbose=0)


def _fit_multi_worker(config: dict, model, dataset, strategy, callback_list) -> None:
    """distribute.fit on streamed shards: an epoch = --steps_per_epoch, or the train split's
    examples // the global batch (every worker must take the same number of steps)."""
    from narm_tf.training import distribute

    steps = (config["steps_per_epoch"]
             or max(1, dataset.sizes["train"] // config["batch_size"]))

    def shard(split, global_batch, **options):
        def dataset_fn(context):
            return dataset.batches(
                split, context.get_per_replica_batch_size(global_batch),
                length_buckets=config["length_buckets"], input_context=context, **options)
        return dataset_fn

    distribute.fit(model, strategy,
                   shard("train", config["batch_size"], shuffle=True, seed=config["seed"],
                         repeat=True),
                   shard("validation", validation_batch_size(config, model)),
                   epochs=config["epochs"],
                   steps_per_epoch=steps, callbacks=callback_list,
                   log_every=config["steps_per_execution"], verbose=0)


def validation_batch_size(config: dict, model) -> int:
    """`--eval_batch_size`, cut so a validation batch's scores `[batch, N + 1]` stay under
    `evaluate.MAX_SCORES` floats (512 MiB): bounds validation memory at large catalogues; and
    down to a multiple of the model's replicas (Keras builds a distributed model from its
    first batch averaged over the replicas, which fails when their shares differ in size;
    the figures do not depend on the batch size)."""
    from narm_tf import evaluate

    replicas = model.distribute_strategy.num_replicas_in_sync
    size = max(1, min(config["eval_batch_size"], evaluate.MAX_SCORES // model.output.shape[-1]))
    return max(replicas, size - size % replicas)


def check_batch_split(batch_size: int, replicas: int) -> None:
    """Refuses a `--batch_size` the replicas cannot share evenly (Keras and
    MultiWorkerMirroredStrategy split each batch into equal shares), naming the nearest
    sizes that work."""
    if batch_size % replicas:
        lower = batch_size - batch_size % replicas
        sizes = " or ".join(str(s) for s in (lower, lower + replicas) if s > 0)
        raise ValueError(f"--batch_size={batch_size}: must be a multiple of the {replicas} "
                         f"replicas (each batch is split evenly over them), e.g. {sizes}")


def report(config: dict, model, dataset, counts: np.ndarray, strategy, seconds: float,
           calibration: dict | None = None, selected=None,
           covisit_choice: dict | None = None) -> dict:
    """Evaluates the delivered `model` on the `dataset`'s test split beside POP (`counts [N]`:
    train + validation labels), and with --refit the `selected` model (best.keras) too, for
    comparison; writes and returns metrics.json (with how it was trained: the replicas and
    whether the train step ran under XLA)."""
    import keras
    import tensorflow as tf

    from narm_tf import evaluate

    model_dir, test = config["model_dir"], dataset.split("test")
    results = evaluate.evaluate_model(model, test, k=config_lib.K,
                                      batch_size=config["eval_batch_size"], popularity=counts)
    popularity = evaluate.evaluate_popularity(counts, test, k=config_lib.K)
    metrics = {
        "run_id": config["run_id"],
        "dataset": config["dataset"],
        "model": os.path.basename(run_dir.delivered_model(model_dir, config)),
        "test": evaluate.summary(results),
        "popularity_baseline": evaluate.summary(popularity),
        "best_epoch": run_dir.read_json(model_dir, run_dir.BEST_RECORD)["epoch"],
        "replicas": strategy.num_replicas_in_sync,
        "xla": use_xla(config["jit_compile"], strategy),
        "train_seconds": round(seconds, 1),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    if calibration:
        metrics["repeat_calibration"] = calibration
    if covisit_choice:
        metrics["covisit"] = covisit_choice
    if selected is not None:
        chosen = evaluate.evaluate_model(selected, test, k=config_lib.K,
                                         batch_size=config["eval_batch_size"], popularity=counts)
        metrics["selected_model_test"] = evaluate.summary(chosen)
        print(evaluate.format_summary("NARM " + run_dir.BEST_MODEL, chosen))
    run_dir.write_json(run_dir.path(model_dir, run_dir.METRICS), metrics)
    print(evaluate.format_summary("NARM" + (" " + run_dir.FINAL_MODEL if selected else ""),
                                  results))
    print(evaluate.format_summary("POP", popularity))
    return metrics


def calibrate(config: dict, best, dataset) -> dict | None:
    """With `--repeat_calibrate`: fits best.keras' repeat temperatures on the `dataset`'s
    validation split, in memory even when streamed (`narm_tf.model.narm.calibrate_repeat`) and
    saves them into it (atomically); returns the chosen scales with their validation loss and
    metrics. Else None."""
    if not config.get("repeat_calibrate"):
        return None
    from narm_tf.model import narm as narm_model

    validation = dataset.split("validation")
    result = narm_model.calibrate_repeat(best, validation.prefixes, validation.labels,
                                         batch_size=validation_batch_size(config, best))
    print(f"Repeat calibration on validation: {result}", flush=True)
    run_dir.save_model(config["model_dir"], best)
    return result


def covisit_prior(config: dict, model, dataset, split: str = "train", chosen: dict | None = None):
    """With `--covisit`: `model` with the co-visitation prior (`narm_tf.model.covisit`) over the
    `dataset`'s `split` sessions (train; train + validation for the refit model), its weight
    chosen on the validation split, or `chosen`'s (the selected model's choice, for the refit
    model, which has no validation left). Returns `(model, choice)`: unchanged and None when
    off."""
    if not config.get("covisit"):
        return model, None
    from narm_tf.model import covisit
    from narm_tf.model import narm as narm_model

    started = time.time()
    ids, strengths = covisit.build_table(covisit.sessions_of(dataset.split(split)),
                                         len(dataset.vocabulary), config["covisit"])
    model = covisit.attach(model, ids, strengths)
    narm_model.compile_narm(model, learning_rate=config["learning_rate"], jit_compile=False)
    if chosen is None:
        validation = dataset.split("validation")
        chosen = covisit.choose_weight(model, validation,
                                       batch_size=validation_batch_size(config, model))
        print(f"Co-visitation prior ({config['covisit']} neighbours per item, from {split}): "
              f"weight {chosen['weight']}, session items "
              f"{'left to the model' if chosen['outside'] else 'scored too'}; validation "
              f"Recall@{config_lib.K} {100 * chosen['recall']:.2f}%, "
              f"MRR@{config_lib.K} {100 * chosen['mrr']:.2f}% "
              f"(without: {100 * chosen['grid'][0]['recall']:.2f}%, "
              f"{100 * chosen['grid'][0]['mrr']:.2f}%; {time.time() - started:.0f}s)",
              flush=True)
    else:
        covisit.set_weight(model, chosen["weight"], chosen["outside"])
    return model, chosen


def refit_started(config: dict) -> bool:
    """Whether this run's --refit has begun (final.json of its run_id): its selection is done."""
    record = run_dir.read_json(config["model_dir"], run_dir.FINAL_RECORD) or {}
    return bool(config.get("refit")) and record.get("run_id") == config["run_id"]


def refit(config: dict, dataset, vocabulary, strategy, counts: np.ndarray,
          calibration: dict | None, covisit_choice: dict | None = None):
    """`--refit`: a fresh model of the run's settings and seed (warm-started alike), trained on
    train + validation (`dataset`: all of it, even when a warm run validated on part) for
    best.json's epochs, with no validation (none is left to score it), given `calibration`'s
    repeat temperatures and `covisit_choice`'s prior weight (its table from train +
    validation); saved as final.keras and returned. `counts`: train + validation
    label counts `[N]` (the `--loss=sampled` proposal). Resumes from backup_refit/;
    final.json says how it was trained and, once final.keras is written, `finished`."""
    import keras

    from narm_tf.model import narm as narm_model

    model_dir, final_model = config["model_dir"], run_dir.path(config["model_dir"],
                                                               run_dir.FINAL_MODEL)
    record = run_dir.read_json(model_dir, run_dir.FINAL_RECORD) or {}
    if (record.get("run_id") == config["run_id"] and record.get("finished")
            and os.path.exists(final_model)):  # a resumed run whose refit had ended
        return keras.models.load_model(final_model)
    epochs = run_dir.read_json(model_dir, run_dir.BEST_RECORD)["epoch"]
    sizes = dataset.sizes
    record = {"run_id": config["run_id"], "epochs": epochs, "splits": ["train", "validation"],
              "examples": sizes["train"] + sizes["validation"], "finished": False}
    run_dir.write_json(run_dir.path(model_dir, run_dir.FINAL_RECORD), record)
    os.makedirs(run_dir.path(model_dir, run_dir.REFIT_BACKUP), exist_ok=True)  # resumable now
    print(f"Refit: a fresh model on train + validation ({record['examples']} prefixes) for "
          f"{epochs} epochs, the epoch validation chose", flush=True)
    keras.utils.set_random_seed(config["seed"])
    model = build_and_compile(config, len(vocabulary), strategy, counts)
    if config["warm_start_from"]:
        from narm_tf.training import warm_start

        warm_start.warm_start(model, config, vocabulary, clear_on_failure=False)
    steps = config["steps_per_epoch"] or None
    options = dict(shuffle=True, seed=config["seed"], repeat=steps is not None,
                   length_buckets=config["length_buckets"])
    batches = dataset.batches("train+validation", config["batch_size"], **options)
    model.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0,
              callbacks=[*learning_rate_schedule(config),
                         _make_divergence_guard(model_dir, history=False), _make_epoch_line(),
                         _whole_at_ctrl_c(keras.callbacks.BackupAndRestore,
                                          run_dir.path(model_dir, run_dir.REFIT_BACKUP))])
    if calibration:
        narm_model.set_repeat_scales(model, calibration["explore_scale"],
                                     calibration["repeat_scale"])
    if covisit_choice:
        model, _ = covisit_prior(config, model, dataset, "train+validation", covisit_choice)
    run_dir.save_model(model_dir, model, run_dir.FINAL_MODEL)
    run_dir.write_json(run_dir.path(model_dir, run_dir.FINAL_RECORD),
                       {**record, "finished": True})
    return model


def train(config: dict) -> dict:
    """Trains, evaluates (and exports) as `config` (`narm_tf.config.default_config`) says;
    returns the metrics. Raises ValueError (a bad setting), run_dir.RunFolderError or
    Diverged."""
    import keras

    from narm_tf.training import distribute

    config_lib.check_config(config)
    if config.get("refit") and distribute.is_multi_worker():
        raise ValueError("--refit: not available in multi-worker training yet; refit on one "
                         "machine (its streamed input reads train + validation as one split)")
    strategy = make_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF ops
    check_batch_split(config["batch_size"], strategy.num_replicas_in_sync)
    chief, chief_dir = distribute.is_chief(strategy), config["model_dir"]
    with distribute.worker_dir(chief_dir, strategy) as model_dir, \
            run_dir.locked(model_dir):
        started = time.time()
        dataset = load(config)
        vocabulary = dataset.vocabulary
        identity = run_dir.new_identity({**config, "model_dir": model_dir}, dataset.version,
                                        len(vocabulary))
        config, resuming = run_dir.start(model_dir, identity, config["overwrite"])
        if not chief:  # other workers restore the chief's backup and write to a temp folder
            resuming = distribute.copy_backup(chief_dir, model_dir, run_dir.BACKUP,
                                              records=(run_dir.BEST_RECORD,)) or resuming
        print(("Resuming run " if resuming else "Starting run ") + config["run_id"], flush=True)
        run_dir.write_json(run_dir.path(model_dir, run_dir.CONFIG), config)
        num_items = len(vocabulary)
        train_counts, validation_counts = label_counts(dataset)
        popularity = train_counts + validation_counts
        run_dir.write_vocabulary(model_dir, vocabulary, popularity)
        keras.utils.set_random_seed(config["seed"])
        model = build_and_compile(config, num_items, strategy, train_counts)
        fit_data = dataset
        if config["warm_start_from"]:
            from narm_tf.training import warm_start

            fit_data = warm_start.validation_split(config, dataset, resuming)
            if not resuming:  # a resumed run restores its backup
                warm_start.warm_start(model, config, vocabulary)
        if not (resuming and refit_started(config)):  # else the selection is done
            fit(config, model, fit_data, resuming, strategy)
        metrics = {}
        if chief:
            best = keras.models.load_model(run_dir.path(model_dir, run_dir.BEST_MODEL))
            calibration = calibrate(config, best, fit_data)
            best, covisit_choice = covisit_prior(config, best, fit_data)
            if covisit_choice:
                run_dir.save_model(model_dir, best)
            final = (refit(config, dataset, vocabulary, strategy, popularity, calibration,
                           covisit_choice) if config["refit"] else None)
            metrics = report(config, best if final is None else final, fit_data, popularity,
                             strategy, time.time() - started, calibration,
                             selected=None if final is None else best,
                             covisit_choice=covisit_choice)
            if config["export_base"]:
                from narm_tf.serving import export_lib

                exported = export_lib.export_from_model_dir(
                    model_dir, config["export_base"], k=config["export_k"])
                print(f"Exported for TF Serving: {exported}")
        if distribute.is_multi_worker():
            distribute.barrier(strategy)  # the other workers wait for the chief's report
    return metrics


