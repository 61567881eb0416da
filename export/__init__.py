"""The clone's commands `python -m export.export_saved_model` (the `narm-export` command of
`narm_tf.export`) and `python -m export.client` (the gRPC client over `narm_tf.serving`)."""
