"""What the project's commands share: quiet logs, paths as a shell user writes them, and one-line
endings instead of tracebacks.

Each command module imports this module first (before anything that imports TensorFlow), defines
its path flags with `define_path`, and runs with `run(main)` instead of `absl.app.run(main)`:

- Quiet by default. A command prints its own progress and results; TensorFlow's C++ log lines
  (`TF_CPP_MIN_LOG_LEVEL=3` unless the environment sets it; the CUDA probe lines TensorFlow
  writes while it is imported) and absl's INFO lines are left out. `NARM_VERBOSE=1` in the
  environment brings them back, and tracebacks with them.
- Quick to start: Keras' optional integrations (scikit-learn, matplotlib, IPython, when
  installed) are kept out of TensorFlow's import, about 2 s of CPU a command.
- Path flags expand `~` and `$VARIABLES` (`--data_dir=~/tensorflow_datasets`: the shell leaves
  a `~` after `=` as it is).
- An error of our own checks (a bad flag value, a missing file, a run folder that does not fit)
  ends the command with one line, `<command>: <what is wrong>`, and exit code 2 (or the error's
  `exit_code`); Ctrl-C ends it with one line (how to resume, where a rerun does) and exit code
  130. Errors raised elsewhere (a bug, TensorFlow) keep their traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import sys
import tempfile
import threading

from absl import app, flags
from absl import logging as absl_logging

COMMANDS = ("narm_tf.train", "narm_tf.evaluate", "narm_tf.predict", "narm_tf.tune",
            "narm_tf.demo", "narm_tf.experiments", "narm_tf.export", "export.export_saved_model",
            "export.client")
# The console scripts `pip install` puts on the PATH (setup.py): script -> its command module.
CONSOLE_SCRIPTS = {"narm-train": "narm_tf.train", "narm-evaluate": "narm_tf.evaluate",
                   "narm-export": "narm_tf.export", "narm-predict": "narm_tf.predict",
                   "narm-tune": "narm_tf.tune", "narm-demo": "narm_tf.demo",
                   "narm-experiments": "narm_tf.experiments"}
VERBOSE_ENV = "NARM_VERBOSE"
QUIET_TF_LOG_LEVEL = "3"  # FATAL only: hides the `E0000 ... failed call to cuInit` of CPU hosts.
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended.
ERROR_EXIT_CODE = 2
# Folders of our own code: an error raised there is one of our checks.
OUR_CODE = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name)
                 + os.sep for name in ("narm_tf", "export", "tfds_builders"))
# Packages Keras imports with TensorFlow when they are installed, for integrations no command
# uses (scikit-learn wrappers, image plots, notebook display): about 2 s of every command's
# start on a machine that has them.
KERAS_EXTRAS = ("sklearn", "matplotlib", "IPython")
# What TensorFlow writes to stderr while it is imported, before its log level applies.
_IMPORT_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                           r"|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
                           r"|To enable the following instructions:")


class CommandError(Exception):
    """A failure the user can act on from its message alone (one line, no traceback)."""

    exit_code = 1


def verbose() -> bool:
    """Whether `NARM_VERBOSE` asks for TensorFlow's and absl's logs and for tracebacks."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def command_name() -> str | None:
    """The project command this process runs (`python -m narm_tf.train`: narm_tf.train; the
    console script `narm-train`: narm-train), or None (a library use)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if name in COMMANDS:
        return name
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    return script if script in CONSOLE_SCRIPTS else None


def expand(path: str | None) -> str | None:
    """`~` and `$VARIABLES` expanded, as a shell would have done before `=`."""
    return None if path is None else os.path.expanduser(os.path.expandvars(path))


class _PathParser(flags.ArgumentParser):
    """A string flag whose value (default, command line, flagfile) is `expand`ed."""

    syntactic_help = "a path (~ and $VARIABLES are expanded)"

    def parse(self, argument):
        return expand(str(argument))

    def flag_type(self):
        return "string"


def define_path(name: str, default: str | None, help_: str,
                flag_values: flags.FlagValues = flags.FLAGS, **args) -> None:
    """DEFINE_string for a path: `~` and `$VARIABLES` are expanded wherever the value comes
    from."""
    flags.DEFINE(_PathParser(), name, default, help_, flag_values, flags.ArgumentSerializer(),
                 **args)


def _import_quietly(module: str = "tensorflow", hidden: tuple[str, ...] = KERAS_EXTRAS) -> None:
    """Imports `module` (TensorFlow) with stderr (file descriptor 2) captured, then writes back
    every captured line but the CUDA probe and CPU-feature lines it logs before its level
    applies. The `hidden` packages (Keras' optional integrations, unused by the commands)
    cannot be imported meanwhile, and can be again afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    hidden = [name for name in hidden if name not in sys.modules]
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            sys.modules.update(dict.fromkeys(hidden))  # `import name` raises ImportError
            importlib.import_module(module)
        finally:
            for name in hidden:
                sys.modules.pop(name, None)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _IMPORT_NOISE.match(line)))
            sys.stderr.flush()


def _quiet_when_a_command() -> None:
    """In a project command without NARM_VERBOSE: TensorFlow's C++ logs down to FATAL (a
    user's own TF_CPP_MIN_LOG_LEVEL wins), TensorFlow imported without its probe lines, and
    Ctrl-C while modules load ends with one line."""
    if command_name() is None:
        return
    sys.excepthook = _one_line_interrupt_hook(sys.excepthook)
    if verbose() or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)
    _import_quietly()


def _one_line_interrupt_hook(previous):
    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            _say(f"{command_name()}: interrupted")
            os._exit(INTERRUPTED_EXIT_CODE)  # Python would end by the signal instead
        previous(kind, value, traceback)

    return hook


@contextlib.contextmanager
def interrupts_deferred():
    """A Ctrl-C inside the block takes effect (KeyboardInterrupt) once the block is done, so
    the files it writes stay whole (only in the main thread, where Python handles signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _say(line: str) -> None:
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)


def raised_by_our_checks(error: BaseException) -> bool:
    """Whether `error` is a bad-input error our code raised: a CommandError, or a ValueError,
    OSError or error class of ours raised in a frame of our code."""
    if isinstance(error, CommandError):
        return True
    ours = type(error).__module__.split(".")[0] in ("narm_tf", "export", "tfds_builders")
    if not (ours or isinstance(error, (ValueError, OSError))):
        return False
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_filename.startswith(OUR_CODE)


def run(main, resume_hint=None) -> None:
    """`absl.app.run(main)`, quiet unless NARM_VERBOSE (absl INFO lines and TFDS progress bars
    off; `--verbosity` on the command line wins), ending in one line on an error of our checks
    (exit 2 or its `exit_code`) or on Ctrl-C (exit 130, then `resume_hint()` if given, e.g.
    "rerun the same command to resume")."""
    name = command_name() or os.path.basename(sys.argv[0])

    def wrapped(argv):
        if not verbose():
            if not flags.FLAGS["verbosity"].present:
                absl_logging.set_verbosity(absl_logging.WARNING)
            if "tensorflow_datasets" in sys.modules:
                sys.modules["tensorflow_datasets"].disable_progress_bar()
        try:
            return main(argv)
        except KeyboardInterrupt:
            hint = resume_hint() if resume_hint else ""
            _say(f"{name}: interrupted" + (f"; {hint}" if hint else ""))
            sys.exit(INTERRUPTED_EXIT_CODE)
        except Exception as error:
            if verbose() or not raised_by_our_checks(error):
                raise
            _say(f"{name}: {error}")
            sys.exit(getattr(error, "exit_code", ERROR_EXIT_CODE))

    app.run(wrapped)


_quiet_when_a_command()
