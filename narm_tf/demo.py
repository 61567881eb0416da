"""The quick start: the whole path on the embedded synthetic click log, in a few minutes.

    python -m narm_tf.demo [--workdir=runs/demo]

  1. write the synthetic raw YOOCHOOSE file     (narm_tf.synthetic)
  2. build the TFDS dataset from it              (tfds_builders/yoochoose, config yoochoose_full)
  3. train NARM, evaluate on test beside POP     (python -m narm_tf.train --flagfile=demo.cfg)
  4. export a SavedModel for TF Serving          (--export_base)
  5. query the export with raw item ids          (python -m narm_tf.predict)
Steps 3 and 5 run the documented commands in subprocesses, exactly as a user types them. The
output fits a screen (`NARM_VERBOSE=1`: TensorFlow's logs and the build's full statistics too).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time

from absl import app, flags

from narm_tf import cli

FLAGS = flags.FLAGS
cli.define_path("workdir", "runs/demo", "Where the demo writes data, dataset, model, export.")
flags.DEFINE_integer("epochs", 0, "Override the demo flagfile's epochs (0 = keep).")

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo.cfg")
DATASET = "yoochoose/yoochoose_full"
SHOWN_CLICKS = 8  # The queried session's length: its attention table stays readable.


def _step(number: int, title: str, started: float) -> None:
    print(f"\n=== [{number}/5] {title}  (elapsed {time.time() - started:.0f}s)", flush=True)


def _run(command: list[str]) -> None:
    """Runs a step's command; when it fails (it has said why in one line), the demo ends with
    its exit code (130 after Ctrl-C, silently: the command has said so)."""
    print("$ " + " ".join(command), flush=True)
    code = subprocess.run(command).returncode
    if code == cli.INTERRUPTED_EXIT_CODE:
        sys.exit(code)
    if code:
        raise cli.CommandError(f"`python -m {command[2]}` failed (exit code {code})")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from narm_tf import synthetic
    from narm_tf.training import run_dir

    started = time.time()
    workdir = os.path.abspath(FLAGS.workdir)
    manual_dir = os.path.join(workdir, "manual")
    data_dir = os.path.join(workdir, "tensorflow_datasets")
    model_dir = os.path.join(workdir, "model")
    export_base = os.path.join(workdir, "exports", "narm")

    _step(1, "synthetic raw click log", started)
    os.makedirs(manual_dir, exist_ok=True)
    path = synthetic.write_synthetic_clicks(os.path.join(manual_dir, "yoochoose-clicks.dat"))
    print(f"wrote {path}")

    _step(2, "TFDS build (yoochoose_full config)", started)
    _build(manual_dir, data_dir)

    _step(3, "train NARM, evaluate on the test split", started)
    train = [sys.executable, "-m", "narm_tf.train", f"--flagfile={CONFIG}",
             f"--data_dir={data_dir}", f"--model_dir={model_dir}",
             f"--export_base={export_base}", "--overwrite"]  # the demo reruns from scratch
    if FLAGS.epochs:
        train.append(f"--epochs={FLAGS.epochs}")
    _run(train)

    _step(4, "export for TF Serving", started)
    versions = sorted(int(v) for v in os.listdir(export_base) if v.isdigit())
    export_dir = os.path.join(export_base, str(versions[-1]))
    print(f"SavedModel (TF Serving layout): {export_dir}")

    _step(5, "query the export with raw item ids", started)
    session, target = _sample_session(data_dir)
    print(f"a test session's clicks (raw ids, oldest first): {','.join(session)}; its true "
          f"next click: {target}")
    _run([sys.executable, "-m", "narm_tf.predict", f"--export_dir={export_dir}",
          "--items=" + ",".join(session)])

    metrics = run_dir.read_json(model_dir, run_dir.METRICS)
    print(f"\nDone in {time.time() - started:.0f}s. Test: NARM {metrics['test']}, "
          f"POP {metrics['popularity_baseline']}")


def _build(manual_dir: str, data_dir: str) -> None:
    """Builds the dataset; quiet (without NARM_VERBOSE), one line of its statistics stands for
    TFDS's progress bars and the builder's table (printed whole if the build fails)."""
    from narm_tf.data import dataset as data

    if cli.verbose():
        data.build_dataset(DATASET, manual_dir=manual_dir, data_dir=data_dir)
        return
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            data.build_dataset(DATASET, manual_dir=manual_dir, data_dir=data_dir)
    except BaseException:
        sys.stdout.write(captured.getvalue())
        raise
    stats = data.Dataset(DATASET, data_dir).statistics
    print(f"built {DATASET} in {data_dir}: {stats['clicks']:,} clicks, "
          f"{stats['vocabulary_size']:,} items, {stats['train_sessions']:,} train and "
          f"{stats['test_sessions']:,} test sessions (NARM_VERBOSE=1 prints every statistic)")


def _sample_session(data_dir: str) -> tuple[list[str], str]:
    """The longest test prefix of at most SHOWN_CLICKS clicks, in raw ids, and its label's."""
    import numpy as np

    from narm_tf.data import dataset as data

    built = data.Dataset(DATASET, data_dir)
    test, vocabulary = built.split("test"), built.vocabulary
    row = int(np.where(test.lengths <= SHOWN_CLICKS, test.lengths, 0).argmax())
    items = [str(vocabulary[i - 1]) for i in test.prefixes[row] if i > 0]
    return items, str(vocabulary[test.labels[row] - 1])


def run() -> None:
    """The `narm-demo` command: parses the command line, then `main`."""
    cli.run(main)


if __name__ == "__main__":
    run()
