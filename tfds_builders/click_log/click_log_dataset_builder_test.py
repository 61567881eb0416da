"""The click_log builder with a shop's config on `dummy_data/clicks-*.tsv`.

The two TSV files hold yoochoose's 48 dummy clicks (see yoochoose_dataset_builder_test.py)
as a shop might log them: a header `ts sku sid` (columns in another order), epoch
milliseconds, split across two files in the middle of session 8 (grouped across files).
The same clicks, so the same counts by hand: 22 train prefixes of 11 sessions (1 session,
2 prefixes, to validation) and 7 test prefixes.
"""

import tensorflow_datasets as tfds

from . import click_log_dataset_builder

SHOP = click_log_dataset_builder.ClickLogConfig(
    name="shop", files="clicks-*.tsv", delimiter="\t", session="sid", item="sku", time="ts",
    time_format="epoch_ms", test_days=1)


class ClickLogShopTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = click_log_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [SHOP]
    SPLITS = {"train": 20, "validation": 2, "test": 7}


if __name__ == "__main__":
    tfds.testing.test_main()
