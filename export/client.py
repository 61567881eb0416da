r"""gRPC client for the exported NARM served by TF Serving.

    python -m export.client --server=localhost:8500 --model_name=narm \
        --items=214536502,214536500,214536506 [--exclude_seen] [--int64]

Needs only `grpcio` and `tensorflow-serving-api` (and TensorFlow for the tensor protos).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined on demand: other modules import this one)."""
    flags.DEFINE_string("server", "localhost:8500", "TF Serving gRPC address, host:port.")
    flags.DEFINE_string("model_name", "narm", "Model name in TF Serving (--model_name / config).")
    flags.DEFINE_integer("model_version", None, "Pin a version (default: the latest served).")
    flags.DEFINE_list("items", [], "The session's raw item ids, oldest first, comma-separated.")
    flags.DEFINE_bool("exclude_seen", None,
                      "Drop the session's items (uses the *_with_options signature).")
    flags.DEFINE_bool("int64", False, "Send int64 ids (int64_ids signatures) instead of strings.")
    flags.DEFINE_float("timeout", 5.0, "Request deadline, seconds.")


def signature_name(int64: bool, with_options: bool) -> str:
    """The export's signature for that id dtype, with or without the `exclude_seen` input."""
    if with_options:
        return "int64_ids_with_options" if int64 else "string_ids_with_options"
    return "int64_ids" if int64 else "serving_default"


def build_request(sessions: list[list[str]], model_name: str = "narm",
                  exclude_seen: bool | None = None, int64: bool = False,
                  model_version: int | None = None):
    """Sessions of raw ids (oldest first) -> a `PredictRequest`, padded with `""` or `0`."""
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
    request.model_spec.signature_name = signature_name(int64, exclude_seen is not None)
    if model_version is not None:
        request.model_spec.version.value = model_version
    request.inputs["item_ids"].CopyFrom(tf.make_tensor_proto(values))
    if exclude_seen is not None:
        request.inputs["exclude_seen"].CopyFrom(
            tf.make_tensor_proto(np.full([len(rows)], exclude_seen, bool)))
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


def main(argv):
    del argv
    items = [item.strip() for item in FLAGS.items]
    session = [int(item) for item in items] if FLAGS.int64 else items
    request = build_request([session], FLAGS.model_name, FLAGS.exclude_seen, FLAGS.int64,
                            FLAGS.model_version)
    outputs = parse_response(predict(FLAGS.server, request, FLAGS.timeout))
    for rank, (item, score) in enumerate(
            zip(outputs["top_k_item_ids"][0], outputs["top_k_scores"][0], strict=True), start=1):
        print(f"{rank:>4}  {item:>20}  {score:.6f}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
