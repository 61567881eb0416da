"""What every session-prefix builder shares: the example schema, the splits, the build output.

A builder subclasses `SessionPrefixBuilder` and says only what differs: its description,
homepage, manual-download instructions and `_preprocess(dl_manager)` (raw clicks ->
`narm_tf.preprocessing.Preprocessed`). Training reads what this writes with `narm_tf.data`.

Each example: `prefix` (item indices 1..N, oldest first, at most max_len: 19), `label`, `length`
(prefix length before truncation) and `session_id`. The vocabulary (raw item id of every index)
and the statistics (SPEC section 1 table columns) live in the dataset's `metadata.json`, written
inside TFDS's incomplete dir, so they appear atomically with the splits.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from narm_tf import preprocessing
from narm_tf.preprocessing import Prefixes

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
    `tfds build` gets --beam_pipeline_options (`narm_tf.preprocessing_beam`)."""

    paths: list[str]
    log: preprocessing.ClickLog
    columns: tuple | None = None


def example_features() -> tfds.features.FeaturesDict:
    """The feature spec of one session-prefix example (shared by all builders)."""
    return tfds.features.FeaturesDict({
        "prefix": tfds.features.Sequence(np.int64),
        "label": np.int64,
        "length": np.int64,
        "session_id": np.int64,
    })


def generate_examples(prefixes: Prefixes) -> Iterator[tuple[int, dict]]:
    """Yields (key, example) in the split's order; keys are positions (shuffling is disabled)."""
    rows = prefixes.prefixes.astype(np.int64)
    kept = np.minimum(prefixes.lengths, prefixes.prefixes.shape[1])  # the rules' max_len
    labels, lengths, session_ids = (prefixes.labels.tolist(), prefixes.lengths.tolist(),
                                    prefixes.session_ids.tolist())
    for i, (row, n) in enumerate(zip(rows, kept.tolist(), strict=True)):
        yield i, {"prefix": row[:n], "label": labels[i], "length": lengths[i],
                  "session_id": session_ids[i]}


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


class SessionPrefixBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Raw clicks in the manual dir -> train/validation/test session-prefix splits."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: SPEC section 1 preprocessing.",
        "2.0.0": "Validation holds out 10% of the training sessions (all their prefixes), not "
                 "10% of the prefixes: 1.0.0 put prefixes of one session in both train and "
                 "validation, so early stopping saw near-copies of training examples. Same "
                 "example format; train and validation differ, test is unchanged. Statistics "
                 "add validation_sessions, kept_train_sessions and duplicate_clicks.",
    }
    DESCRIPTION = ""
    HOMEPAGE = ""
    _on_beam = False  # set per build by _generate_splits

    @abc.abstractmethod
    def _preprocess(self, dl_manager: tfds.download.DownloadManager
                    ) -> preprocessing.Preprocessed | RawLog:
        """The builder's raw files (read through `dl_manager.manual_dir`) -> splits, or the
        files as a `RawLog` (preprocessed in memory, or on Beam if the build asks for it)."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            homepage=self.HOMEPAGE,
            citation=CITATION,
            features=example_features(),
            supervised_keys=("prefix", "label"),
            metadata=tfds.core.MetadataDict(),  # vocabulary + statistics, see _split_generators
            disable_shuffling=True,  # Keep the date order of the prefixes.
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        """Preprocesses; stores vocabulary + statistics in `info.metadata`; one split each."""
        result = self._preprocess(dl_manager)
        if isinstance(result, RawLog) and self._on_beam:
            return self._beam_splits(result)
        if isinstance(result, RawLog):
            result = preprocessing.preprocess_log(result.paths, result.log, result.columns)
        self.info.metadata["vocabulary"] = result.vocabulary.tolist()  # ints or the log's strings
        self.info.metadata["statistics"] = dict(result.statistics)
        return {split: self._generate_examples(getattr(result, split)) for split in SPLITS}

    def _generate_splits(self, dl_manager, download_config):
        """Notes whether the build runs on Beam (--beam_pipeline_options or a runner)."""
        self._on_beam = bool(download_config.beam_options or download_config.beam_runner)
        return super()._generate_splits(dl_manager, download_config)

    def _beam_splits(self, raw: RawLog) -> dict:
        """One Beam graph for all splits; vocabulary and statistics computed in it."""
        import apache_beam as beam  # only when building on Beam

        from narm_tf import preprocessing_beam

        shared = {}

        def split_of(pbegin, split):
            if not shared:  # the first split builds the graph, metadata included
                shared.update(pbegin | preprocessing_beam.Preprocess(raw.paths, raw.log,
                                                                     raw.columns))
                self.info._metadata = tfds.core.BeamMetadataDict()  # filled by the pipeline
                for key in ("vocabulary", "statistics"):
                    self.info.metadata[key] = shared[key]
            return shared[split]

        return {split: beam.ptransform_fn(split_of)(split) for split in SPLITS}

    def _generate_examples(self, prefixes: Prefixes):
        """One split's examples, in date order (keys are positions)."""
        return generate_examples(prefixes)

    def download_and_prepare(self, *args, **kwargs):
        """Builds (if needed) then prints the statistics and the duplicate clicks kept."""
        super().download_and_prepare(*args, **kwargs)
        statistics = self.info.metadata["statistics"]
        name = self.name if self.builder_config is None else \
            f"{self.name}/{self.builder_config.name}"
        print(format_statistics(name, statistics))
        print(preprocessing.duplicates_note(statistics))
