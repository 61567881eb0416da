"""Raw click logs -> sessions -> session-prefix examples -> TFDS datasets -> batches.

  clicks.py    a click log read (`ClickLog`, CSV/TSV and Parquet readers, ids as written)
  rules.py     the preprocessing rules, the statistics, `preprocess_log` (what builders run)
  beam.py      the same rules as Apache Beam transforms, for logs beyond memory
  examples.py  the example schema (TFDS features, records, parse spec), `MAX_LEN`, `Prefixes`
  dataset.py   `Dataset`: a built dataset's splits, vocabulary, statistics and batches
"""
