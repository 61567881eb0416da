"""NARM at 43k, 250k and 1M items: training speed and memory with the full and the
sampled softmax, full-ranking evaluation, export size and serving latency.

Data: `narm_tf.synthetic_scale` (Zipf popularity, latent intents), made in memory. Each
measurement runs in its own subprocess, which reports its peak RSS (`ru_maxrss`):
  train    examples/s of `model.fit` (D=50, H=100, batch 512, XLA, the repo's defaults) after
           one warm-up call, `--loss=full` or `--loss=sampled` (1,024 shared negatives)
  eval     prefixes/s of `narm_tf.evaluate.evaluate_model` (exact full ranking; item blocks
           above `evaluate.MAX_SCORES`), after a warm-up call
  serve    after `--serve_train_steps` of sampled-softmax training (so the item table is a
           trained one), for each `--scorings` (`narm_tf.serving.reduced_precision`): export
           size, batch-1 latency (median, p99) of the `int64_ids` signature loaded with
           `tf.saved_model.load` on random sessions, batch-512 throughput and top-20 overlap
           with `exact` on 2,048 test prefixes of the synthetic log
Other weights are random (speed and memory do not depend on them). `cpu_ms_per_step` is the
process's CPU time (all threads) per step: less sensitive to other processes on the cores than
wall time.

  python benchmarks/catalog_scale.py                       # all sizes, all measurements
  python benchmarks/catalog_scale.py --sizes=1000000 --tasks=train_sampled,eval
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TASKS = ("train_full", "train_sampled", "eval", "serve")
flags.DEFINE_list("sizes", ["43097", "250000", "1000000"], "Catalogue sizes (items).")
flags.DEFINE_list("tasks", list(TASKS), f"Measurements, of {TASKS}.")
flags.DEFINE_integer("full_max_items", 250_000,
                     "Skip the full softmax above this many items (at 1M a step holds "
                     "[512, 1M] logits and their gradient, 4 GB, and takes seconds).")
flags.DEFINE_integer("num_negatives", 1024, "Negatives of the sampled softmax.")
flags.DEFINE_integer("batch_size", 512, "Training batch size.")
flags.DEFINE_integer("train_steps", 160, "Timed training steps (sampled; full: a quarter).")
flags.DEFINE_integer("eval_prefixes", 8192, "Prefixes evaluated (timed).")
flags.DEFINE_integer("runs", 500, "Batch-1 requests timed (after 50 warm-up requests).")
flags.DEFINE_list("scorings", ["exact", "bfloat16", "two_stage"],
                  "serve: the exports' --scoring (narm_tf.serving.reduced_precision).")
flags.DEFINE_integer("serve_train_steps", 2000,
                     "serve: sampled-softmax steps trained before exporting (0: random weights).")
flags.DEFINE_integer("timeout", 1800, "Seconds allowed to each subprocess.")
flags.DEFINE_string("task", "", "Internal: run one measurement in this process.")
flags.DEFINE_integer("num_items", 0, "Internal: the catalogue size of --task.")
FLAGS = flags.FLAGS
SEED = 0


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _data(num_items: int, train_sessions: int, test_sessions: int):
    from narm_tf import synthetic_scale

    return synthetic_scale.make_splits(num_items, train_sessions, test_sessions, seed=SEED)


def _model(num_items: int):
    import keras

    from narm_tf.model.narm import build_narm, compile_narm

    keras.utils.set_random_seed(SEED)
    return compile_narm(build_narm(num_items))


def measure_train(num_items: int, loss: str) -> dict:
    from narm_tf.data import dataset as data
    from narm_tf.model import sampled

    steps = FLAGS.train_steps if loss == "sampled" else max(16, FLAGS.train_steps // 4)
    train, _ = _data(num_items, (steps + 16) * FLAGS.batch_size // 4, 10)
    model = _model(num_items)
    if loss == "sampled":
        counts = np.bincount(train.labels, minlength=num_items + 1)
        sampled.attach(model, counts, FLAGS.num_negatives, SEED)
    dataset = data.make_dataset(train, FLAGS.batch_size, shuffle=True, seed=SEED, repeat=True)
    model.fit(dataset, epochs=1, steps_per_epoch=16, verbose=0)  # traces and compiles
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"examples_per_s": round(steps * FLAGS.batch_size / seconds),
            "ms_per_step": round(1e3 * seconds / steps, 1),
            "cpu_ms_per_step": round(1e3 * cpu / steps, 1), "steps": steps}


def measure_eval(num_items: int) -> dict:
    from narm_tf import evaluate

    _, test = _data(num_items, 10, FLAGS.eval_prefixes // 3)
    test = test.take(np.arange(min(len(test), FLAGS.eval_prefixes)))
    model = _model(num_items)
    counts = np.bincount(test.labels, minlength=num_items + 1)[1:]
    evaluate.evaluate_model(model, test.take(np.arange(1024)), popularity=counts)  # warm-up
    start = time.perf_counter()
    results = evaluate.evaluate_model(model, test, popularity=counts)
    seconds = time.perf_counter() - start
    return {"prefixes_per_s": round(len(test) / seconds), "prefixes": len(test),
            "blockwise": 1024 * (num_items + 1) > evaluate.MAX_SCORES,
            "recall@20": round(100 * results.recall, 2)}


def measure_serve(num_items: int) -> dict:
    """Export size and latency of each `--scorings` export (`narm_tf.serving.reduced_precision`)
    and each one's top-20 overlap with `exact` on test sessions of the synthetic log."""
    model = _model(num_items)
    trained = _train_for_serving(model, num_items) if FLAGS.serve_train_steps else {}
    vocabulary = 10_000_000 + np.arange(num_items, dtype=np.int64)
    popularity = np.random.default_rng(SEED).zipf(1.5, num_items)
    rng = np.random.default_rng(1)
    singles = [_request(rng, vocabulary, 1) for _ in range(FLAGS.runs + 50)]
    _, test = _data(num_items, 10, 2048 // 3)  # the catalogue's sessions: 2,048 test prefixes
    large = vocabulary[np.maximum(test.prefixes[:2048] - 1, 0)]
    large[test.prefixes[:2048] == 0] = 0
    result, tops = dict(trained), {}
    for scoring in FLAGS.scorings:
        figures, tops[scoring] = _serve_one(model, vocabulary, popularity, scoring, singles, large)
        result.update({f"{scoring}_{name}": value for name, value in figures.items()})
        if scoring != "exact" and "exact" in tops:
            overlap = [len(set(a) & set(b)) / a.shape[0]
                       for a, b in zip(tops["exact"], tops[scoring], strict=True)]
            result[f"{scoring}_top20_overlap_pct"] = round(100 * float(np.mean(overlap)), 2)
    return result


def _train_for_serving(model, num_items: int) -> dict:
    """`--serve_train_steps` of sampled-softmax training on the synthetic log, so that the
    overlap figures are those of a trained item table, not of a random one."""
    from narm_tf.data import dataset as data
    from narm_tf.model import sampled

    train, _ = _data(num_items, FLAGS.serve_train_steps * FLAGS.batch_size // 4, 10)
    counts = np.bincount(train.labels, minlength=num_items + 1)
    sampled.attach(model, counts, FLAGS.num_negatives, SEED)
    dataset = data.make_dataset(train, FLAGS.batch_size, shuffle=True, seed=SEED, repeat=True)
    start = time.perf_counter()
    history = model.fit(dataset, epochs=1, steps_per_epoch=FLAGS.serve_train_steps, verbose=0)
    return {"trained_steps": FLAGS.serve_train_steps,
            "trained_s": round(time.perf_counter() - start),
            "trained_loss": round(float(history.history["loss"][-1]), 3)}


def _request(rng, vocabulary, batch):
    """Raw ids `[batch, 19]` int64: sessions of 1-19 random items, right-padded with 0."""
    lengths = rng.integers(1, 20, batch)
    ids = vocabulary[rng.integers(0, len(vocabulary), (batch, 19))]
    ids[np.arange(19)[None, :] >= lengths[:, None]] = 0
    return ids


def _serve_one(model, vocabulary, popularity, scoring, singles, large):
    import tensorflow as tf

    from narm_tf.serving import export_lib

    with tempfile.TemporaryDirectory() as base:
        start = time.perf_counter()
        export_dir = export_lib.export_model(model, vocabulary, popularity, base, scoring=scoring)
        export_seconds = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(folder, name))
                   for folder, _, names in os.walk(export_dir) for name in names)
        signature = tf.saved_model.load(export_dir).signatures["int64_ids"]

        def call(ids):
            return signature(item_ids=tf.constant(ids))["top_k_item_ids"].numpy()

        latencies = []
        for i, ids in enumerate(singles):
            start = time.perf_counter()
            call(ids)
            if i >= 50:
                latencies.append(time.perf_counter() - start)
        top = np.concatenate([call(large[i:i + 512]) for i in range(0, len(large), 512)])
        start = time.perf_counter()
        for i in range(0, len(large), 512):
            call(large[i:i + 512])
        throughput = len(large) / (time.perf_counter() - start)
    ms = 1e3 * np.array(latencies)
    return {"export_mb": round(size / 1e6, 1), "export_s": round(export_seconds, 1),
            "batch1_median_ms": round(float(np.median(ms)), 2),
            "batch1_p99_ms": round(float(np.percentile(ms, 99)), 2),
            "batch512_sessions_per_s": round(throughput)}, top


def run_task(task: str, num_items: int) -> dict:
    if task.startswith("train_"):
        result = measure_train(num_items, task.removeprefix("train_"))
    elif task == "eval":
        result = measure_eval(num_items)
    elif task == "serve":
        result = measure_serve(num_items)
    else:
        raise ValueError(f"--tasks: unknown task {task!r}, expected one of {TASKS}")
    return {**result, "peak_rss_gib": round(peak_rss_gib(), 2)}


def in_subprocess(task: str, num_items: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), f"--task={task}",
               f"--num_items={num_items}", f"--num_negatives={FLAGS.num_negatives}",
               f"--batch_size={FLAGS.batch_size}", f"--train_steps={FLAGS.train_steps}",
               f"--eval_prefixes={FLAGS.eval_prefixes}", f"--runs={FLAGS.runs}",
               f"--scorings={','.join(FLAGS.scorings)}",
               f"--serve_train_steps={FLAGS.serve_train_steps}"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=FLAGS.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {FLAGS.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    return json.loads(lines[-1])


def main(argv):
    del argv
    if FLAGS.task:
        print(json.dumps(run_task(FLAGS.task, FLAGS.num_items)), flush=True)
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    for size in (int(s) for s in FLAGS.sizes):
        for task in FLAGS.tasks:
            if task == "train_full" and size > FLAGS.full_max_items:
                print(f"{size:>9,} items  {task:<13} skipped (--full_max_items="
                      f"{FLAGS.full_max_items:,})", flush=True)
                continue
            started = time.time()
            result = in_subprocess(task, size)
            print(f"{size:>9,} items  {task:<13} {json.dumps(result)}  "
                  f"({time.time() - started:.0f} s, load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    app.run(main)
