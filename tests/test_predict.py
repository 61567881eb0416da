"""narm_tf/predict.py: the command line over an export (SavedModel only, no model code)."""

import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from narm_tf import predict
from narm_tf.model.narm import build_narm
from narm_tf.serving import export_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_ITEMS, K = 12, 5


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """(base path, vocabulary, popularity) of a tiny untrained NARM exported with k=5."""
    keras.utils.set_random_seed(3)
    model = build_narm(NUM_ITEMS, embedding_dim=4, hidden_units=4)
    vocabulary = np.arange(1, NUM_ITEMS + 1, dtype=np.int64) * 1000 + 7
    popularity = np.arange(NUM_ITEMS)[::-1] + 1  # item 1 the most popular
    base = tmp_path_factory.mktemp("exports") / "narm"
    export_lib.export_model(model, vocabulary, popularity, str(base), k=K)
    return base, vocabulary, popularity


def test_resolve_export_dir_picks_latest_version(export, tmp_path):
    base, _, _ = export
    (base / "0").mkdir(exist_ok=True)
    (base / ".tmp-9-x").mkdir(exist_ok=True)
    assert predict.resolve_export_dir(str(base)) == str(base / "1")
    assert predict.resolve_export_dir(str(base / "1")) == str(base / "1")
    with pytest.raises(FileNotFoundError):
        predict.resolve_export_dir(str(tmp_path))


def test_recommend_exclusion_and_attention(export):
    base, vocabulary, _ = export
    session = [str(vocabulary[0]), "424242", str(vocabulary[1])]
    plain = predict.recommend(str(base), session)
    assert plain["top_k_item_ids"].shape == (K,)
    assert np.all(np.diff(plain["top_k_scores"]) <= 0)
    assert list(plain["session_item_ids"][:2]) == session[::2]  # unknown id dropped, in order
    assert set(plain["session_item_ids"][2:]) == {""}
    excluding = predict.recommend(str(base), session, exclude_seen=True)
    assert not set(excluding["top_k_item_ids"]) & set(session)
    kept = [item for item in plain["top_k_item_ids"] if item not in session]
    assert list(excluding["top_k_item_ids"][: len(kept)]) == kept


def test_recommend_empty_session_returns_popular_items(export):
    base, vocabulary, popularity = export
    result = predict.recommend(str(base), [])
    assert list(result["top_k_item_ids"]) == [str(x) for x in vocabulary[:K]]
    np.testing.assert_allclose(result["top_k_scores"], popularity[:K] / popularity.sum(),
                               rtol=1e-6)
    assert "most popular" in predict.format_recommendations(result)


def test_recommend_returns_the_attention_share(export):
    """Each known click's share of the local representation: >= 0, summing to 1 (0 at padding
    and for an empty session), ordered as the clicks, beside the raw alpha."""
    base, vocabulary, _ = export
    result = predict.recommend(str(base), [str(vocabulary[4]), str(vocabulary[2]), "424242"])
    share = result["attention_share"]
    assert share.shape == (19,) and np.all(share[:2] > 0) and np.all(share[2:] == 0)
    np.testing.assert_allclose(share.sum(), 1.0, rtol=1e-5)
    assert np.all(result["attention_weights"][:2] != 0)
    empty = predict.recommend(str(base), [])
    assert np.all(empty["attention_share"] == 0)
    lines = predict.format_recommendations(result).splitlines()
    rows = [line.split() for line in lines[lines.index(
        "attention over the session's known clicks (oldest first):") + 2:]]
    assert [row[0] for row in rows] == [str(vocabulary[4]), str(vocabulary[2])]
    np.testing.assert_allclose([float(row[1].rstrip("%")) for row in rows], share[:2] * 100,
                               atol=0.051)
    np.testing.assert_allclose([float(row[2]) for row in rows],
                               result["attention_weights"][:2], atol=5.1e-5)


def test_command_line_prints_top_k(export):
    base, vocabulary, _ = export
    items = f"{vocabulary[2]},{vocabulary[5]}"
    proc = subprocess.run([sys.executable, "-m", "narm_tf.predict", f"--export_dir={base}",
                           f"--items={items}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = predict.recommend(str(base), items.split(","))
    rows = [line.split() for line in proc.stdout.splitlines()[1: K + 1]]
    assert [row[1] for row in rows] == list(expected["top_k_item_ids"])
    np.testing.assert_allclose([float(row[2]) for row in rows], expected["top_k_scores"],
                               atol=1e-6)
    assert "attention" in proc.stdout


def test_exclusion_with_fewer_items_left_than_k_pads_results(export):
    base, vocabulary, _ = export
    session = [str(x) for x in vocabulary[:10]]  # 12 items, 10 seen, k = 5
    result = predict.recommend(str(base), session, exclude_seen=True)
    assert sorted(result["top_k_item_ids"][:2]) == sorted(str(x) for x in vocabulary[10:])
    assert list(result["top_k_item_ids"][2:]) == ["", "", ""]
    assert np.all(result["top_k_scores"][:2] > 0) and np.all(result["top_k_scores"][2:] == 0)
