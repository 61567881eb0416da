r"""Export a trained NARM model as a TF Serving SavedModel that speaks raw catalogue item ids.

    python -m export.export_saved_model --model_dir=runs/diginetica --export_base=exports/narm \
        [--version=N] [--k=20] [--exclude_seen]

writes `exports/narm/<version>/` (TF Serving's layout; the version defaults to the next integer)
atomically: everything is written to a hidden temporary folder beside it (`.tmp-<version>-*`, a
name TF Serving ignores) that is renamed to `<version>` only once complete, with the modes a
plain `mkdir`/`open` would give under the umask (0755 folders, 0644 files under umask 022), so a
server running as another user can read it.

Signatures (all outputs best first; `k` and the max session length 19 are fixed at export):

| signature | inputs | id dtype, padding |
|---|---|---|
| `serving_default` | `item_ids [batch, None]` | string, `""` |
| `int64_ids` | `item_ids [batch, None]` | int64, `0` |
| `string_ids_with_options` | `item_ids [batch, None]`, `exclude_seen [batch]` bool | string, `""` |
| `int64_ids_with_options` | `item_ids [batch, None]`, `exclude_seen [batch]` bool | int64, `0` |

Outputs: `top_k_item_ids [batch, k]` (raw ids, the input's dtype), `top_k_scores [batch, k]`
(softmax probabilities over all items), `attention_weights [batch, 19]` (eq. 7's raw alpha over
the clicks the model read), `attention_share [batch, 19]` (each of those clicks' share of the
local representation, `|alpha_j| ||h_j|| / sum_i |alpha_i| ||h_i||`: >= 0, summing to 1 over
the clicks; all 0 for the `global` variant and empty sessions; `narm_tf.layers.attention_share`)
and `session_item_ids [batch, 19]` (those clicks, raw ids, right-padded). `exclude_seen` must
hold one flag per row of `item_ids`; any other shape fails the request, naming both sizes.

What happens in the graph, in order (no Python, no custom ops):
1. raw ids -> vocabulary indices with a hash table built from the `vocabulary.txt` asset; padding
   and unknown ids become 0 and are dropped;
2. the known clicks are compacted to the right-padded `[batch, 19]` model input, keeping their
   order and, for longer sessions, the most recent 19;
3. the model scores all items (`export/inference.py`: the Keras model's variables in a leaner
   graph; the Keras graph itself for a model it does not reproduce); the top k are mapped back
   to raw ids by the same asset. With `exclude_seen`, every known item of the request is left
   out, however long the session (not only the 19 the model read);
4. a session with no known click gets the k most popular training items, scored by their share
   of training labels, and zero attention weights and shares.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from export.inference import NarmInference, UnsupportedModel
from narm_tf import run_dir
from narm_tf.preprocessing import MAX_LEN

VOCABULARY_ASSET = "vocabulary.txt"
WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE_STRING = "serving_default"
SIGNATURE_INT64 = "int64_ids"
SIGNATURE_STRING_OPTIONS = "string_ids_with_options"
SIGNATURE_INT64_OPTIONS = "int64_ids_with_options"
SIGNATURES = (SIGNATURE_STRING, SIGNATURE_INT64, SIGNATURE_STRING_OPTIONS, SIGNATURE_INT64_OPTIONS)
OUTPUTS = ("top_k_item_ids", "top_k_scores", "attention_weights", "attention_share",
           "session_item_ids")
_BLOCKWISE_MIN_WIDTH = 4096  # narrower score rows use one TopKV2


def compact_sessions(indices: tf.Tensor, max_len: int = MAX_LEN) -> tf.Tensor:
    """Vocabulary indices `[batch, L]` (0 = padding or unknown, anywhere) -> `[batch, max_len]`.

    Keeps the known clicks in order, at most the most recent `max_len`, right-padded with 0:
    the model's input format, whatever the padding of the request.
    """
    known = indices > 0
    from_end = tf.cumsum(tf.cast(known, tf.int32), axis=1, reverse=True)  # 1 at the last click
    length = tf.minimum(tf.reduce_sum(tf.cast(known, tf.int32), axis=1, keepdims=True), max_len)
    keep = known & (from_end <= max_len)
    column = tf.where(keep, length - from_end, max_len)  # dropped clicks go to a spare column
    row = tf.broadcast_to(tf.range(tf.shape(indices)[0])[:, None], tf.shape(indices))
    compact = tf.scatter_nd(tf.stack([row, column], axis=-1), tf.where(keep, indices, 0),
                            tf.stack([tf.shape(indices)[0], max_len + 1]))
    return compact[:, :max_len]


def block_size(width: int, k: int) -> int:
    """Block width for `blockwise_top_k` over `width` scores: about sqrt(width / k), a divisor
    of `width` when one is near (no remainder to handle)."""
    best = max(2, round((width / k) ** 0.5))
    near = [b for b in range(best // 2, 2 * best + 1) if b > 1 and width % b == 0]
    return min(near, key=lambda b: width // b + k * b) if near else best


def blockwise_top_k(scores: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`tf.math.top_k(scores, k)` (values `[b, k]`, int64 indices, same order and ties) in two
    short passes over wide rows: the k blocks with the highest maxima hold the top k.

    Over 43,098 scores this is about 3x faster than one `TopKV2`, which stays for narrow rows.
    """
    width = scores.shape[-1]
    k = min(k, width)
    block = block_size(width, k)
    blocks = width // block
    if width < _BLOCKWISE_MIN_WIDTH or blocks < k:
        values, indices = tf.math.top_k(scores, k, sorted=True)
        return values, tf.cast(indices, tf.int64)
    batch = tf.shape(scores)[0]
    body = blocks * block
    tiles = tf.reshape(scores if body == width else scores[:, :body], [batch, blocks, block])
    best = tf.math.top_k(tf.reduce_max(tiles, axis=2), k, sorted=False).indices
    best = tf.sort(best, axis=1)  # candidates in index order: ties break as in top_k
    candidates = tf.reshape(tf.gather(tiles, best, batch_dims=1), [batch, k * block])
    positions = tf.reshape(best[:, :, None] * block + tf.range(block)[None, None, :],
                           [batch, k * block])
    if body < width:  # the last `width - body` scores are candidates as they are
        candidates = tf.concat([candidates, scores[:, body:]], axis=1)
        tail = tf.broadcast_to(tf.range(body, width)[None, :], [batch, width - body])
        positions = tf.concat([positions, tail], axis=1)
    values, order = tf.math.top_k(candidates, k, sorted=True)
    return values, tf.cast(tf.gather(positions, order, batch_dims=1), tf.int64)


def check_flags(exclude_seen: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """`exclude_seen`, after a check that it holds one flag per session (`[batch]`); a request
    with another shape fails with an error naming both sizes (no silent broadcast)."""
    valid = tf.equal(tf.rank(exclude_seen), 1) & tf.equal(tf.size(exclude_seen), batch)
    check = tf.debugging.Assert(valid, [
        "exclude_seen must hold one flag per session (shape [batch]): got shape",
        tf.shape(exclude_seen), "for a batch of", batch, "sessions (rows of item_ids)"])
    with tf.control_dependencies([check]):
        return tf.identity(exclude_seen)


class ServingModule(tf.Module):
    """The serving graph: raw ids -> compacted indices -> Keras model -> top-k raw ids."""

    def __init__(self, scoring_model: keras.Model, vocabulary: np.ndarray, popularity: np.ndarray,
                 vocabulary_file: str, k: int, exclude_seen: bool, max_len: int):
        super().__init__(name="narm_serving")
        num_items = len(vocabulary)
        self._k = min(k, num_items)
        self._exclude_seen = exclude_seen
        self._max_len = max_len
        # The TF1 loader (TF Serving) restores only tf.Variables the module itself holds.
        self._variables = [v.value for v in scoring_model.variables]
        object.__setattr__(self, "_scoring_model", scoring_model)  # called, not tracked
        try:
            inference = NarmInference(scoring_model)
        except UnsupportedModel as error:
            logging.warning("serving through the Keras graph (slower): %s", error)
            inference = None
        object.__setattr__(self, "_inference", inference)
        self._vocabulary_asset = tf.saved_model.Asset(vocabulary_file)
        # Tables over one asset are told apart (their shared_name) by `vocab_size` set or not.
        self._string_to_index = self._table(tf.string, "key", None, 0)
        self._int64_to_index = self._table(tf.int64, "key", num_items, 0)
        self._line_to_string = self._table(tf.string, "value", None, "")
        self._line_to_int64 = self._table(tf.int64, "value", num_items, 0)
        order = np.argsort(-np.asarray(popularity, np.float64), kind="stable")[: self._k]
        total = max(float(np.sum(popularity)), 1.0)
        self._popular_indices = tf.constant(order + 1, tf.int64)
        self._popular_scores = tf.constant(np.asarray(popularity)[order] / total, tf.float32)

    def _table(self, raw_dtype, raw_role: str, vocab_size, default) -> tf.lookup.StaticHashTable:
        """Raw id -> vocabulary index (line number + 1), or line number -> raw id (the asset)."""
        whole, line = tf.lookup.TextFileIndex.WHOLE_LINE, tf.lookup.TextFileIndex.LINE_NUMBER
        if raw_role == "key":
            init = tf.lookup.TextFileInitializer(self._vocabulary_asset, raw_dtype, whole,
                                                 tf.int64, line, vocab_size=vocab_size,
                                                 value_index_offset=1)
        else:
            init = tf.lookup.TextFileInitializer(self._vocabulary_asset, tf.int64, line,
                                                 raw_dtype, whole, vocab_size=vocab_size)
        return tf.lookup.StaticHashTable(init, default_value=default)

    def to_indices(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Raw ids `[batch, L]` -> vocabulary indices, 0 for padding and unknown ids."""
        if item_ids.dtype == tf.string:
            return self._string_to_index.lookup(item_ids)
        indices = self._int64_to_index.lookup(item_ids)
        return tf.where(tf.equal(item_ids, 0), tf.zeros_like(indices), indices)

    def to_raw(self, indices: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """Vocabulary indices -> raw ids; index 0 -> padding (`""` or 0)."""
        table = self._line_to_string if dtype == tf.string else self._line_to_int64
        return table.lookup(indices - 1)

    def recommend(self, item_ids: tf.Tensor, exclude_seen: tf.Tensor | None) -> dict:
        """Raw sessions `[batch, L]` -> the signature outputs (see the module docstring)."""
        indices = self.to_indices(item_ids)                                  # [b, L]
        session = compact_sessions(indices, self._max_len)                   # [b, max_len]
        has_items = session[:, 0] > 0
        placeholder = tf.one_hot(0, self._max_len, dtype=tf.int64)  # item 1: scored, then replaced
        model_input = tf.where(has_items[:, None], session, placeholder[None, :])
        logits, attention, share = self._score(tf.cast(model_input, tf.int32))  # col 0: padding
        if exclude_seen is not None:
            exclude_seen = check_flags(exclude_seen, tf.shape(item_ids)[0])
        top_logits, top_indices = self._top_k(logits, indices, session, exclude_seen)
        # One fused softmax pass over [b, N+1], then k gathers (not exp/sum/div as three ops).
        scores = tf.gather(tf.nn.softmax(logits), top_indices, batch_dims=1)
        returned = (top_indices > 0) & (top_logits > -np.inf)  # not padding, not excluded
        top_indices = tf.where(returned, top_indices, 0)
        scores = tf.where(returned, scores, 0.0)
        top_indices = tf.where(has_items[:, None], top_indices, self._popular_indices[None, :])
        scores = tf.where(has_items[:, None], scores, self._popular_scores[None, :])
        return {
            "top_k_item_ids": self.to_raw(top_indices, item_ids.dtype),
            "top_k_scores": scores,
            "attention_weights": tf.where(has_items[:, None], attention, 0.0),
            "attention_share": tf.where(has_items[:, None], share, 0.0),
            "session_item_ids": self.to_raw(session, item_ids.dtype),
        }

    def _score(self, model_input):
        """`(logits [b, N + 1], attention weights [b, max_len], attention share
        [b, max_len])`, float32."""
        if self._inference is not None:
            return self._inference(model_input)
        outputs = self._scoring_model(model_input, training=False)
        return tuple(tf.cast(outputs[name], tf.float32)
                     for name in ("scores", "attention_weights", "attention_share"))

    def _top_k(self, logits, indices, session, exclude_seen):
        """`(top-k logits [b, k], their indices [b, k])` of logits `[b, N+1]`, without the
        known items (`indices [b, L]`, 0 = none) of the rows that exclude them.

        Every known item a row sent is excluded, however long the row. When no excluding row
        holds more than `max_len` known clicks (the usual request), its compacted `session`
        holds all of them and the `[b, N+1]` logits are not touched: the top `k + max_len`
        minus the session's items keeps the best k. Otherwise the known items' logits are set
        to -inf in a copy of the logits (one scatter of `[b, L]`) before the top k.
        """
        if exclude_seen is None and not self._exclude_seen:
            return blockwise_top_k(logits, self._k)
        excluding = (tf.ones_like(session[:, 0], tf.bool) if exclude_seen is None
                     else exclude_seen)
        clicks = tf.reduce_sum(tf.cast(indices > 0, tf.int32), axis=1)
        return tf.cond(tf.reduce_any(excluding & (clicks > self._max_len)),
                       lambda: self._top_k_masked(logits, indices, excluding),
                       lambda: self._top_k_candidates(logits, session, excluding))

    def _top_k_candidates(self, logits, session, excluding):
        """Top k of the top `k + max_len`, without each excluding row's `session` items."""
        wide_logits, wide_indices = blockwise_top_k(logits, self._k + self._max_len)
        seen = tf.reduce_any(tf.equal(wide_indices[:, :, None], session[:, None, :]), axis=2)
        seen &= excluding[:, None]
        kept_logits = tf.where(seen, tf.constant(-np.inf, logits.dtype), wide_logits)
        top_logits, order = tf.math.top_k(kept_logits, self._k, sorted=True)
        return top_logits, tf.gather(wide_indices, order, batch_dims=1)

    def _top_k_masked(self, logits, indices, excluding):
        """Top k of the logits with every known item of the excluding rows at -inf."""
        rows = tf.broadcast_to(tf.range(tf.shape(indices, out_type=tf.int64)[0])[:, None],
                               tf.shape(indices, out_type=tf.int64))
        # Entries kept (padding, unknown, rows not excluding) hit column 0, which never scores.
        columns = tf.where((indices > 0) & excluding[:, None], indices, 0)
        positions = tf.reshape(tf.stack([rows, columns], axis=-1), [-1, 2])
        masked = tf.tensor_scatter_nd_update(
            logits, positions, tf.fill(tf.shape(positions)[:1], tf.constant(-np.inf, logits.dtype)))
        return blockwise_top_k(masked, self._k)

    def signatures(self) -> dict:
        """The four serving signatures as concrete functions."""
        def ids_spec(dtype):
            return tf.TensorSpec([None, None], dtype, name="item_ids")

        flag_spec = tf.TensorSpec([None], tf.bool, name="exclude_seen")

        @tf.function(input_signature=[ids_spec(tf.string)])
        def string_ids(item_ids):
            return self.recommend(item_ids, None)

        @tf.function(input_signature=[ids_spec(tf.int64)])
        def int64_ids(item_ids):
            return self.recommend(item_ids, None)

        @tf.function(input_signature=[ids_spec(tf.string), flag_spec])
        def string_ids_with_options(item_ids, exclude_seen):
            return self.recommend(item_ids, exclude_seen)

        @tf.function(input_signature=[ids_spec(tf.int64), flag_spec])
        def int64_ids_with_options(item_ids, exclude_seen):
            return self.recommend(item_ids, exclude_seen)

        functions = (string_ids, int64_ids, string_ids_with_options, int64_ids_with_options)
        return {name: fn.get_concrete_function()
                for name, fn in zip(SIGNATURES, functions, strict=True)}


@contextlib.contextmanager
def unrolled_rnns(model: keras.Model):
    """Traces the model's recurrent layers unrolled (same maths, fixed `max_len` steps): for a
    model served through the Keras graph (one `NarmInference` does not reproduce).

    A symbolic loop costs a dozen control-flow ops per step in TF Serving's executor; the 19
    unrolled steps are plain ops that Grappler can fuse.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.RNN)]
    saved = [layer.unroll for layer in layers]
    for layer in layers:
        layer.unroll = True
    try:
        yield
    finally:
        for layer, unroll in zip(layers, saved, strict=True):
            layer.unroll = unroll


def next_version(export_base: str) -> int:
    """1 + the largest integer folder name under `export_base` (1 when there is none)."""
    if not os.path.isdir(export_base):
        return 1
    versions = [int(name) for name in os.listdir(export_base) if name.isdigit()]
    return max(versions, default=0) + 1


def export_model(model: keras.Model, vocabulary: np.ndarray, popularity: np.ndarray,
                 export_base: str, version: int | None = None, k: int = 20,
                 exclude_seen: bool = False, max_len: int = MAX_LEN) -> str:
    """Writes `export_base/<version>/` for TF Serving, atomically; returns that folder.

    Args:
        model: a NARM model from `narm_tf.model.build_narm` (input `item_ids [batch, max_len]`).
        vocabulary: raw item ids, int64 `[N]`: vocabulary index `i` is `vocabulary[i - 1]`.
        popularity: training label counts `[N]`, same order; its top k answer empty sessions.
        export_base: the model's base path in TF Serving (`--model_base_path`).
        version: the version folder; default: the next integer.
        k: number of items returned.
        exclude_seen: whether the two single-input signatures drop the session's own items.
        max_len: the model's session length.
    """
    if k < 1:
        raise ValueError(f"k (--k), the number of recommended items, must be >= 1, got {k}")
    if max_len < 1:
        raise ValueError(f"max_len, the model's session length, must be >= 1, got {max_len}")
    vocabulary = np.asarray(vocabulary, np.int64)
    popularity = np.asarray(popularity)
    _check_vocabulary(vocabulary, popularity)
    os.makedirs(export_base, exist_ok=True)
    version = next_version(export_base) if version is None else int(version)
    if version < 0:
        raise ValueError(f"TF Serving versions are integers >= 0, got {version}")
    final_dir = os.path.join(export_base, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(f"{final_dir} exists: pass another --version or remove it")
    temp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        _write_export(temp_dir, model, vocabulary, popularity, k, exclude_seen, max_len)
        make_readable(temp_dir)  # mkdtemp's 0700 would hide it from a server run as another user
        os.rename(temp_dir, final_dir)  # atomic: TF Serving sees no version or a complete one
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return final_dir


def current_umask() -> int:
    """The process umask (Python can only read it by setting it: 0o077 meanwhile, so a file
    another thread creates in between is never more open than it should be)."""
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def make_readable(root: str, umask: int | None = None) -> None:
    """Gives `root` and everything below it the modes a plain `mkdir` / `open` would:
    folders `0o777 & ~umask`, files `0o666 & ~umask` (0755 / 0644 under umask 022)."""
    umask = current_umask() if umask is None else umask
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def _check_vocabulary(vocabulary, popularity) -> None:
    if len(popularity) != len(vocabulary):
        raise ValueError(f"popularity has {len(popularity)} counts for {len(vocabulary)} items")
    if len(popularity) and np.min(popularity) < 0:
        raise ValueError(f"popularity holds a negative count ({np.min(popularity)})")
    if len(np.unique(vocabulary)) != len(vocabulary):
        raise ValueError("the vocabulary has duplicate raw ids")
    if np.any(vocabulary == 0):
        logging.warning("raw item id 0 is in the vocabulary: the int64 signatures read 0 as "
                        "padding, so only the string signatures can ask for it")


def scoring_model(model: keras.Model) -> keras.Model:
    """Same input -> `{"scores" [b, N + 1], "attention_weights" [b, max_len],
    "attention_share" [b, max_len]}` on the weights of `model`
    (`narm_tf.model.attention_model`)."""
    from narm_tf.model import attention_model

    return attention_model(model)


def _write_export(export_dir, model, vocabulary, popularity, k, exclude_seen, max_len) -> None:
    with tempfile.TemporaryDirectory() as staging:
        vocabulary_file = os.path.join(staging, VOCABULARY_ASSET)
        with open(vocabulary_file, "w") as f:
            f.writelines(f"{item_id}\n" for item_id in vocabulary)
        scoring = scoring_model(model)
        num_scores = scoring(np.ones((1, max_len), np.int32))["scores"].shape[-1]
        if num_scores != len(vocabulary) + 1:
            raise ValueError(f"the model scores {num_scores - 1} items, the vocabulary has "
                             f"{len(vocabulary)}: export with the model_dir's own vocabulary.tsv")
        module = ServingModule(scoring, vocabulary, popularity, vocabulary_file,
                               k, exclude_seen, max_len)
        with unrolled_rnns(scoring):
            signatures = module.signatures()
        tf.saved_model.save(module, export_dir, signatures=signatures)
    write_warmup_requests(export_dir, vocabulary, popularity)


def warmup_inputs(vocabulary: np.ndarray, popularity: np.ndarray) -> dict:
    """Example `item_ids` for the warm-up: sessions of popular items, batch 1 and batch 8."""
    popular = vocabulary[np.argsort(-np.asarray(popularity), kind="stable")[:24]]
    batch = np.resize(popular, (8, 3)).astype(np.int64)
    batch[1:, 0] = 0  # padded rows too
    return {"batch_1": batch[:1], "batch_8": batch}


def write_warmup_requests(export_dir: str, vocabulary: np.ndarray, popularity: np.ndarray,
                          model_name: str = "narm") -> str:
    """`assets.extra/tf_serving_warmup_requests`: PredictionLog records for every signature."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(export_dir, "assets.extra", WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for ids in warmup_inputs(vocabulary, popularity).values():
            for signature in SIGNATURES:
                values = ids if "int64" in signature else np.where(ids == 0, "", ids.astype(str))
                request = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
                request.inputs["item_ids"].CopyFrom(tf.make_tensor_proto(values))
                if signature.endswith("with_options"):
                    flags_ = np.arange(len(ids)) % 2 == 0
                    request.inputs["exclude_seen"].CopyFrom(tf.make_tensor_proto(flags_))
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
    return path


def export_from_model_dir(model_dir: str, export_base: str, version: int | None = None,
                          k: int = 20, exclude_seen: bool = False) -> str:
    """Exports a training run's `best.keras` with its own `vocabulary.tsv`; returns the version
    dir. Refuses (`run_dir.RunFolderError`) a folder whose model, metrics and config do not
    belong to one run."""
    import narm_tf.model  # noqa: F401  (registers the custom layers for load_model)

    run_dir.check_complete(model_dir)
    model = keras.models.load_model(run_dir.path(model_dir, run_dir.BEST_MODEL), compile=False)
    vocabulary, popularity = run_dir.read_vocabulary(model_dir)
    return export_model(model, vocabulary, popularity, export_base, version=version, k=k,
                        exclude_seen=exclude_seen)


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (defined on demand: other modules import this one). Bounds are
    checked when the command line is parsed, before any work: `--k=0` fails naming the flag."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model_dir", None, "Training output folder (best.keras, vocabulary.tsv).",
                        **fv)
    flags.DEFINE_string("export_base", "exports/narm", "TF Serving model base path.", **fv)
    flags.DEFINE_integer("version", None, "Version folder; default: the next integer.",
                         lower_bound=0, **fv)
    flags.DEFINE_integer("k", 20, "Number of recommended items.", lower_bound=1, **fv)
    flags.DEFINE_bool("exclude_seen", False,
                      "Drop the session's own items from serving_default and int64_ids.", **fv)


def main(argv):
    del argv
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required (a narm_tf.train output folder)")
    path = export_from_model_dir(FLAGS.model_dir, FLAGS.export_base, version=FLAGS.version,
                                 k=FLAGS.k, exclude_seen=FLAGS.exclude_seen)
    print(f"exported {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
