"""The yoochoose builder on `dummy_data/handmade-clicks.dat`
(read as `yoochoose-clicks.dat`), 48 hand-made clicks.

By hand: 11 train sessions of 3 clicks on items A, B, C (seen >= 5 times) give 22 prefixes;
session 11 (one click) and session 12 ([A, Z], Z seen once) are dropped. Test (the last day):
three sessions of 3 clicks (2 prefixes each) and [D, A, B] -> [A, B] (1 prefix): D is left
with one click once session 11 goes.
Validation: floor(0.1 * 11) = 1 whole session of 2 prefixes. The fractions keep 5 and 0 of
the 22 prefixes here, and TFDS refuses an empty split: their counts are pinned on the real
sample in tests/test_builders.py.
"""

import tensorflow_datasets as tfds

from tfds_builders.testing import raw_named_dummy_data

from . import yoochoose_dataset_builder


class YoochooseFullTest(tfds.testing.DatasetBuilderTestCase):
    """All 22 train prefixes, of 11 sessions: 1 session (2 prefixes) to validation."""

    DATASET_CLASS = yoochoose_dataset_builder.Builder
    EXAMPLE_DIR = raw_named_dummy_data(__file__, {"yoochoose-clicks.dat": "handmade-clicks.dat"})
    BUILDER_CONFIG_NAMES_TO_TEST = ["yoochoose_full"]
    SPLITS = {"train": 20, "validation": 2, "test": 7}


if __name__ == "__main__":
    tfds.testing.test_main()
