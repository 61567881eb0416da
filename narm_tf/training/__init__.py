"""Training as a library: the trainer (`narm_tf.train` is its command), the run folder,
multi-worker training and warm starts."""
