"""narm_tf.serving.publish and `export_saved_model --only_if_better`: the window-1 model, then
a warm-started window-2 model (better: it knows the new items), then a worse one (shuffled
embedding rows), all scored through real SavedModels on window 2's test split."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_warm_start import WINDOW_2, runs  # noqa: F401  (the two trained runs)

from conftest import ROOT


def shuffled_copy(model_dir, target) -> str:
    """A copy of a run whose item embedding rows 1..N are permuted: a model worse on purpose
    (same vocabulary, same run identity, items scored with other items' rows)."""
    import keras

    import narm_tf.model.narm  # noqa: F401
    from narm_tf.training import run_dir

    shutil.copytree(model_dir, target)
    path = run_dir.path(str(target), run_dir.BEST_MODEL)
    model = keras.models.load_model(path, compile=False)
    embedding = model.get_layer("item_embedding").embeddings
    rows = keras.ops.convert_to_numpy(embedding)
    rows[1:] = rows[1:][np.random.default_rng(0).permutation(len(rows) - 1)]
    embedding.assign(rows)
    model.save(path)
    return str(target)


@pytest.fixture(scope="module")
def shuffled(warm_start_runs, tmp_path_factory):
    """`shuffled_copy` of the warm run, made once for the tests that only read it."""
    return shuffled_copy(warm_start_runs["warm"], tmp_path_factory.mktemp("worse") / "shuffled")


@pytest.fixture(scope="module")
def warm_export(warm_start_runs, tmp_path_factory):
    """(export base, its version 1): the warm run exported once for the tests that only read
    it or copy it."""
    from narm_tf.serving import export_lib

    base = tmp_path_factory.mktemp("warm_export") / "exports"
    return base, export_lib.export_from_model_dir(warm_start_runs["warm"], str(base))


def test_publishes_a_better_model_and_refuses_a_worse_one(runs, shuffled, tmp_path):  # noqa: F811
    from narm_tf.serving import publish

    base = str(tmp_path / "exports")
    first = publish.publish_if_better(runs["old"], base, dataset=WINDOW_2,
                                      data_dir=runs["data_dir"])
    assert first.published and first.version == 1 and first.current is None
    better = publish.publish_if_better(runs["warm"], base)  # its own dataset: window 2
    assert better.published and better.version == 2 and better.current_version == 1
    assert better.candidate["recall@20"] > better.current["recall@20"]
    assert better.current["count"] == better.candidate["count"] == first.candidate["count"]
    worse = publish.publish_if_better(shuffled, base)
    assert not worse.published and worse.current_version == 2 and worse.path is None
    assert worse.candidate["recall@20"] < better.candidate["recall@20"] - 10
    assert sorted(os.listdir(base)) == ["1", "2"]  # no version 3, no staging folder left


def test_export_scores_match_the_training_runs_test_metrics(runs, warm_export):  # noqa: F811
    """Top-k raw ids from the SavedModel give metrics.json's Recall@20 and MRR@20 (the model's
    own vocabulary: every target known; continuous scores: no ties)."""
    from narm_tf.serving import publish
    from narm_tf.training import run_dir

    _, exported = warm_export
    sessions, targets = publish.raw_test_split(WINDOW_2, runs["data_dir"])
    scores = publish.evaluate_export(exported, sessions, targets, batch_size=300)
    test = run_dir.read_json(runs["warm"], run_dir.METRICS)["test"]
    assert scores["count"] == test["count"]
    assert scores["recall@20"] == pytest.approx(test["recall@20"], abs=0.01)
    assert scores["mrr@20"] == pytest.approx(test["mrr@20"], abs=0.01)


def test_cli_refuses_a_worse_model_with_exit_code_4(warm_export, shuffled, tmp_path):
    base = tmp_path / "exports"
    shutil.copytree(warm_export[0], base)  # version 1: the warm run's export
    worse = shuffled
    result = subprocess.run(
        [sys.executable, "-m", "export.export_saved_model", f"--model_dir={worse}",
         f"--export_base={base}", "--only_if_better", "--margin=0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 4, result.stderr[-3000:]
    assert f"candidate {worse}: Recall@20" in result.stdout
    assert "current version 1: Recall@20" in result.stdout
    assert "not published: the candidate's Recall@20 is more than 0.5 points below version " \
           "1's; nothing written" in result.stdout
    assert sorted(os.listdir(base)) == ["1"]


@pytest.mark.parametrize("candidate, current, margin, expected", [
    (50.0, 50.0, 0.0, True),   # equal is not worse
    (49.95, 50.0, 0.0, False),
    (49.95, 50.0, 0.1, True),  # within the margin
    (49.85, 50.0, 0.1, False),
    (10.0, None, 0.0, True),   # nothing published yet
])
def test_is_good_enough(candidate, current, margin, expected):
    from narm_tf.serving import publish

    current = None if current is None else {"recall@20": current}
    assert publish.is_good_enough({"recall@20": candidate}, current, margin) is expected


def test_bad_margin_and_k_are_named(runs, tmp_path):  # noqa: F811
    from narm_tf.serving import publish

    with pytest.raises(ValueError, match="--margin must be >= 0"):
        publish.publish_if_better(runs["warm"], str(tmp_path), margin=-1)
    with pytest.raises(ValueError, match="--k=10: comparing by Recall@20 needs an export"):
        publish.publish_if_better(runs["warm"], str(tmp_path), k=10)


def test_an_unfinished_candidate_is_refused_and_nothing_written(runs, tmp_path):  # noqa: F811
    """A nightly run whose training was killed (no metrics.json) is never published."""
    from narm_tf.serving import publish
    from narm_tf.training import run_dir

    killed = tmp_path / "killed"
    shutil.copytree(runs["warm"], killed)
    (killed / run_dir.METRICS).unlink()
    base = tmp_path / "exports"
    with pytest.raises(run_dir.RunFolderError) as raised:
        publish.publish_if_better(str(killed), str(base))
    message = str(raised.value)
    assert f"{killed} holds an unfinished training run" in message
    assert "no metrics.json, the file a run writes last" in message
    assert "Rerun the narm_tf.train command that wrote it" in message
    assert "or pass --allow_unfinished" in message
    assert not base.exists()


def test_string_ids_are_matched_as_written():
    """A catalogue of string ids: sessions and targets in raw strings ("" pads); the top-k of
    a string signature (bytes) ranks them; "00215336475" is not "215336475"; integer targets
    against a string top-k are refused."""
    from narm_tf.serving import publish

    vocabulary = np.array(["SKU-6475A", "00215336475", "215336475"], dtype=object)
    sessions, targets = publish.raw_ids(vocabulary, np.array([[1, 2, 0], [3, 0, 0]]),
                                        np.array([2, 1]))
    assert sessions.tolist() == [["SKU-6475A", "00215336475", ""], ["215336475", "", ""]]
    assert targets.tolist() == ["00215336475", "SKU-6475A"]
    top = np.array([[b"215336475", b"00215336475"], [b"00215336475", b""]], dtype=object)
    assert publish.target_ranks(top, targets, "export 1").tolist() == [2, 0]
    sessions, targets = publish.raw_ids(np.array([11, 215336475]), np.array([[2, 0]]),
                                        np.array([1]))
    assert sessions.tolist() == [[215336475, 0]] and targets.tolist() == [11]
    assert publish.target_ranks(np.array([[7, 11]]), targets, "export 1").tolist() == [2]
    with pytest.raises(ValueError, match="export 1's top-k holds string item ids, the test "
                                         "split integer ids"):
        publish.target_ranks(top, np.array([215336475, 11]), "export 1")
