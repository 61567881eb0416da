"""TFDS builders of the session datasets: `tfds build tfds_builders/<name>`."""
