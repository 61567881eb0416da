"""Trains NARM with `model.fit` under MirroredStrategy and reports test Recall@20 / MRR@20.

    python -m narm_tf.train --flagfile=narm_tf/configs/yoochoose1_64.cfg --data_dir=DIR
    narm-train --flagfile=...          (the same command, installed by pip)

The command only: its flags are the settings of `narm_tf.config` (each default, check and help
defined there, once; flagfiles in `narm_tf/configs/` only override, and every flag is checked
before any work), and the training is `narm_tf.training.trainer.train` (strategy, fit,
callbacks, refit, report; under TF_CONFIG, multi-worker). The run folder (`--model_dir`) has one
owner and an identity a rerun must match to resume a killed run (`--overwrite` starts afresh).
A loss or validation score that turns NaN or infinite stops the run with exit code 3, before
anything is saved from it.
"""

from __future__ import annotations

import sys

from absl import app, flags

from narm_tf import cli  # first: it quiets TensorFlow before anything imports it
from narm_tf import config as config_lib
from narm_tf.training import trainer

FLAGS = flags.FLAGS
DIVERGED_EXIT_CODE = 3


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command's flags: every setting of `narm_tf.config`."""
    config_lib.define_flags(flag_values)


def main(argv: list[str] | None = None) -> None:
    """The command. With no `argv` (a console script's call), parses the command line
    (`run`); absl calls it back with what is left of it."""
    if argv is None:
        run()
        return
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    trainer.configure_devices(FLAGS.num_cpu_devices)
    try:
        trainer.train(config_lib.from_flags(FLAGS))
    except trainer.Diverged as error:
        print(f"narm_tf.train: {error}", file=sys.stderr, flush=True)
        sys.exit(DIVERGED_EXIT_CODE)


def resume_hint() -> str:
    """What to do after Ctrl-C: the same command resumes the run (less --overwrite, which
    would start it afresh)."""
    return ("rerun the same command" + (" without --overwrite" if FLAGS.overwrite else "")
            + " to resume from the last finished epoch")


def run() -> None:
    """The `narm-train` command: parses the command line, then `main`."""
    define_flags()
    cli.run(main, resume_hint)


if __name__ == "__main__":
    run()
