r"""gRPC client for the exported NARM served by TF Serving (`narm_tf.serving.client_lib`).

    python -m export.client --server=localhost:8500 --model_name=narm \
        --items=214536502,214536500,214536506 [--exclude_seen] [--int64]

Needs only `grpcio` and `tensorflow-serving-api` (and TensorFlow for the tensor protos).
"""

from __future__ import annotations

from absl import flags

from narm_tf import cli  # before TensorFlow is imported: it quiets its logs
from narm_tf.serving.client_lib import build_request, parse_response, predict

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (defined on demand: other modules import this one)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("server", "localhost:8500", "TF Serving gRPC address, host:port.", **fv)
    flags.DEFINE_string("model_name", "narm", "Model name in TF Serving (--model_name / config).",
                        **fv)
    flags.DEFINE_integer("model_version", None, "Pin a version (default: the latest served).",
                         **fv)
    flags.DEFINE_list("items", [], "The session's raw item ids, oldest first, comma-separated.",
                      **fv)
    flags.DEFINE_bool("exclude_seen", None,
                      "Drop the session's items (uses the *_with_options signature).", **fv)
    flags.DEFINE_bool("int64", False, "Send int64 ids (int64_ids signatures) instead of strings.",
                      **fv)
    flags.DEFINE_float("timeout", 5.0, "Request deadline, seconds.", **fv)


def main(argv):
    del argv
    items = [item.strip() for item in FLAGS.items]
    session = [int(item) for item in items] if FLAGS.int64 else items
    request = build_request([session], FLAGS.model_name, FLAGS.exclude_seen, FLAGS.int64,
                            FLAGS.model_version)
    import grpc

    try:
        response = predict(FLAGS.server, request, FLAGS.timeout)
    except grpc.RpcError as error:  # the server unreachable, the model unknown, a bad request
        raise cli.CommandError(f"{FLAGS.server} (model {FLAGS.model_name}): "
                               f"{error.code().name}: {error.details()}") from None
    outputs = parse_response(response)
    for rank, (item, score) in enumerate(
            zip(outputs["top_k_item_ids"][0], outputs["top_k_scores"][0], strict=True), start=1):
        print(f"{rank:>4}  {item:>20}  {score:.6f}")


def run() -> None:
    """The `the gRPC client` command: parses the command line, then `main`."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
