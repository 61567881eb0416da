"""Serving NARM: the SavedModel contract, the lean inference pass, top-k, the export and a client.

`contract` (names and version folders, no TensorFlow model code) -> `inference` (the model's
maths on its own variables) -> `top_k` -> `signatures` (the serving graph) -> `export_lib`
(the atomic versioned write and warm-up) -> `client_lib` (gRPC). The commands are
`python -m export.export_saved_model` and `python -m export.client`.
"""
