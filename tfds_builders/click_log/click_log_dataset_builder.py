"""Any click log (CSV/TSV or Parquet) -> NARM session-prefix examples (the rules of docs/data.md).

Build your own log, its files in the manual dir, with a JSON config (TFDS passes it to
`ClickLogConfig`; the keys and defaults are `narm_tf.data.clicks.ClickLog`'s):

  tfds build tfds_builders/click_log --manual_dir=DIR --data_dir=OUT --config='{"name":
    "my_shop", "files": "clicks-*.parquet", "format": "parquet", "session": "sid",
    "item": "sku", "time": "ts", "time_format": "epoch_ms", "test_days": 7}'

or a named config: `yoochoose1_64`, `yoochoose1_4`, `yoochoose_full`, `diginetica` (the same
pipeline the `yoochoose` and `diginetica` builders run). A JSON config may start from a named
one (`"base"`) and change some keys, e.g. a time window ending on a day (UTC, inclusive):

  tfds build tfds_builders/click_log --config='{"name": "diginetica_to_0501",
    "base": "diginetica", "end_date": "2016-05-01"}' ...
  tfds build tfds_builders/yoochoose --config='{"name": "yoochoose_full_to_0405",
    "base": "yoochoose_full", "end_date": "2014-04-05"}' ...

(`end_date`: clicks after that day are ignored, see
`narm_tf.data.clicks.ClickLog.date_limit`; absent: no cut.) A bad config fails when it
is parsed, naming the valid keys or values; a missing column fails before any file is read in full.
A config name stands for one set of rules and raw files: building it again with other rules or
raw files stops, naming what changed (`tfds_builders/session_prefixes.py`).
"""

from __future__ import annotations

import dataclasses

import clone_path  # noqa: F401  (before the first-party imports: see clone_path.py)
import tensorflow_datasets as tfds

from narm_tf.data import clicks
from tfds_builders import session_prefixes


@dataclasses.dataclass(eq=False)
class _ClickLogFields(tfds.core.BuilderConfig, clicks.ClickLog):
    pass


class ClickLogConfig(_ClickLogFields):
    """A click log and its rules: `name` plus the keys of `narm_tf.data.clicks.ClickLog`."""

    KEYS = ("name", *(field.name for field in dataclasses.fields(clicks.ClickLog)))

    def __init__(self, **kwargs):
        if "base" in kwargs:
            kwargs = {**_base_fields(kwargs.pop("base")), **kwargs}
        known = {field.name for field in dataclasses.fields(_ClickLogFields)}
        unknown = sorted(set(kwargs) - known)
        if unknown or "name" not in kwargs:
            problem = f"unknown key(s) {unknown}" if unknown else "no 'name'"
            raise ValueError(f"click_log config: {problem}; valid keys: {', '.join(self.KEYS)} "
                             f"(and base, TFDS's version, description, tags)")
        super().__init__(**kwargs)

    @property
    def log(self) -> clicks.ClickLog:
        """The reading and rules part (`narm_tf.data.clicks`, `narm_tf.data.rules`)."""
        return clicks.ClickLog(**{key: getattr(self, key) for key in self.KEYS[1:]})


def _named(name: str, log: clicks.ClickLog, description: str, **changes):
    return ClickLogConfig(name=name, description=description,
                          **{**dataclasses.asdict(log), **changes})


YOOCHOOSE_CONFIGS = [
    _named("yoochoose1_64", clicks.YOOCHOOSE,
           "Most recent 1/64 of the training prefixes (paper default).", fraction=64),
    _named("yoochoose1_4", clicks.YOOCHOOSE,
           "Most recent 1/4 of the training prefixes.", fraction=4),
    _named("yoochoose_full", clicks.YOOCHOOSE, "All training prefixes."),
]
DIGINETICA_CONFIG = _named("diginetica", clicks.DIGINETICA,
                           "DIGINETICA item views, clicks in timeframe order.")



def _base_fields(base) -> dict:
    """The ClickLog keys of the named config `base` (its description too), to start from."""
    named = {config.name: config for config in (*YOOCHOOSE_CONFIGS, DIGINETICA_CONFIG)}
    if base not in named:
        raise ValueError(f"click_log config: base must be one of {', '.join(named)}, "
                         f"got {base!r}")
    config = named[base]
    return {"description": config.description,
            **{key: getattr(config, key) for key in ClickLogConfig.KEYS[1:]}}


_DESCRIPTION = """
A click log of any shop, preprocessed as in NARM (Li et al., CIKM 2017) with the rules its
config sets (defaults: sessions of length >= 2, items seen >= 5 times, the last day as test,
every session prefix an example, truncated to its last 19 clicks, 10% of the training sessions
held out as validation). The vocabulary (raw item id of every index) and statistics are in the
dataset metadata (see narm_tf.data.dataset).
"""


class Builder(session_prefixes.SessionPrefixBuilder):
    """Any click log; configs name how to read it and which rules apply."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Any CSV/TSV or Parquet click log through a JSON config; "
                              "YOOCHOOSE and DIGINETICA as named configs."}
    DESCRIPTION = _DESCRIPTION
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put the click log's files in the manual dir; the config's `files` glob names them
    (e.g. `clicks-*.parquet`; the YOOCHOOSE configs read `yoochoose-clicks.dat`, DIGINETICA
    `train-item-views.csv`).
    """
    BUILDER_CONFIGS = [*YOOCHOOSE_CONFIGS, DIGINETICA_CONFIG]
    DEFAULT_CONFIG_NAME = "yoochoose1_64"

    def _log(self) -> clicks.ClickLog:
        return self.builder_config.log
