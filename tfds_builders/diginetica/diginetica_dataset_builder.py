"""DIGINETICA item views -> NARM session-prefix examples (SPEC section 1).

Build: `tfds build tfds_builders/diginetica --manual_dir=DIR --data_dir=OUT` with DIR holding
`train-item-views.csv`. Vocabulary and statistics: `narm_tf.data`.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap

import tensorflow_datasets as tfds

try:
    from narm_tf import data, preprocessing
except ImportError:  # `tfds build tfds_builders/diginetica` from an uninstalled clone.
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))
    from narm_tf import data, preprocessing

VIEWS_FILE = "train-item-views.csv"

_DESCRIPTION = """
DIGINETICA item-view sessions of the CIKM Cup 2016, preprocessed as in NARM (Li et al.,
CIKM 2017): clicks ordered by `timeframe`, sessions of length >= 2, items seen >= 5 times,
the last 7 days as test, every session prefix an example, prefixes truncated to their last 19
clicks, 10% of the training sessions held out (seeded; all prefixes of a held-out session) as
validation. Exact duplicate clicks are kept (counted in the statistics). The vocabulary (raw item
id of every index) and statistics are in the dataset metadata (see narm_tf.data).
"""

_CITATION = """
@inproceedings{li2017narm,
  title={Neural Attentive Session-based Recommendation},
  author={Li, Jing and Ren, Pengjie and Chen, Zhumin and Ren, Zhaochun and Lian, Tao and Ma, Jun},
  booktitle={CIKM}, year={2017}}
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """DIGINETICA session prefixes."""

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
    Download the CIKM Cup 2016 Track 2 (DIGINETICA) data and extract `{VIEWS_FILE}`
    (`session_id;user_id;item_id;timeframe;eventdate`, with header) into the manual dir:
    `<manual_dir>/{VIEWS_FILE}`.
    """)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            homepage="https://competitions.codalab.org/competitions/11161",
            citation=_CITATION,
            **data.info_arguments(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        path = data.manual_file(dl_manager, VIEWS_FILE, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        clicks = preprocessing.read_diginetica_views(str(path))
        result = preprocessing.preprocess(
            clicks, test_days=preprocessing.DIGINETICA_TEST_DAYS,
            date_unit_seconds=preprocessing.SECONDS_PER_DAY, seed=0, source=str(path))
        return data.split_generators(result, self.info, self._generate_examples)

    def _generate_examples(self, prefixes: preprocessing.Prefixes):
        """One split's examples, in date order (keys are positions)."""
        return data.generate_examples(prefixes)

    def download_and_prepare(self, *args, **kwargs):
        """Builds (if needed) then prints the statistics and the duplicate clicks kept."""
        super().download_and_prepare(*args, **kwargs)
        statistics = self.info.metadata["statistics"]
        print(data.format_statistics(self.name, statistics))
        print(preprocessing.duplicates_note(statistics))
