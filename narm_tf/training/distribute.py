"""Multi-worker training: MultiWorkerMirroredStrategy from TF_CONFIG, and a `fit` that works there.

Keras 3's `Model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585: "Attempt
to convert a value (PerReplica:...)"; checked here with Keras 3.15.1 and TF 2.21 on two local
workers). Of the two ways round it, this module takes the small custom loop, not a patch:
`fit` below calls the model's own `train_step` / `test_step` inside `strategy.run`, so the
loss, the gradient all-reduce (Keras' optimizer under a tf.distribute strategy), the metrics
and the flags are those of single-machine training, and it drives the same Keras
`CallbackList` as `Model.fit` (on_train_begin ... on_train_end, logs with `val_` keys,
`model.stop_training`, `model._initial_epoch` set by BackupAndRestore, the History it returns).
A patch of Keras' epoch iterator would touch private internals that change between releases;
this loop uses only `train_step`, `test_step`, `get_metrics_result`, `reset_metrics` and
`CallbackList`, public Keras API, plus the one attribute BackupAndRestore sets for `fit`.

Input: each worker streams the split (`narm_tf.data.dataset.Dataset.batches` with its
`input_context`, the dataset opened with input='stream') and keeps every k-th record of the
shuffled stream (sharding by data, after a shuffle seeded alike on every worker): the union of
the workers' batches at each step is the global batch one worker would read, at the cost of
every worker reading all the bytes (it parses only its share).

Outputs: the chief (task `chief`, else `worker` 0) writes the run folder; every other worker
runs the same callbacks in a temporary folder, holding a copy of the chief's backup so that
BackupAndRestore resumes all workers at the same epoch, and deletes it at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf


def cluster_size(tf_config: str | None = None) -> int:
    """Tasks (chief + workers) named by TF_CONFIG (`tf_config`, default the environment); 0
    without it. ValueError naming TF_CONFIG when it is not such JSON."""
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text.strip():
        return 0
    try:
        cluster = json.loads(text)["cluster"]
        return len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description ({error}): {text!r}") from None


def is_multi_worker() -> bool:
    """Whether TF_CONFIG names a cluster of more than one task."""
    return cluster_size() > 1


def make_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster (create it before other TF ops)."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    print(f"MultiWorkerMirroredStrategy: {resolver.task_type} {resolver.task_id}, "
          f"{strategy.num_replicas_in_sync} replica(s) in the cluster", flush=True)
    return strategy


def is_chief(strategy) -> bool:
    """The task that writes the outputs: `chief`, else `worker` 0 (any single-machine run)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


@contextlib.contextmanager
def worker_dir(model_dir: str, strategy):
    """The folder this worker writes to: `model_dir` for the chief; for the others a temporary
    folder named by task and run folder (a killed worker's leftover is cleared on restart),
    deleted on exit, that `copy_backup` fills from the chief's."""
    if is_chief(strategy):
        yield model_dir
        return
    resolver = strategy.cluster_resolver
    digest = hashlib.sha1(os.path.abspath(model_dir).encode()).hexdigest()[:12]
    temp = os.path.join(tempfile.gettempdir(),
                        f"narm-worker-{resolver.task_type}{resolver.task_id}-{digest}")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def copy_backup(chief_dir: str, worker_folder: str, backup: str, records=()) -> bool:
    """Copies the chief's BackupAndRestore folder (if any) and the files `records` (its best
    score, read by the callbacks) into this worker's folder, so that all workers restore the
    same epoch and their callbacks act alike (a worker whose best checkpoint saved when the
    chief's did not would make collective reads the chief does not: the cluster fails).
    Returns whether a backup was copied: the worker resumes. Call it before training starts:
    the chief writes a backup only at an epoch's end, which needs every worker."""
    source = os.path.join(chief_dir, backup)
    if not os.path.isdir(source):
        return False
    shutil.copytree(source, os.path.join(worker_folder, backup), dirs_exist_ok=True)
    for name in records:
        if os.path.exists(os.path.join(chief_dir, name)):
            shutil.copy(os.path.join(chief_dir, name), os.path.join(worker_folder, name))
    return True


def fit(model: keras.Model, strategy, train_fn, validation_fn=None, epochs: int = 1,
        steps_per_epoch: int = 1, callbacks=(), log_every: int = 16,
        verbose: int = 2) -> keras.callbacks.History:
    """`Model.fit`'s contract over `strategy.run`: returns the History.

    Args:
      train_fn: `InputContext -> tf.data.Dataset` of this worker's per-replica batches,
        repeated (a worker must not run out before the others: every step is collective).
      validation_fn: like it, finite; each worker evaluates its shard and the metrics are
        summed over the cluster when read.
      steps_per_epoch: training steps per epoch, the same on every worker.
      log_every: steps between reading the (cluster-wide) loss for `on_train_batch_end`.
    """
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
        train_iter = iter(strategy.distribute_datasets_from_function(train_fn))
        train_step = tf.function(lambda batch: strategy.run(model.train_step, args=(batch,)),
                                 autograph=False)  # as Keras: the step is not converted
        test_step = tf.function(lambda batch: strategy.run(model.test_step, args=(batch,)),
                                autograph=False)
        callback_list = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose,
            epochs=epochs, steps=steps_per_epoch, model=model)
        model.stop_training = False
        callback_list.on_train_begin()
        logs = None
        for epoch in range(model._initial_epoch or 0, epochs):  # set by BackupAndRestore
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for begin in range(0, steps_per_epoch, log_every):
                end = min(begin + log_every, steps_per_epoch) - 1
                callback_list.on_train_batch_begin(begin)
                for _ in range(begin, end + 1):
                    keys = train_step(next(train_iter)).keys()  # what the step logs
                callback_list.on_train_batch_end(end, _read_metrics(model, keys))
            logs = _read_metrics(model, keys)
            if validation_fn is not None:
                logs.update({f"val_{name}": value for name, value in
                             _evaluate(model, strategy, validation_fn, test_step).items()})
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
    return model.history


def _read_metrics(model: keras.Model, keys=None) -> dict:
    """The model's metrics (those named in `keys`, default all) over all replicas of the
    cluster: a collective read, which every worker makes at the same point."""
    return {name: float(value) for name, value in model.get_metrics_result().items()
            if keys is None or name in keys}


def barrier(strategy) -> None:
    """Returns once every worker has called it: a worker that exits while another still works
    makes the cluster's coordination service fail the others."""
    @tf.function(autograph=False)
    def all_reduce():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.ones([])))

    all_reduce()


def _evaluate(model: keras.Model, strategy, validation_fn, test_step) -> dict:
    model.reset_metrics()
    for batch in strategy.distribute_datasets_from_function(validation_fn):
        test_step(batch)
    return _read_metrics(model)
