"""TFDS builders for the session datasets: one folder a dataset (`tfds build tfds_builders/<name>`)."""
