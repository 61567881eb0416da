"""YOOCHOOSE clicks -> NARM session-prefix examples (docs/data.md), configs 1/64, 1/4, full.

Build: `tfds build tfds_builders/yoochoose --config=yoochoose1_64 --manual_dir=DIR --data_dir=OUT`
with DIR holding `yoochoose-clicks.dat`; a time window: `--config='{"name": "full_to_0405",
"base": "yoochoose_full", "end_date": "2014-04-05"}'` (clicks after that UTC day ignored).
A thin wrapper: the configs and the pipeline are
click_log's (`tfds_builders/click_log`), the schema `tfds_builders.session_prefixes`.
"""

from __future__ import annotations

import textwrap

import clone_path  # noqa: F401  (before the first-party imports: see clone_path.py)

from narm_tf.data import clicks
from tfds_builders import session_prefixes
from tfds_builders.click_log import click_log_dataset_builder as click_log

CLICKS_FILE = "yoochoose-clicks.dat"

_DESCRIPTION = """
YOOCHOOSE click sessions of the RecSys Challenge 2015, preprocessed as in NARM (Li et al.,
CIKM 2017): sessions of length >= 2, items seen >= 5 times, the last day as test, every
session prefix ([x1..x_{i-1}], x_i) an example, prefixes truncated to their last 19 clicks,
10% of the training sessions held out (seeded; all prefixes of a held-out session, drawn among
the sessions of the prefixes a fraction keeps) as validation. Exact duplicate clicks are kept
(counted in the statistics). The vocabulary (raw item id of every index) and statistics are in
the dataset metadata (see narm_tf.data.dataset).
"""


class Builder(session_prefixes.SessionPrefixBuilder):
    """YOOCHOOSE session prefixes; `yoochoose1_64` is the paper's main setting."""

    DESCRIPTION = _DESCRIPTION
    HOMEPAGE = "https://recsys.acm.org/recsys15/challenge/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = textwrap.dedent(f"""\
    Download `yoochoose-data.7z` of the RecSys Challenge 2015 (YOOCHOOSE) and extract
    `{CLICKS_FILE}` (33,003,944 rows `SessionId,Timestamp,ItemId,Category`, no header) into
    the manual dir: `<manual_dir>/{CLICKS_FILE}`.
    """)
    BUILDER_CONFIGS = click_log.YOOCHOOSE_CONFIGS  # the click_log pipeline's named configs
    DEFAULT_CONFIG_NAME = "yoochoose1_64"
    COLUMNS = clicks.YOOCHOOSE_COLUMNS

    def _log(self) -> clicks.ClickLog:
        return self.builder_config.log
