"""YOOCHOOSE clicks -> NARM session-prefix examples (SPEC section 1), configs 1/64, 1/4, full.

Build: `tfds build tfds_builders/yoochoose --config=yoochoose1_64 --manual_dir=DIR --data_dir=OUT`
with DIR holding `yoochoose-clicks.dat`. Vocabulary and statistics: `narm_tf.data`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import textwrap

import tensorflow_datasets as tfds

try:
    from narm_tf import data, preprocessing
except ImportError:  # `tfds build tfds_builders/yoochoose` from an uninstalled clone.
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))
    from narm_tf import data, preprocessing

CLICKS_FILE = "yoochoose-clicks.dat"

_DESCRIPTION = """
YOOCHOOSE click sessions of the RecSys Challenge 2015, preprocessed as in NARM (Li et al.,
CIKM 2017): sessions of length >= 2, items seen >= 5 times, the last day as test, every
session prefix ([x1..x_{i-1}], x_i) an example, prefixes truncated to their last 19 clicks,
10% of the training sessions held out (seeded; all prefixes of a held-out session, drawn among
the sessions of the prefixes a fraction keeps) as validation. Exact duplicate clicks are kept
(counted in the statistics). The vocabulary (raw item id of every index) and statistics are in
the dataset metadata (see narm_tf.data).
"""

_CITATION = """
@inproceedings{li2017narm,
  title={Neural Attentive Session-based Recommendation},
  author={Li, Jing and Ren, Pengjie and Chen, Zhumin and Ren, Zhaochun and Lian, Tao and Ma, Jun},
  booktitle={CIKM}, year={2017}}
"""


@dataclasses.dataclass(eq=False)
class YoochooseConfig(tfds.core.BuilderConfig):
    """A YOOCHOOSE variant: keep the most recent 1/fraction of training prefixes."""

    fraction: int = 64


class Builder(tfds.core.GeneratorBasedBuilder):
    """YOOCHOOSE session prefixes; `yoochoose1_64` is the paper's main setting."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: SPEC section 1 preprocessing.",
        "2.0.0": "Validation holds out 10% of the training sessions (all their prefixes), not "
                 "10% of the prefixes: 1.0.0 put prefixes of one session in both train and "
                 "validation, so early stopping saw near-copies of training examples. Same "
                 "example format; train and validation differ, test is unchanged. Statistics "
                 "add validation_sessions, kept_train_sessions and duplicate_clicks.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = textwrap.dedent(f"""\
    Download `yoochoose-data.7z` of the RecSys Challenge 2015 (YOOCHOOSE) and extract
    `{CLICKS_FILE}` (33,003,944 rows `SessionId,Timestamp,ItemId,Category`, no header) into
    the manual dir: `<manual_dir>/{CLICKS_FILE}`.
    """)
    BUILDER_CONFIGS = [
        YoochooseConfig(name="yoochoose1_64", fraction=64,
                        description="Most recent 1/64 of the training prefixes (paper default)."),
        YoochooseConfig(name="yoochoose1_4", fraction=4,
                        description="Most recent 1/4 of the training prefixes."),
        YoochooseConfig(name="yoochoose_full", fraction=1,
                        description="All training prefixes."),
    ]
    DEFAULT_CONFIG_NAME = "yoochoose1_64"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            homepage="https://recsys.acm.org/recsys15/challenge/",
            citation=_CITATION,
            **data.info_arguments(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        path = data.manual_file(dl_manager, CLICKS_FILE, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        clicks = preprocessing.read_yoochoose_clicks(str(path))
        result = preprocessing.preprocess(
            clicks, test_days=preprocessing.YOOCHOOSE_TEST_DAYS, date_unit_seconds=1,
            fraction=self.builder_config.fraction, seed=0, source=str(path))
        del clicks
        return data.split_generators(result, self.info, self._generate_examples)

    def _generate_examples(self, prefixes: preprocessing.Prefixes):
        """One split's examples, in date order (keys are positions)."""
        return data.generate_examples(prefixes)

    def download_and_prepare(self, *args, **kwargs):
        """Builds (if needed) then prints the statistics and the duplicate clicks kept."""
        super().download_and_prepare(*args, **kwargs)
        statistics = self.info.metadata["statistics"]
        print(data.format_statistics(f"{self.name}/{self.builder_config.name}", statistics))
        print(preprocessing.duplicates_note(statistics))
