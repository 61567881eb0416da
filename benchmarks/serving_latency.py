"""Latency and throughput of the exported top-k signature, loaded the way TF Serving loads it.

Exports a DIGINETICA-sized NARM (43,097 items, D=50, H=100, random weights, k=20), loads it with
the TF1 loader into a Session (what TF Serving does) and times `Session.run` on the
signature_def's tensor names: batch-1 median and p99 latency over varied sessions of raw string
ids, and batch-512 throughput. The TF2 loaded signature (`tf.saved_model.load`) is timed too.
Target on the 2-core dev machine: batch-1 median < 1.5 ms, p99 < 4 ms.

  python benchmarks/serving_latency.py
  python benchmarks/serving_latency.py --runs=500 --signature=int64_ids
  python benchmarks/serving_latency.py --export_dir=exports/narm/3   # time an existing export

The machine's load average is printed with the figures: other processes on the same cores
inflate the tail (and the median) in proportion; the CPU time per request (process CPU
seconds over the timed requests, all threads) is the figure least affected by them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_integer("num_items", 43_097, "Vocabulary size (DIGINETICA: 43,097).")
flags.DEFINE_integer("k", 20, "Top-k of the export.")
flags.DEFINE_integer("runs", 2000, "Batch-1 requests timed (after 200 warm-up requests).")
flags.DEFINE_integer("batch", 512, "Batch size of the throughput run.")
flags.DEFINE_integer("batch_runs", 20, "Large-batch requests timed.")
flags.DEFINE_string("signature", "serving_default", "Signature to time.")
flags.DEFINE_bool("exclude_seen", False, "Export with exclude_seen.")
flags.DEFINE_string("export_dir", "", "Time this export instead of making one.")
flags.DEFINE_bool("tf2", True, "Also time the TF2 loaded signature.")
flags.DEFINE_integer("inter_op", 0, "Session inter-op threads (TF Serving: "
                     "--tensorflow_inter_op_parallelism); 0 = TensorFlow's default.")
flags.DEFINE_integer("intra_op", 0, "Session intra-op threads (TF Serving: "
                     "--tensorflow_intra_op_parallelism); 0 = TensorFlow's default.")
FLAGS = flags.FLAGS


def make_export(base: str) -> str:
    """A DIGINETICA-sized export with random weights; returns its version folder."""
    import keras

    from narm_tf.model.narm import build_narm
    from narm_tf.serving import export_lib

    keras.utils.set_random_seed(0)
    model = build_narm(FLAGS.num_items)
    rng = np.random.default_rng(0)
    vocabulary = 214_500_000 + rng.choice(10_000_000, FLAGS.num_items, replace=False)
    popularity = rng.zipf(1.5, FLAGS.num_items)
    start = time.perf_counter()
    path = export_lib.export_model(model, vocabulary, popularity, base, k=FLAGS.k,
                                    exclude_seen=FLAGS.exclude_seen)
    print(f"export: {time.perf_counter() - start:.1f} s -> {path}")
    return path


def request_batches(export_dir: str, batch: int, count: int, int64: bool, seed: int = 1):
    """`count` arrays `[batch, width]` of raw ids: sessions of 1-25 clicks, some unknown."""
    from narm_tf.serving.contract import VOCABULARY_ASSET

    with open(os.path.join(export_dir, "assets", VOCABULARY_ASSET)) as f:
        vocabulary = np.array(f.read().split(), np.int64)
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        lengths = rng.integers(1, 26, batch)
        ids = vocabulary[rng.integers(0, len(vocabulary), (batch, lengths.max()))]
        ids[rng.random(ids.shape) < 0.05] = 1  # unknown
        ids[np.arange(lengths.max()) >= lengths[:, None]] = 0  # padding
        batches.append(ids if int64 else np.where(ids == 0, "", ids.astype(str)).astype(bytes))
    return batches


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1e3
    return (f"median {np.median(ms):.3f} ms, p90 {np.percentile(ms, 90):.3f} ms, "
            f"p99 {np.percentile(ms, 99):.3f} ms, min {ms.min():.3f} ms")


def time_calls(call, batches, warmup: int) -> tuple[list[float], float]:
    """Wall seconds of each call, and the process CPU seconds per call (contention-robust)."""
    for i in range(warmup):
        call(batches[i % len(batches)])
    seconds = []
    cpu_start = time.process_time()
    for request in batches:
        start = time.perf_counter()
        call(request)
        seconds.append(time.perf_counter() - start)
    return seconds, (time.process_time() - cpu_start) / len(batches)


def tf1_session_call(export_dir: str, signature: str):
    """`call(item_ids)` running the signature through a TF1 Session, as TF Serving does."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=FLAGS.inter_op,
                                      intra_op_parallelism_threads=FLAGS.intra_op)
    session = tf.compat.v1.Session(graph=tf.Graph(), config=config)
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    sig = meta.signature_def[signature]
    names = sorted(sig.outputs)
    feeds = [sig.inputs["item_ids"].name]
    if "exclude_seen" in sig.inputs:
        feeds.append(sig.inputs["exclude_seen"].name)
    # A callable skips the Python feed/fetch bookkeeping of `run`: closer to TF Serving's C++.
    run = session.make_callable([sig.outputs[name].name for name in names], feeds)

    def call(item_ids):
        if len(feeds) == 2:
            return dict(zip(names, run(item_ids, np.ones(len(item_ids), bool)), strict=True))
        return dict(zip(names, run(item_ids), strict=True))

    return call


def harness_call():
    """`call(item_ids)` running a graph that only echoes `item_ids` through the same Session
    callable: the Python and Session.run overhead inside every figure (absent in TF Serving)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        ids = tf.compat.v1.placeholder(tf.string, [None, None])
        echo = tf.identity(ids)
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=FLAGS.inter_op,
                                      intra_op_parallelism_threads=FLAGS.intra_op)
    run = tf.compat.v1.Session(graph=graph, config=config).make_callable(echo, [ids])
    return run


def tf2_signature_call(export_dir: str, signature: str):
    import tensorflow as tf

    function = tf.saved_model.load(export_dir).signatures[signature]

    def call(item_ids):
        inputs = {"item_ids": tf.constant(item_ids)}
        if "exclude_seen" in function.structured_input_signature[1]:
            inputs["exclude_seen"] = tf.ones([len(item_ids)], tf.bool)
        return {name: value.numpy() for name, value in function(**inputs).items()}

    return call


def report(name: str, call, single, large) -> None:
    seconds, cpu = time_calls(call, single, warmup=200)
    print(f"{name} batch 1:   {percentiles(seconds)}; CPU {cpu * 1e3:.3f} ms/request")
    seconds, cpu = time_calls(call, large, warmup=2)
    rate = FLAGS.batch * len(large) / sum(seconds)
    print(f"{name} batch {FLAGS.batch}: {np.median(seconds) * 1e3:.1f} ms median, "
          f"{rate:,.0f} sessions/s; CPU {cpu * 1e3:.1f} ms/request")


def main(argv):
    del argv
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as base:
        export_dir = FLAGS.export_dir or make_export(os.path.join(base, "narm"))
        int64 = "int64" in FLAGS.signature
        single = request_batches(export_dir, 1, FLAGS.runs, int64)
        large = request_batches(export_dir, FLAGS.batch, FLAGS.batch_runs, int64)
        print(f"TF {tf.__version__}, {os.cpu_count()} CPUs, signature {FLAGS.signature}, "
              f"session threads inter {FLAGS.inter_op} intra {FLAGS.intra_op} (0 = default), "
              f"load average before {os.getloadavg()[0]:.2f}")
        report("TF1 Session.run", tf1_session_call(export_dir, FLAGS.signature), single, large)
        if not int64:
            seconds, _ = time_calls(harness_call(), single, warmup=200)
            print(f"(harness alone, an echo graph through the same callable, batch 1: "
                  f"{percentiles(seconds)})")
        if FLAGS.tf2:
            report("TF2 signature  ", tf2_signature_call(export_dir, FLAGS.signature), single,
                   large)
        print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    app.run(main)
