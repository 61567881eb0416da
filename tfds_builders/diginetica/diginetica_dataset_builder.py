"""DIGINETICA item views -> NARM session-prefix examples (docs/data.md).

Build: `tfds build tfds_builders/diginetica --manual_dir=DIR --data_dir=OUT` with DIR holding
`train-item-views.csv`. A thin wrapper over click_log's `diginetica` config and pipeline
(`tfds_builders/click_log`); the schema is `tfds_builders.session_prefixes`.
"""

from __future__ import annotations

import textwrap

import clone_path  # noqa: F401  (before the first-party imports: see clone_path.py)

from narm_tf.data import clicks
from tfds_builders import session_prefixes
from tfds_builders.click_log import click_log_dataset_builder as click_log

VIEWS_FILE = "train-item-views.csv"

_DESCRIPTION = """
DIGINETICA item-view sessions of the CIKM Cup 2016, preprocessed as in NARM (Li et al.,
CIKM 2017): clicks ordered by `timeframe`, sessions of length >= 2, items seen >= 5 times,
the last 7 days as test, every session prefix an example, prefixes truncated to their last 19
clicks, 10% of the training sessions held out (seeded; all prefixes of a held-out session) as
validation. Exact duplicate clicks are kept (counted in the statistics). The vocabulary (raw item
id of every index) and statistics are in the dataset metadata (see narm_tf.data.dataset).
"""


class Builder(session_prefixes.SessionPrefixBuilder):
    """DIGINETICA session prefixes."""

    DESCRIPTION = _DESCRIPTION
    HOMEPAGE = "https://competitions.codalab.org/competitions/11161"
    MANUAL_DOWNLOAD_INSTRUCTIONS = textwrap.dedent(f"""\
    Download the CIKM Cup 2016 Track 2 (DIGINETICA) data and extract `{VIEWS_FILE}`
    (`session_id;user_id;item_id;timeframe;eventdate`, with header) into the manual dir:
    `<manual_dir>/{VIEWS_FILE}`.
    """)

    COLUMNS = clicks.DIGINETICA_COLUMNS

    def _log(self) -> clicks.ClickLog:
        return click_log.DIGINETICA_CONFIG.log
