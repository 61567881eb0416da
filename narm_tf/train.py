"""Trains NARM with `model.fit` under MirroredStrategy and reports test Recall@20 / MRR@20.

    python -m narm_tf.train --flagfile=narm_tf/configs/yoochoose1_64.cfg --data_dir=DIR

Every hyperparameter default is defined here, once; flagfiles in `narm_tf/configs/` only
override. The run writes into `--model_dir`:
  best.keras       the model with the best validation Recall@20 (the one evaluated and exported)
  backup/          BackupAndRestore state: rerunning the same command resumes a killed run
  logs/            TensorBoard
  history.csv      per-epoch loss and metrics (appended across resumed runs)
  vocabulary.tsv   index, raw item id, training-label count (popularity) of every item
  config.json      the resolved flags
  metrics.json     test (and validation) Recall@20 / MRR@20 with the number of prefixes
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
_EARLIER_FLAGS = set(FLAGS)

# Data.
flags.DEFINE_string("dataset", "yoochoose/yoochoose1_64",
                    "TFDS name/config: yoochoose/yoochoose1_64, yoochoose/yoochoose1_4, "
                    "yoochoose/yoochoose_full or diginetica.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"),
                    "TFDS data_dir holding the built dataset (`tfds build ... --data_dir`).")
flags.DEFINE_string("model_dir", "runs/narm", "Where checkpoints, logs and metrics are written.")
# Model (paper section 3, SPEC section 2).
flags.DEFINE_integer("embedding_dim", 50, "Item embedding size D.")
flags.DEFINE_integer("hidden_units", 100, "GRU hidden units H.")
flags.DEFINE_enum("variant", "hybrid", ["global", "local", "hybrid"],
                  "Session feature: c_g, c_l or [c_g; c_l] (paper Table 4).")
flags.DEFINE_enum("decoder", "bilinear", ["bilinear", "dense"],
                  "Bilinear decoder (eq. 10) or fully connected (paper Table 2).")
flags.DEFINE_enum("attention", "unnormalized", ["unnormalized", "softmax"],
                  "Attention weights as in eq. 7-8 (unnormalized, the paper) or softmax.")
flags.DEFINE_float("embedding_dropout", 0.25, "Dropout between the embedding and the GRU.")
flags.DEFINE_float("representation_dropout", 0.5, "Dropout between c_t and the decoder.")
flags.DEFINE_integer("max_len", 19, "Clicks kept per prefix (the builders' 19): the widest "
                     "batch, and the session length of the export.")
# Training (paper section 4.3.2).
flags.DEFINE_list("length_buckets", [],
                  "Opt-in, e.g. 2,3,4,6,8,11,15 (narm_tf.data.DEFAULT_LENGTH_BUCKETS): group "
                  "prefixes of similar length into each batch and cut it to the first width "
                  "that holds them, so the GRU skips padding (one XLA compilation per width). "
                  "Faster epochs, but each epoch learns less (measured on the demo data; see "
                  "README). Empty (default): random batches, max_len wide.")
flags.DEFINE_integer("batch_size", 512, "Global batch size, split across replicas.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("epochs", 30, "Maximum epochs.")
flags.DEFINE_integer("patience", 5, "Early stopping: epochs without a better validation Recall@20.")
flags.DEFINE_integer("steps_per_epoch", 0, "Batches per epoch; 0 = one pass over the train split.")
flags.DEFINE_integer("seed", 0, "Seed of initialization, dropout and shuffling.")
flags.DEFINE_integer("num_cpu_devices", 0,
                     "Split the CPU into N logical devices for MirroredStrategy when no GPU is "
                     "present (tests the multi-replica path on CPU); 0 or 1 = one device.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "on", "off"],
                  "XLA-compile the train step. auto = on, except across several logical CPU "
                  "devices, where XLA cannot reach the other replicas' variables.")
flags.DEFINE_boolean("train_metrics", False,
                     "Also compute Recall@20/MRR@20 on every training batch (validation always "
                     "has them): one more pass over the [batch, N+1] scores per step.")
flags.DEFINE_integer("steps_per_execution", 16,
                     "Batches per call into the compiled train step (Keras compile option): "
                     "fewer stalls between batches; callbacks see every Nth batch.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 1024, "Batch size of the final test evaluation.")
flags.DEFINE_string("export_base", "",
                    "If set, export the best model for TF Serving to EXPORT_BASE/<version>.")
flags.DEFINE_integer("export_k", 20, "Top-k of the exported signature.")

CONFIG_FLAGS = sorted(set(FLAGS) - _EARLIER_FLAGS)  # The flags written to config.json.
MODEL_FILE = "best.keras"
K = 20


def configure_devices(num_cpu_devices: int) -> None:
    """Splits the CPU into logical devices; must run before TensorFlow creates any op."""
    import tensorflow as tf

    if num_cpu_devices > 1 and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)


def make_strategy():
    """MirroredStrategy over all GPUs, else over the (logical) CPU devices: one code path."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    print(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s): {devices}",
          flush=True)
    return strategy


def use_xla(setting: str, strategy) -> bool:
    """`--jit_compile`: on, off, or auto (on unless replicas sit on logical CPU devices)."""
    from narm_tf import model as narm_model

    if setting != "auto":
        return setting == "on"
    return narm_model.xla_supported(strategy)


def resolved_config() -> dict:
    """The flag values this module defines, as written to config.json."""
    return {name: FLAGS[name].value for name in CONFIG_FLAGS}


def write_json(path: str, value: dict) -> None:
    """Writes JSON atomically (temp file + rename) so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_vocabulary(path: str, vocabulary, counts) -> None:
    """vocabulary.tsv: `index, item_id, train_count` for indices 1..N (what the exporter reads)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("index\titem_id\ttrain_count\n")
        for index, (item, count) in enumerate(zip(vocabulary, counts, strict=True), start=1):
            f.write(f"{index}\t{item}\t{count}\n")
    os.replace(tmp, path)


def label_counts(num_items: int, *splits):
    """Occurrences of each item 1..N as a label over the given splits: [N] int64 popularity."""
    import numpy as np

    counts = np.zeros(num_items + 1, np.int64)
    for split in splits:
        counts += np.bincount(split.labels, minlength=num_items + 1)
    return counts[1:]


def read_best(model_dir: str) -> dict | None:
    """best.json: validation Recall@20 and epoch of the saved best model, if any."""
    path = os.path.join(model_dir, "best.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def start_or_resume(model_dir: str) -> float | None:
    """A killed run (backup/ present) resumes with its best so far, so best.keras is only ever
    replaced by a better model; a new run in the same folder starts its records afresh."""
    if os.path.isdir(os.path.join(model_dir, "backup")):
        best = read_best(model_dir)
        return None if best is None else best["val_recall@20"]
    for stale in ("best.json", "history.csv"):
        if os.path.exists(os.path.join(model_dir, stale)):
            os.remove(os.path.join(model_dir, stale))
    return None


class _RecordBest:
    """Keeps best.json next to best.keras: the best validation Recall@20 and its epoch."""

    def __init__(self, model_dir: str, start: float | None):
        self.path = os.path.join(model_dir, "best.json")
        self.best = start

    def __call__(self, epoch: int, logs: dict) -> None:
        value = float(logs.get("val_recall@20", float("nan")))
        if self.best is None or value > self.best:
            self.best = value
            write_json(self.path, {"val_recall@20": value, "epoch": epoch + 1})


def callbacks(model_dir: str, patience: int) -> list:
    """Best checkpoint, early stopping, TensorBoard, history and BackupAndRestore."""
    import keras

    start = start_or_resume(model_dir)
    record = _RecordBest(model_dir, start)
    return [
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(model_dir, MODEL_FILE), monitor="val_recall@20", mode="max",
            save_best_only=True, initial_value_threshold=start, verbose=1),
        keras.callbacks.LambdaCallback(on_epoch_end=record),
        keras.callbacks.EarlyStopping(monitor="val_recall@20", mode="max", patience=patience,
                                      verbose=1),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "history.csv"), append=True),
    ]


def train(config: dict) -> dict:
    """Builds, fits and evaluates NARM as `config` (the flag values) says; returns metrics."""
    import keras
    import tensorflow as tf

    from narm_tf import data, evaluate
    from narm_tf import model as narm_model

    keras.utils.set_random_seed(config["seed"])
    model_dir = config["model_dir"]
    os.makedirs(model_dir, exist_ok=True)
    write_json(os.path.join(model_dir, "config.json"), config)

    started = time.time()
    data.register_builders()
    vocabulary = data.load_vocabulary(config["dataset"], config["data_dir"])
    splits = {s: data.load_split(config["dataset"], s, config["data_dir"])
              for s in ("train", "validation", "test")}
    num_items = len(vocabulary)
    print(f"{config['dataset']}: {num_items} items; "
          + ", ".join(f"{s} {len(p)} prefixes" for s, p in splits.items())
          + f" (loaded in {time.time() - started:.1f}s)", flush=True)
    write_vocabulary(os.path.join(model_dir, "vocabulary.tsv"), vocabulary,
                     label_counts(num_items, splits["train"], splits["validation"]))

    buckets = config["length_buckets"]
    train_ds = data.make_dataset(splits["train"], config["batch_size"], shuffle=True,
                                 seed=config["seed"], repeat=config["steps_per_epoch"] > 0,
                                 length_buckets=buckets)
    valid_ds = data.make_dataset(splits["validation"], config["eval_batch_size"],
                                 length_buckets=buckets)  # metrics do not depend on order
    strategy = make_strategy()
    with strategy.scope():
        model = narm_model.build_narm(
            num_items, embedding_dim=config["embedding_dim"],
            hidden_units=config["hidden_units"], variant=config["variant"],
            decoder=config["decoder"], attention=config["attention"],
            embedding_dropout=config["embedding_dropout"],
            representation_dropout=config["representation_dropout"])
        narm_model.compile_narm(model, learning_rate=config["learning_rate"], k=K,
                                jit_compile=use_xla(config["jit_compile"], strategy),
                                train_metrics=config["train_metrics"],
                                steps_per_execution=config["steps_per_execution"])
    model.fit(train_ds, validation_data=valid_ds, epochs=config["epochs"],
              steps_per_epoch=config["steps_per_epoch"] or None,
              callbacks=callbacks(model_dir, config["patience"]), shuffle=False, verbose=2)
    fit_seconds = time.time() - started

    best = keras.models.load_model(os.path.join(model_dir, MODEL_FILE))
    results = evaluate.evaluate_model(best, splits["test"], k=K,
                                      batch_size=config["eval_batch_size"])
    popularity = evaluate.evaluate_popularity(
        label_counts(num_items, splits["train"], splits["validation"]), splits["test"], k=K)
    metrics = {
        "dataset": config["dataset"],
        "test": evaluate.summary(results),
        "popularity_baseline": evaluate.summary(popularity),
        "best_epoch": (read_best(model_dir) or {}).get("epoch"),
        "replicas": strategy.num_replicas_in_sync,
        "train_seconds": round(fit_seconds, 1),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    write_json(os.path.join(model_dir, "metrics.json"), metrics)
    print(evaluate.format_summary("NARM", results))
    print(evaluate.format_summary("POP", popularity))
    if config["export_base"]:
        from export import export_saved_model

        path = export_saved_model.export_from_model_dir(model_dir, config["export_base"],
                                                        k=config["export_k"])
        print(f"Exported for TF Serving: {path}")
    return metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    configure_devices(FLAGS.num_cpu_devices)
    train(resolved_config())


if __name__ == "__main__":
    app.run(main)
