"""Publish only a better model: a candidate run is exported as a new TF Serving version only if
its Recall@20 is not worse than the latest version's by more than a margin.

    python -m export.export_saved_model --model_dir=runs/today --export_base=exports/narm \
        --only_if_better [--margin=0.0]

Only a finished candidate run is judged (`run_dir.check_finished`): a run whose training was
killed is refused, naming what it lacks, unless `allow_unfinished` (`--allow_unfinished`).

Both models are scored on the same newest test split (the candidate's dataset unless told
otherwise) through their exported signatures (`int64_ids_with_options`, or
`string_ids_with_options` for a catalogue of string ids; `exclude_seen` off): raw item ids in,
top-k raw ids out, so models with different vocabularies compare fairly (a
target an old model does not know is a miss; a session none of whose clicks it knows gets its
popular items, as served). From the top-k raw ids: Recall@20 = share of test prefixes whose
raw target id is among the first 20; MRR@20 = mean of 1 / (its position, 1-based), 0 when
absent. Ties are ordered as `tf.math.top_k` orders them (on continuous scores, which have no
ties, this matches `narm_tf.evaluate`). The candidate is exported into a hidden `.candidate-*`
folder under the export base (a name TF Serving ignores) and renamed to its version only when
published; when refused, that folder is removed and nothing is written. When another export
took that version meanwhile, the candidate is not published (it was judged against the version
before): FileExistsError, nothing written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import numpy as np

from narm_tf.serving import contract
from narm_tf.training import run_dir

K = 20  # Recall@K and MRR@K of the comparison
NOT_BETTER_EXIT_CODE = 4  # the command's exit code when it refuses to publish


@dataclasses.dataclass
class Outcome:
    """What `publish_if_better` did: the scores (percent) and the version written, if any."""

    published: bool
    version: int
    candidate: dict
    current: dict | None  # None: no version under the export base yet
    current_version: int | None
    path: str | None  # the new version folder when published


def raw_test_split(dataset: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split in raw ids (`raw_ids`): sessions `[n, 19]` and targets `[n]`."""
    from narm_tf.data import dataset as data

    built = data.Dataset(dataset, data_dir)
    test = built.split("test")
    return raw_ids(built.vocabulary, test.prefixes, test.labels)


def raw_ids(vocabulary: np.ndarray, prefixes: np.ndarray, labels: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary indices -> raw ids: int64 with 0 as padding, or (a catalogue of string ids)
    str objects with "" as padding."""
    if run_dir.id_kind(vocabulary) == "string":
        ids = np.array([""] + run_dir.id_keys(vocabulary), dtype=object)
    else:
        ids = np.concatenate([[0], np.asarray(vocabulary, np.int64)]).astype(np.int64)
    return ids[prefixes], ids[labels]


def export_id_kind(signatures) -> str:
    """"int64" for an export with the int64 signatures (an integer catalogue), else "string"."""
    return "int64" if contract.SIGNATURE_INT64_OPTIONS in signatures else "string"


def target_ranks(top: np.ndarray, targets: np.ndarray, what: str) -> np.ndarray:
    """1-based position of each raw target `[n]` among the top-k raw ids `[n, k]` (0: absent),
    ints or strings alike (bytes, as a string signature returns them, read as UTF-8).
    ValueError naming `what` when one side holds integer ids and the other string ids."""
    top_keys, target_keys = run_dir.matching_keys(np.ravel(top), targets,
                                                  f"{what}'s top-k", "the test split")
    top_keys = np.array(top_keys, dtype=object).reshape(np.shape(top))
    hit = top_keys == np.array(target_keys, dtype=object)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def evaluate_export(export_dir: str, sessions: np.ndarray, targets: np.ndarray,
                    batch_size: int = 1024) -> dict:
    """Recall@20 and MRR@20 (percent) of an export's top-k raw ids against raw targets
    (`raw_ids`), through the export's signature for their kind of id. ValueError when the
    export serves the other kind (a model of an integer catalogue against string ids)."""
    import tensorflow as tf

    signatures = tf.saved_model.load(export_dir).signatures
    kind, wanted = export_id_kind(signatures), run_dir.id_kind(targets)
    if len(targets) and kind != wanted:
        raise ValueError(f"{export_dir} serves {run_dir.ID_KIND_WORDS[kind]} item ids, the "
                         f"test split holds {run_dir.ID_KIND_WORDS[wanted]} ids: a model of an "
                         "integer catalogue and one of a string catalogue cannot be compared")
    signature = signatures[contract.SIGNATURE_INT64_OPTIONS if kind == "int64"
                           else contract.SIGNATURE_STRING_OPTIONS]
    ranks = []
    for start in range(0, len(targets), batch_size):
        batch = sessions[start:start + batch_size]
        ids = tf.constant(batch, tf.int64) if kind == "int64" else tf.constant(
            batch.astype(str), tf.string)
        top = signature(item_ids=ids,
                        exclude_seen=tf.zeros(len(batch), tf.bool))["top_k_item_ids"].numpy()
        if top.shape[1] < K:
            raise ValueError(f"{export_dir} returns the top {top.shape[1]} items: Recall@{K} "
                             f"needs an export with k >= {K}")
        ranks.append(target_ranks(top[:, :K], targets[start:start + batch_size], export_dir))
    ranks = np.concatenate(ranks)
    found = ranks > 0
    return {f"recall@{K}": float(100 * found.mean()),
            f"mrr@{K}": float(100 * np.where(found, 1 / np.maximum(ranks, 1), 0).mean()),
            "count": int(len(ranks))}


def is_good_enough(candidate: dict, current: dict | None, margin: float) -> bool:
    """Whether the candidate's Recall@20 is at most `margin` points below the current one's."""
    return current is None or candidate[f"recall@{K}"] >= current[f"recall@{K}"] - margin


def publish_if_better(model_dir: str, export_base: str, margin: float = 0.0,
                      k: int = K, exclude_seen: bool = False, dataset: str | None = None,
                      data_dir: str | None = None, version: int | None = None,
                      allow_unfinished: bool = False, **scoring) -> Outcome:
    """Exports `model_dir`'s best model as the next version of `export_base` only if it is
    good enough (`is_good_enough`) against the latest version on the test split of `dataset`
    (default: the candidate run's); returns what happened. A run that has not finished is
    refused (`run_dir.RunFolderError`) unless `allow_unfinished`. `scoring`:
    `export_lib.export_model`'s `scoring`, `candidate_dims`, `candidates` (the candidate is
    judged as it will serve)."""
    from narm_tf.serving import export_lib

    if margin < 0:
        raise ValueError(f"--margin must be >= 0 points of Recall@{K}, got {margin}")
    if k < K:
        raise ValueError(f"--k={k}: comparing by Recall@{K} needs an export with k >= {K}")
    config, _ = run_dir.check_finished(model_dir, allow_unfinished, export_lib.ALLOW_UNFINISHED)
    sessions, targets = raw_test_split(dataset or config["dataset"], data_dir or config["data_dir"])
    existing = contract.versions(export_base)
    current_version = max(existing, default=None)
    version = contract.next_version(export_base) if version is None else int(version)
    if version in existing:
        raise FileExistsError(f"{os.path.join(export_base, str(version))} exists: pass "
                              "another --version or none")
    current = None if current_version is None else evaluate_export(
        os.path.join(export_base, str(current_version)), sessions, targets)
    os.makedirs(export_base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".candidate-", dir=export_base)
    try:
        staged = export_lib.export_from_model_dir(model_dir, staging, version=version, k=k,
                                                  exclude_seen=exclude_seen,
                                                  allow_unfinished=allow_unfinished, **scoring)
        candidate = evaluate_export(staged, sessions, targets)
        published = is_good_enough(candidate, current, margin)
        path = None
        if published:  # atomic; refused when another export took the version meanwhile
            path = claim(staged, export_base, version, current_version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Outcome(published, version, candidate, current, current_version, path)


def claim(staged: str, export_base: str, version: int, current_version: int | None) -> str:
    """Renames the judged candidate to `export_base/<version>` (`export_lib.claim_version`);
    FileExistsError saying why when another export took that version meanwhile."""
    from narm_tf.serving import export_lib

    try:
        return export_lib.claim_version(staged, export_base, version)
    except FileExistsError:
        judged = ("no version" if current_version is None
                  else f"version {current_version}")
        raise FileExistsError(
            f"{os.path.join(export_base, str(version))} was written by another export while "
            f"the candidate was judged against {judged}: not published; rerun to judge it "
            "against the newer version") from None


def describe(outcome: Outcome, model_dir: str, margin: float) -> str:
    """The lines the command prints: both scores, then the decision."""
    def scores(result):
        return (f"Recall@{K} {result[f'recall@{K}']:6.2f}%   MRR@{K} {result[f'mrr@{K}']:6.2f}%"
                f"   ({result['count']} test prefixes)")

    lines = [f"candidate {model_dir}: {scores(outcome.candidate)}"]
    if outcome.current is None:
        lines.append("no version published yet")
    else:
        lines.append(f"current version {outcome.current_version}: {scores(outcome.current)}")
    if outcome.published:
        lines.append(f"published version {outcome.version}: {outcome.path}")
    else:
        lines.append(f"not published: the candidate's Recall@{K} is more than {margin} points "
                     f"below version {outcome.current_version}'s; nothing written")
    return "\n".join(lines)
