"""The run folder, multi-worker training and warm starts that `narm_tf.train` drives."""
