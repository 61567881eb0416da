"""What every session-prefix builder shares: the example schema, the splits, the build output.

A builder subclasses `SessionPrefixBuilder` and says only what differs: its description,
homepage, manual-download instructions, `_log()` (its `narm_tf.data.clicks.ClickLog`: which
raw files in the manual dir, how to read them, which rules) and, for files with a documented
header, `COLUMNS`. Training reads what this writes with `narm_tf.data.dataset`.

Each example follows `narm_tf.data.examples.SCHEMA`: `prefix` (item indices 1..N, oldest
first, at most max_len: 19), `label`, `length` (prefix length before truncation) and
`session_id`. The vocabulary (raw item id of every index) and the statistics
(`narm_tf.data.rules.statistics`) live in the dataset's `metadata.json`, written
inside TFDS's incomplete dir, so they appear atomically with the splits, with the build's
record: its resolved config (`narm_tf.data.clicks.ClickLog`'s fields) and its raw files
(name, size, modification time). Building again under the same name compares that record with
the current config and files and stops, naming what differs, rather than reuse stale data.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import sys
import traceback
from collections.abc import Iterator

import tensorflow_datasets as tfds

from narm_tf.data import clicks, examples, rules
from narm_tf.data.examples import Prefixes

CITATION = """
@inproceedings{li2017narm,
  title={Neural Attentive Session-based Recommendation},
  author={Li, Jing and Ren, Pengjie and Chen, Zhumin and Ren, Zhaochun and Lian, Tao and Ma, Jun},
  booktitle={CIKM}, year={2017}}
"""
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class RawLog:
    """A builder's raw files and how to read them: preprocessed in memory, or on Beam when
    `tfds build` gets --beam_pipeline_options (`narm_tf.data.beam`)."""

    paths: list[str]
    log: clicks.ClickLog
    columns: tuple | None = None


def generate_examples(prefixes: Prefixes) -> Iterator[tuple[int, dict]]:
    """Yields (key, example) in the split's order; keys are positions (shuffling is disabled)."""
    return enumerate(examples.as_examples(prefixes))


def manual_files(dl_manager: tfds.download.DownloadManager, pattern: str,
                 instructions: str) -> list[pathlib.Path]:
    """The files matching `pattern` (a glob) in the manual dir, sorted, or FileNotFoundError
    naming the exact expected path and what the folder holds."""
    try:
        manual_dir = pathlib.Path(dl_manager.manual_dir)
    except AssertionError as error:  # TFDS: no --manual_dir, or a missing or empty folder.
        raise FileNotFoundError(
            f"Raw click file {pattern} not found: {error}\n"
            f"(set --manual_dir to the folder holding {pattern}).") from error
    paths = sorted(path for path in manual_dir.glob(pattern) if path.is_file())
    if not paths:
        present = ", ".join(sorted(path.name for path in manual_dir.iterdir())[:20])
        raise FileNotFoundError(
            f"Raw click file not found: expected {manual_dir / pattern} "
            f"(set --manual_dir to the folder holding {pattern}; it holds: {present}).\n"
            f"{instructions}")
    return paths


def format_statistics(name: str, statistics: dict) -> str:
    """A readable table of the dataset statistics (printed at the end of a build)."""
    lines = [f"Statistics of {name}:"]
    lines += [f"  {key:<20} {value:,}" if isinstance(value, int) else
              f"  {key:<20} {value:.4f}" if isinstance(value, float) else
              f"  {key:<20} {value}" for key, value in statistics.items()]
    return "\n".join(lines)


def expand_path(path: os.PathLike | str | None) -> str | None:
    """`~` and environment variables expanded: `tfds build --data_dir=~/x` gets no shell
    expansion after `=` (None stays None, TFDS's default)."""
    return None if path is None else os.path.expanduser(os.path.expandvars(os.fspath(path)))


class StaleDatasetError(ValueError):
    """The dataset under this name was built with other rules or raw files than this build's."""


def raw_files(manual_dir: pathlib.Path, pattern: str) -> dict[str, dict]:
    """Every file the config's glob matches in the manual dir (name relative to it) -> its size
    and modification time (UTC): what tells a rebuild whether the raw files changed."""
    if not manual_dir.is_dir():
        return {}
    files = {}
    for path in sorted(manual_dir.glob(pattern)):
        if path.is_file():
            stat = path.stat()
            modified = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.UTC)
            files[path.relative_to(manual_dir).as_posix()] = {
                "bytes": stat.st_size, "modified": modified.isoformat(timespec="microseconds")}
    return files


_ABSENT = object()  # a key or file one record has and the other has not


def record_differences(stored: dict, current: dict) -> list[str]:
    """`key: old -> new` for every config key and raw file (`name: old -> new`) that differs
    between a dataset's stored record and this build's; [] when they agree."""
    changes = []
    for part, show in (("config", _describe_value), ("raw_files", _describe_file)):
        old, new = stored.get(part, {}), current[part]
        for key in sorted(set(old) | set(new), key=lambda k: (k not in new, k)):
            if old.get(key, _ABSENT) != new.get(key, _ABSENT):
                changes.append(f"{key}: {show(old.get(key, _ABSENT))} -> "
                               f"{show(new.get(key, _ABSENT))}")
    return changes


def _describe_value(value) -> str:
    return "absent" if value is _ABSENT else repr(value)


def _describe_file(record) -> str:
    if record is _ABSENT:
        return "absent"
    return f"{record['bytes']:,} bytes modified {record['modified']}"


def _stale_message(name: str, folder: str, changes: list[str]) -> str:
    shown = "; ".join(changes[:10]) + (f"; and {len(changes) - 10} more"
                                       if len(changes) > 10 else "")
    return (f"{name} in {folder} was built with other rules or raw files than this build's: "
            f"{shown}. Pick another config name, or delete {folder} (tfds build --overwrite "
            f"does) to rebuild it.")


# ------------------------------------------- `tfds build`: our errors as one line, not a traceback


def _under_tfds_build() -> bool:
    """True inside the `tfds build` command (it imported the builder)."""
    return "tensorflow_datasets.scripts.cli.build" in sys.modules


OUR_PACKAGES = tuple(str(pathlib.Path(module).resolve().parent) + os.sep
                     for module in (__file__, rules.__file__))


def _raised_by_us(error: BaseException, trace) -> bool:
    """A bad input or config we reported (ValueError, FileNotFoundError) from our own code."""
    frames = traceback.extract_tb(trace)
    return isinstance(error, ValueError | FileNotFoundError) and bool(frames) \
        and os.path.realpath(frames[-1].filename).startswith(OUR_PACKAGES)


def _bad_json_config(error: BaseException, trace) -> bool:
    """TFDS's `json.loads` of `--config='{...}'` failed."""
    return isinstance(error, json.JSONDecodeError) and any(
        frame.name == "_get_config_name" for frame in traceback.extract_tb(trace))


def one_line_errors(kind, error, trace, fallback=sys.__excepthook__) -> None:
    """`sys.excepthook` under `tfds build`: the message of our own errors (bad click log, bad
    config, stale dataset) ends the command on stderr (exit code 1); others keep the traceback."""
    if _raised_by_us(error, trace):
        print(f"tfds build: {error}", file=sys.stderr, flush=True)
    elif _bad_json_config(error, trace):
        print(f"tfds build: --config is not valid JSON: {error}", file=sys.stderr, flush=True)
    else:
        fallback(kind, error, trace)


if _under_tfds_build() and not isinstance(sys.excepthook, functools.partial):
    sys.excepthook = functools.partial(one_line_errors, fallback=sys.excepthook)


class SessionPrefixBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Raw clicks in the manual dir -> train/validation/test session-prefix splits."""

    VERSION = tfds.core.Version("2.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: the paper's preprocessing (docs/data.md).",
        "2.0.0": "Validation holds out 10% of the training sessions (all their prefixes), not "
                 "10% of the prefixes: 1.0.0 put prefixes of one session in both train and "
                 "validation, so early stopping saw near-copies of training examples. Same "
                 "example format; train and validation differ, test is unchanged. Statistics "
                 "add validation_sessions, kept_train_sessions and duplicate_clicks.",
        "2.1.0": "Configs may hold out the newest training sessions for validation "
                 "(\"validation\": \"time\", the slice nearest the test period) instead of a "
                 "random draw (\"sessions\", the default: the same examples as 2.0.0). Ids "
                 "may be strings (\"id_type\"): the vocabulary then holds the log's own "
                 "strings. Statistics add first_click and last_click (the dates read); a build "
                 "records its config and raw files.",
    }
    DESCRIPTION = ""
    HOMEPAGE = ""
    COLUMNS: tuple | None = None  # the raw files' documented header (or field count), if fixed
    _on_beam = False  # set per build by _generate_splits
    _record: dict  # this build's config and raw files, set by _split_generators

    def __init__(self, *, data_dir=None, **kwargs):
        """TFDS's builder, with `~` and `$VARS` in `data_dir` expanded (see `expand_path`)."""
        super().__init__(data_dir=expand_path(data_dir), **kwargs)

    @abc.abstractmethod
    def _log(self) -> clicks.ClickLog:
        """How this build reads its raw files (`files`: a glob in the manual dir) and its rules."""

    def _preprocess(self, dl_manager: tfds.download.DownloadManager
                    ) -> rules.Preprocessed | RawLog:
        """The config's files in the manual dir as a `RawLog` (preprocessed in memory, or on
        Beam if the build asks for it)."""
        log = self._log()
        paths = manual_files(dl_manager, log.files, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return RawLog([str(path) for path in paths], log, self.COLUMNS)

    def _current_record(self, manual_dir: pathlib.Path) -> dict:
        """This build's resolved config and the raw files it reads (see `raw_files`)."""
        log = self._log()
        return {"config": dataclasses.asdict(log), "raw_files": raw_files(manual_dir, log.files)}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            homepage=self.HOMEPAGE,
            citation=CITATION,
            features=examples.tfds_features(),
            supervised_keys=examples.SUPERVISED_KEYS,
            metadata=tfds.core.MetadataDict(),  # vocabulary + statistics, see _split_generators
            disable_shuffling=True,  # Keep the date order of the prefixes.
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        """Preprocesses; stores vocabulary, statistics and the build's record (config, raw
        files) in `info.metadata`; one split each."""
        result = self._preprocess(dl_manager)
        self._record = self._current_record(pathlib.Path(dl_manager.manual_dir))
        if isinstance(result, RawLog) and self._on_beam:
            return self._beam_splits(result)
        if isinstance(result, RawLog):
            result = rules.preprocess_log(result.paths, result.log, result.columns)
        self.info.metadata["vocabulary"] = result.vocabulary.tolist()  # ints or the log's strings
        self.info.metadata["statistics"] = dict(result.statistics)
        self.info.metadata.update(self._record)
        return {split: self._generate_examples(getattr(result, split)) for split in SPLITS}

    def _generate_splits(self, dl_manager, download_config):
        """Notes whether the build runs on Beam (--beam_pipeline_options or a runner)."""
        self._on_beam = bool(download_config.beam_options or download_config.beam_runner)
        return super()._generate_splits(dl_manager, download_config)

    def _beam_splits(self, raw: RawLog) -> dict:
        """One Beam graph for all splits; vocabulary and statistics computed in it."""
        import apache_beam as beam  # only when building on Beam

        from narm_tf.data import beam as beam_path

        shared = {}

        def split_of(pbegin, split):
            if not shared:  # the first split builds the graph, metadata included
                shared.update(pbegin | beam_path.Preprocess(raw.paths, raw.log, raw.columns))
                self.info._metadata = tfds.core.BeamMetadataDict()  # filled by the pipeline
                for key in ("vocabulary", "statistics"):
                    self.info.metadata[key] = shared[key]
                self.info.metadata.update(self._record)
            return shared[split]

        return {split: beam.ptransform_fn(split_of)(split) for split in SPLITS}

    def _generate_examples(self, prefixes: Prefixes):
        """One split's examples, in date order (keys are positions)."""
        return generate_examples(prefixes)

    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
        """Builds (if needed) then prints the statistics and the duplicate clicks kept. An
        existing dataset is reused only if built with this config and these raw files (the
        manual dir as TFDS resolves it, `~` and `$VARS` expanded)."""
        download_dir = expand_path(download_dir)
        download_config = copy.copy(download_config or tfds.download.DownloadConfig())
        download_config.manual_dir = expand_path(download_config.manual_dir)
        mode = download_config.download_mode
        if self.data_path.exists() and not mode.overwrite_dataset \
                and mode != tfds.download.GenerateMode.UPDATE_DATASET_INFO:
            downloads = pathlib.Path(download_dir or self.data_dir_root / "downloads")
            self._check_reuse(pathlib.Path(download_config.manual_dir or downloads / "manual"))
        super().download_and_prepare(download_dir=download_dir,
                                     download_config=download_config, **kwargs)
        statistics = self.info.metadata["statistics"]
        print(format_statistics(self._full_name(), statistics))
        print(rules.duplicates_note(statistics))

    def _full_name(self) -> str:
        return self.name if self.builder_config is None else \
            f"{self.name}/{self.builder_config.name}"

    def _check_reuse(self, manual_dir: pathlib.Path) -> None:
        """Raises StaleDatasetError if the built dataset's record differs from this build's.
        Without raw files in the manual dir only the config is compared (nothing to rebuild
        from); a dataset built before records were kept is reused with a warning."""
        stored = self.info.metadata
        folder = str(self.data_path)
        if "config" not in stored:
            print(f"Warning: {self._full_name()} in {folder} was built before builds recorded "
                  f"their config and raw files, so they cannot be compared: reusing it as is. "
                  f"Delete {folder} to rebuild it with a record.", file=sys.stderr, flush=True)
            return
        current = self._current_record(manual_dir)
        if not current["raw_files"]:
            current["raw_files"] = stored.get("raw_files", {})
        changes = record_differences(stored, current)
        if changes:
            raise StaleDatasetError(_stale_message(self._full_name(), folder, changes))
