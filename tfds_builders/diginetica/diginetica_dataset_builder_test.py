"""The diginetica builder on `dummy_data/handmade-views.csv`
(read as `train-item-views.csv`), 38 hand-made views.

By hand: 10 train sessions (2016-05-01..10) of items 1001, 1002, 1003 in `timeframe` order
(not file order) give 20 prefixes, floor(0.1 * 10) = 1 session (2 prefixes) to validation.
The last date is 2016-05-20, so the split is 2016-05-13: session 30, dated exactly then,
belongs to neither; sessions 21 and 22 (3 views each) give 4 test prefixes.
"""

import tensorflow_datasets as tfds

from tfds_builders.testing import raw_named_dummy_data

from . import diginetica_dataset_builder


class DigineticaTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = diginetica_dataset_builder.Builder
    EXAMPLE_DIR = raw_named_dummy_data(__file__, {"train-item-views.csv": "handmade-views.csv"})
    SPLITS = {"train": 18, "validation": 2, "test": 4}


if __name__ == "__main__":
    tfds.testing.test_main()
