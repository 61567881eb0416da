"""The export's file contract, in one place: signature, input and output names, the asset and
warm-up file names, and TF Serving's integer version folders.

Imported by the exporter, `narm_tf.predict` and the gRPC client; it needs no TensorFlow.
An integer catalogue has all four signatures; a catalogue of string ids (SKUs) the two string
ones, which answer with the log's own strings.
"""

from __future__ import annotations

import os

import numpy as np

SIGNATURE_STRING = "serving_default"
SIGNATURE_INT64 = "int64_ids"
SIGNATURE_STRING_OPTIONS = "string_ids_with_options"
SIGNATURE_INT64_OPTIONS = "int64_ids_with_options"
SIGNATURES = (SIGNATURE_STRING, SIGNATURE_INT64, SIGNATURE_STRING_OPTIONS, SIGNATURE_INT64_OPTIONS)
ITEM_IDS = "item_ids"
EXCLUDE_SEEN = "exclude_seen"
OUTPUTS = ("top_k_item_ids", "top_k_scores", "attention_weights", "attention_share",
           "session_item_ids")
VOCABULARY_ASSET = "vocabulary.txt"          # under assets/
WARMUP_FILE = "tf_serving_warmup_requests"   # under assets.extra/
SAVED_MODEL = "saved_model.pb"


STRING_SIGNATURES = (SIGNATURE_STRING, SIGNATURE_STRING_OPTIONS)


def is_string_vocabulary(vocabulary) -> bool:
    """True for raw ids that are strings (an object array of str, or str/bytes arrays, as a
    string signature returns them), False for integer ids."""
    array = np.asarray(vocabulary)
    return array.dtype == np.dtype(object) or array.dtype.kind in "SU"


def vocabulary_array(ids) -> np.ndarray:
    """Raw ids as stored (ints, or strings) -> int64 `[N]`, or an object array of the strings.

    A string catalogue has only the string signatures: its ids are not numbers (`SKU-6475A`)
    or lose their zero padding as numbers (`00215336475`).
    """
    ids = list(ids)
    if any(isinstance(value, str) for value in ids):
        return np.array([str(value) for value in ids], dtype=object)
    return np.asarray(ids, np.int64)


def signatures_of(vocabulary) -> tuple[str, ...]:
    """The signatures an export of this vocabulary has: all four, or the string ones."""
    return STRING_SIGNATURES if is_string_vocabulary(vocabulary) else SIGNATURES


def signature_name(int64: bool, with_options: bool) -> str:
    """The signature for that id dtype, with or without the `exclude_seen` input."""
    if with_options:
        return SIGNATURE_INT64_OPTIONS if int64 else SIGNATURE_STRING_OPTIONS
    return SIGNATURE_INT64 if int64 else SIGNATURE_STRING


def versions(export_base: str) -> list[int]:
    """The integer version folders under `export_base` (TF Serving's layout), unsorted."""
    if not os.path.isdir(export_base):
        return []
    return [int(name) for name in os.listdir(export_base) if name.isdigit()]


def next_version(export_base: str) -> int:
    """1 + the largest integer folder name under `export_base` (1 when there is none)."""
    return max(versions(export_base), default=0) + 1


def resolve_export_dir(path: str) -> str:
    """A version folder as given, or the highest integer version under a base path."""
    if os.path.exists(os.path.join(path, SAVED_MODEL)):
        return path
    found = versions(path)
    if not found:
        raise FileNotFoundError(f"{path} holds neither {SAVED_MODEL} nor version folders")
    return os.path.join(path, str(max(found)))
