"""Examples/s of narm_tf.data.dataset.Dataset: `split` (TFRecords -> numpy) and `batches` in
memory (-> batches), and `batches` streamed (TFRecords -> batches, bounded shuffle).

By default builds the synthetic `yoochoose_full` in a temp dir; `--data_dir` + `--name` measure
an existing build instead. Target: both paths >= 100,000 examples/s.

  python benchmarks/input_pipeline_speed.py
  python benchmarks/input_pipeline_speed.py --data_dir=~/tensorflow_datasets --name=diginetica
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from narm_tf import synthetic
from narm_tf.data import dataset as data  # noqa: E402

flags.DEFINE_string("data_dir", "", "TFDS data dir of an existing build (default: build one).")
flags.DEFINE_string("name", "yoochoose/yoochoose_full", "Dataset to read.")
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_integer("batch_size", 512, "Batch size (the paper's).")
flags.DEFINE_integer("epochs", 5, "Shuffled epochs to time.")
flags.DEFINE_integer("shuffle_buffer", data.SHUFFLE_BUFFER, "Streamed shuffle block size.")
FLAGS = flags.FLAGS


def measure(data_dir: str) -> None:
    memory = data.Dataset(FLAGS.name, data_dir, input="memory")
    start = time.perf_counter()
    prefixes = memory.split(FLAGS.split)
    load_seconds = time.perf_counter() - start
    print(f"split {FLAGS.name}:{FLAGS.split}: {len(prefixes):,} examples in "
          f"{load_seconds:.2f} s ({len(prefixes) / load_seconds:,.0f} examples/s)")
    steps = FLAGS.epochs * -(-len(prefixes) // FLAGS.batch_size)
    time_batches("batches in memory", steps,
                 memory.batches(FLAGS.split, FLAGS.batch_size, shuffle=True, repeat=True))
    stream = data.Dataset(FLAGS.name, data_dir, input="stream")
    time_batches("batches streamed", steps, stream.batches(
        FLAGS.split, FLAGS.batch_size, shuffle=True, repeat=True,
        shuffle_buffer=FLAGS.shuffle_buffer))


def time_batches(what: str, steps: int, dataset) -> None:
    """Prints the examples/s of `steps` batches of `dataset` after one warm-up batch."""
    iterator = iter(dataset)
    next(iterator)  # warm-up: tracing and the first prefetch
    start = time.perf_counter()
    examples = sum(int(next(iterator)[1].shape[0]) for _ in range(steps))
    seconds = time.perf_counter() - start
    print(f"{what} batch {FLAGS.batch_size}, shuffled: {examples:,} examples in "
          f"{seconds:.2f} s = {examples / seconds:,.0f} examples/s (target >= 100,000)")


def main(argv) -> None:
    del argv
    if FLAGS.data_dir:
        measure(os.path.expanduser(FLAGS.data_dir))
        return
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_synthetic_clicks(tmp)
        name, config = FLAGS.name.split("/") if "/" in FLAGS.name else (FLAGS.name, None)
        start = time.perf_counter()
        data.build_dataset(name, tmp, os.path.join(tmp, "tfds"), config)
        print(f"built {FLAGS.name} from the synthetic log in {time.perf_counter() - start:.1f} s")
        measure(os.path.join(tmp, "tfds"))


if __name__ == "__main__":
    app.run(main)
