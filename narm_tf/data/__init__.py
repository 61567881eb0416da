"""Raw click logs -> sessions -> session-prefix examples -> TFDS datasets -> batches."""
