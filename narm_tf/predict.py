r"""Query an exported NARM from the command line: raw item ids in, top-k raw ids and scores out.

    python -m narm_tf.predict --export_dir=exports/narm --items=214536502,214536500,214536506

`--export_dir` is a version folder (`exports/narm/3`) or a model base path (its latest version).
Only the SavedModel is loaded (TensorFlow, no project model code), through the same signatures
TF Serving serves: `serving_default`, or `string_ids_with_options` with `--exclude_seen`.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from narm_tf import cli  # before TensorFlow is imported: it quiets its logs
from narm_tf.serving import contract
from narm_tf.serving.contract import resolve_export_dir

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (defined on demand: other modules import this one)."""
    fv = {"flag_values": flag_values}
    cli.define_path("export_dir", None, "SavedModel version folder, or the base path above it.",
                    **fv)
    flags.DEFINE_list("items", [], "The session's raw item ids, oldest first, comma-separated.",
                      **fv)
    flags.DEFINE_bool("exclude_seen", None,
                      "Drop the session's items from the results (default: the export's setting).",
                      **fv)


def recommend(export_dir: str, items: list[str], exclude_seen: bool | None = None) -> dict:
    """One session of raw ids (strings) -> the signature's outputs for it, as numpy rows.

    Returns `top_k_item_ids [k]` (str), `top_k_scores [k]`, `attention_weights [19]` (raw
    alpha), `attention_share [19]` (each click's share of the local representation) and
    `session_item_ids [19]` (str, `""` padding).
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(resolve_export_dir(export_dir))
    inputs = {contract.ITEM_IDS: tf.constant([items], tf.string) if items
              else tf.zeros([1, 0], tf.string)}
    if exclude_seen is not None:
        inputs[contract.EXCLUDE_SEEN] = tf.constant([exclude_seen])
    signature = contract.signature_name(int64=False, with_options=exclude_seen is not None)
    outputs = loaded.signatures[signature](**inputs)
    result = {name: value.numpy()[0] for name, value in outputs.items()}
    for name in ("top_k_item_ids", "session_item_ids"):
        result[name] = np.array([x.decode() for x in result[name]])
    return result


def format_recommendations(result: dict) -> str:
    """The top-k table, then the attention on each click the model read: its share of the
    local representation (what to read) and the raw alpha of eq. 7 (the paper's)."""
    lines = [f"{'rank':>4}  {'item_id':>20}  score"]
    for rank, (item, score) in enumerate(
            zip(result["top_k_item_ids"], result["top_k_scores"], strict=True), start=1):
        if item:  # an export with fewer than k rankable items pads with ""
            lines.append(f"{rank:>4}  {item:>20}  {score:.6f}")
    clicks = [(item, share, alpha) for item, share, alpha in zip(
        result["session_item_ids"], result["attention_share"], result["attention_weights"],
        strict=True) if item]
    if clicks:
        lines.append("attention over the session's known clicks (oldest first):")
        lines.append(f"      {'item_id':>20}  {'share':>6}  alpha")
        lines.extend(f"      {item:>20}  {share:>6.1%}  {alpha:+.4f}"
                     for item, share, alpha in clicks)
    else:
        lines.append("no known item in the session: the most popular training items")
    return "\n".join(lines)


def main(argv):
    del argv
    if not FLAGS.export_dir:
        raise app.UsageError("--export_dir is required (e.g. exports/narm or exports/narm/1)")
    result = recommend(FLAGS.export_dir, [item.strip() for item in FLAGS.items],
                       FLAGS.exclude_seen)
    print(format_recommendations(result))


def run() -> None:
    """The `narm-predict` command: parses the command line, then `main`."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
