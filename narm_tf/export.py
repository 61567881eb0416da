r"""Export a trained NARM model as a TF Serving SavedModel that speaks raw catalogue item ids.

    narm-export --model_dir=runs/diginetica --export_base=exports/narm \
        [--version=N] [--k=20] [--exclude_seen] [--scoring=exact|bfloat16|two_stage]

(the same as `python -m narm_tf.export ...`, or `python -m export.export_saved_model ...` from a
clone)
writes `exports/narm/<version>/` (TF Serving's layout; the version defaults to the next integer)
atomically (`narm_tf.serving.export_lib`; in code: `export_lib.export_from_model_dir` or
`export_lib.export_model`).

With `--only_if_better [--margin=POINTS]` it first scores the candidate and the latest version
under the export base on the candidate's test split (or `--dataset`/`--data_dir`) through their
signatures, prints both, and writes the new version only if the candidate's Recall@20 is at
most `--margin` points below; otherwise it exits with code 4 and writes nothing
(`narm_tf.serving.publish`).

Both refuse a run whose training has not finished (no `metrics.json`, the file a run writes
last; a `--refit` run without its finished `final.keras`), naming what is missing: rerun the
same `narm_tf.train` command to finish it. `--allow_unfinished` exports the model such a run
has so far and records that in the export's `assets.extra/export.json`. Exports running at
once into one `--export_base` each get their own version.

Signatures (all outputs best first; `k` and the max session length 19 are fixed at export):

| signature | inputs | id dtype, padding |
|---|---|---|
| `serving_default` | `item_ids [batch, None]` | string, `""` |
| `int64_ids` | `item_ids [batch, None]` | int64, `0` |
| `string_ids_with_options` | `item_ids [batch, None]`, `exclude_seen [batch]` bool | string, `""` |
| `int64_ids_with_options` | `item_ids [batch, None]`, `exclude_seen [batch]` bool | int64, `0` |

A catalogue of string ids (SKUs, zero-padded numbers: `id_type`) has only the two string
signatures, which answer with the log's own strings.

Outputs: `top_k_item_ids [batch, k]` (raw ids, the input's dtype), `top_k_scores [batch, k]`
(softmax probabilities over all items), `attention_weights [batch, 19]` (eq. 7's raw alpha over
the clicks the model read), `attention_share [batch, 19]` (each of those clicks' share of the
local representation, `|alpha_j| ||h_j|| / sum_i |alpha_i| ||h_i||`: >= 0, summing to 1 over
the clicks; all 0 for the `global` variant and empty sessions;
`narm_tf.model.layers.attention_share`)
and `session_item_ids [batch, 19]` (those clicks, raw ids, right-padded). `exclude_seen` must
hold one flag per row of `item_ids`; any other shape fails the request, naming both sizes.

What happens in the graph, in order (no Python, no custom ops):
1. raw ids -> vocabulary indices with a hash table built from the `vocabulary.txt` asset; padding
   and unknown ids become 0 and are dropped;
2. the known clicks are compacted to the right-padded `[batch, 19]` model input, keeping their
   order and, for longer sessions, the most recent 19;
3. the model scores all items (`narm_tf.serving.inference`: the Keras model's variables in a
   leaner graph; the Keras graph itself for a model it does not reproduce); the top k
   (`narm_tf.serving.top_k`) are mapped back to raw ids by the same asset. With `exclude_seen`,
   every known item of the request is left out, however long the session (not only the 19 the
   model read);
4. a session with no known click gets the k most popular training items, scored by their share
   of training labels, and zero attention weights and shares.

For catalogues of millions of items, `--scoring` changes step 3 (same signatures and outputs;
`narm_tf.serving.reduced_precision`): `bfloat16` scores with a bfloat16 item table; `two_stage`
picks `--candidates` items with a low-rank bfloat16 table (`--candidate_dims` principal
dimensions) and returns the top k of their exact float32 scores.
"""

from __future__ import annotations

from absl import app, flags

from narm_tf import cli  # before TensorFlow is imported: it quiets its logs

# `export_from_model_dir` is also importable from here (what `narm_tf.train` used).
from narm_tf.serving import reduced_precision
from narm_tf.serving.export_lib import export_from_model_dir, export_model  # noqa: F401

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (defined on demand: other modules import this one). Bounds are
    checked when the command line is parsed, before any work: `--k=0` fails naming the flag."""
    fv = {"flag_values": flag_values}
    cli.define_path("model_dir", None, "Training output folder (best.keras, vocabulary.tsv).",
                    **fv)
    cli.define_path("export_base", "exports/narm", "TF Serving model base path.", **fv)
    flags.DEFINE_integer("version", None, "Version folder; default: the next integer.",
                         lower_bound=0, **fv)
    flags.DEFINE_integer("k", 20, "Number of recommended items.", lower_bound=1, **fv)
    flags.DEFINE_bool("exclude_seen", False,
                      "Drop the session's own items from serving_default and int64_ids.", **fv)
    flags.DEFINE_bool("only_if_better", False,
                      "Publish only if the candidate's test Recall@20 is at most --margin points "
                      "below the latest version's (else exit 4, writing nothing).", **fv)
    flags.DEFINE_float("margin", 0.0, "Recall@20 points the candidate may lose (--only_if_better).",
                       lower_bound=0.0, **fv)
    flags.DEFINE_enum("scoring", "exact", list(reduced_precision.SCORINGS),
                      "How the export scores the catalogue: exact (float32), bfloat16 (a "
                      "bfloat16 item table), two_stage (--candidates from a low-rank bfloat16 "
                      "table, re-scored exactly in float32): for catalogues of millions of "
                      "items (narm_tf.serving.reduced_precision).", **fv)
    flags.DEFINE_integer("candidate_dims", reduced_precision.CANDIDATE_DIMS,
                         "--scoring=two_stage: principal dimensions of the candidate table.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("candidates", reduced_precision.CANDIDATES,
                         "--scoring=two_stage: items re-scored exactly per session; keep it "
                         ">= k + 19 when excluding seen items.", lower_bound=1, **fv)
    flags.DEFINE_string("dataset", None, "--only_if_better: TFDS name/config of the test split "
                        "to compare on; default: the candidate run's.", **fv)
    cli.define_path("data_dir", None, "--only_if_better: its TFDS data_dir; default: the "
                    "candidate run's.", **fv)
    flags.DEFINE_bool("allow_unfinished", False,
                      "Export a run whose training has not finished (no metrics.json) as it "
                      "is; recorded in the export's assets.extra/export.json.", **fv)


def main(argv):
    del argv
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required (a narm_tf.train output folder)")
    from narm_tf.training import run_dir

    if FLAGS.only_if_better:
        publish_or_exit()
        return
    try:
        path = export_from_model_dir(FLAGS.model_dir, FLAGS.export_base, version=FLAGS.version,
                                     k=FLAGS.k, exclude_seen=FLAGS.exclude_seen,
                                     allow_unfinished=FLAGS.allow_unfinished, **scoring())
    except (run_dir.RunFolderError, ValueError, FileExistsError) as error:
        raise SystemExit(f"export: {error}") from None
    print(f"exported {path}")


def scoring() -> dict:
    """The --scoring flags as `export_lib.export_model` keywords."""
    return {"scoring": FLAGS.scoring, "candidate_dims": FLAGS.candidate_dims,
            "candidates": FLAGS.candidates}


def publish_or_exit() -> None:
    """--only_if_better: prints both scores and the decision; exit code 4 when refused."""
    import sys

    from narm_tf.serving import publish
    from narm_tf.training import run_dir

    try:
        outcome = publish.publish_if_better(
            FLAGS.model_dir, FLAGS.export_base, margin=FLAGS.margin, k=FLAGS.k,
            exclude_seen=FLAGS.exclude_seen, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
            version=FLAGS.version, allow_unfinished=FLAGS.allow_unfinished, **scoring())
    except (run_dir.RunFolderError, ValueError, FileExistsError) as error:
        raise SystemExit(f"export: {error}") from None
    print(publish.describe(outcome, FLAGS.model_dir, FLAGS.margin), flush=True)
    if not outcome.published:
        sys.exit(publish.NOT_BETTER_EXIT_CODE)


def run() -> None:
    """The `narm-export` command: parses the command line, then `main`."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
