"""The commands `python -m export.export_saved_model` and `python -m export.client`: thin
entry points over `narm_tf.serving` (not installed by setup.py: run them from a clone)."""
