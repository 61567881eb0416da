"""Requests to the exported NARM served by TF Serving over gRPC: build, send, read.

Needs only `grpcio` and `tensorflow-serving-api` (and TensorFlow for the tensor protos).
"""

from __future__ import annotations

import numpy as np

from narm_tf.serving import contract


def build_request(sessions, model_name: str = "narm", exclude_seen=None, int64: bool = False,
                  model_version: int | None = None):
    """Sessions of raw ids (oldest first) -> a `PredictRequest`, padded with `""` or `0`.

    `exclude_seen`: None (the single-input signature), or one flag for every session or a flag
    per session (the `*_with_options` signature).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    width = max((len(session) for session in sessions), default=0)
    pad = 0 if int64 else ""
    rows = [list(session) + [pad] * (width - len(session)) for session in sessions]
    if int64:
        values = np.array(rows, np.int64).reshape(len(rows), width)
    else:
        values = np.array(rows, dtype=object).astype(bytes).reshape(len(rows), width)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = contract.signature_name(int64, exclude_seen is not None)
    if model_version is not None:
        request.model_spec.version.value = model_version
    request.inputs[contract.ITEM_IDS].CopyFrom(tf.make_tensor_proto(values))
    if exclude_seen is not None:
        flags = np.broadcast_to(np.asarray(exclude_seen, bool), [len(rows)])
        request.inputs[contract.EXCLUDE_SEEN].CopyFrom(tf.make_tensor_proto(flags))
    return request


def parse_response(response) -> dict:
    """A `PredictResponse` -> `{output name: numpy array}` (string ids decoded)."""
    import tensorflow as tf

    outputs = {}
    for name, proto in response.outputs.items():
        value = tf.make_ndarray(proto)
        outputs[name] = value.astype(str) if value.dtype == object else value
    return outputs


def predict(server: str, request, timeout: float = 5.0):
    """Sends `request` to TF Serving at `server` (host:port); returns the `PredictResponse`."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout)
