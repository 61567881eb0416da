"""narm_tf.training.run_dir: the run folder's lock, identity, resume rules and consistency
checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from narm_tf.training import run_dir
from narm_tf.training.run_dir import RunFolderError

FLAGS_ = {"dataset": "yoochoose/yoochoose_full", "learning_rate": 1e-3, "embedding_dim": 50,
          "epochs": 30, "export_base": "", "overwrite": False}


def _identity(**changes):
    return run_dir.new_identity({**FLAGS_, **changes}, "2.0.0", 120)


def _write(model_dir, name, value):
    run_dir.write_json(os.path.join(model_dir, name), value)


def _finished_run(model_dir, identity):
    """A folder as a finished training run leaves it (files stand in for the model)."""
    os.makedirs(model_dir, exist_ok=True)
    _write(model_dir, run_dir.CONFIG, identity)
    _write(model_dir, run_dir.BEST_RECORD, {"run_id": identity["run_id"], "epoch": 2})
    _write(model_dir, run_dir.METRICS, {"run_id": identity["run_id"]})
    open(os.path.join(model_dir, run_dir.BEST_MODEL), "w").close()
    run_dir.write_vocabulary(model_dir, [11, 12], [3, 1])


def test_new_folder_starts_a_new_run(tmp_path):
    identity = _identity()
    config, resuming = run_dir.start(str(tmp_path), identity, overwrite=False)
    assert config == identity and not resuming
    assert len(identity["run_id"]) == 32 and identity["vocabulary_size"] == 120


def test_killed_run_with_same_settings_resumes_with_its_run_id(tmp_path):
    old = _identity()
    _write(tmp_path, run_dir.CONFIG, old)
    os.makedirs(tmp_path / run_dir.BACKUP)
    config, resuming = run_dir.start(str(tmp_path), _identity(epochs=40, export_base="e"),
                                     overwrite=False)
    assert resuming and config["run_id"] == old["run_id"] and config["epochs"] == 40


def test_a_config_written_before_a_flag_existed_holds_its_default():
    old = _identity()  # FLAGS_ has no learning_rate_decay, as a config.json written before it
    assert run_dir.differences(old, {**old, "learning_rate_decay": 1.0}) == {}
    assert run_dir.differences(old, {**old, "learning_rate_decay": 0.8}) == {
        "learning_rate_decay": (1.0, 0.8)}


def test_changed_settings_are_refused_naming_each_flag(tmp_path):
    _write(tmp_path, run_dir.CONFIG, _identity())
    os.makedirs(tmp_path / run_dir.BACKUP)
    with pytest.raises(RunFolderError) as error:
        run_dir.start(str(tmp_path), _identity(learning_rate=0.01, embedding_dim=64),
                      overwrite=False)
    message = str(error.value)
    assert "--learning_rate: 0.001 there, 0.01 now" in message
    assert "--embedding_dim: 50 there, 64 now" in message
    assert "--overwrite" in message and "--epochs" not in message.split("(only")[0]


def test_another_dataset_or_version_is_refused(tmp_path):
    _write(tmp_path, run_dir.CONFIG, _identity())
    other = run_dir.new_identity({**FLAGS_, "dataset": "diginetica"}, "2.0.0", 309)
    with pytest.raises(RunFolderError, match="--dataset: 'yoochoose/yoochoose_full' there, "
                                             "'diginetica' now"):
        run_dir.start(str(tmp_path), other, overwrite=False)
    newer = run_dir.new_identity(FLAGS_, "3.0.0", 120)
    with pytest.raises(RunFolderError, match="--dataset_version: '2.0.0' there, '3.0.0' now"):
        run_dir.start(str(tmp_path), newer, overwrite=False)


def test_finished_run_is_kept_unless_overwrite_clears_it(tmp_path):
    model_dir = str(tmp_path / "run")
    _finished_run(model_dir, _identity())
    (tmp_path / "run" / run_dir.HISTORY).write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(RunFolderError, match="finished run"):
        run_dir.start(model_dir, _identity(), overwrite=False)
    new = _identity(embedding_dim=64)
    config, resuming = run_dir.start(model_dir, new, overwrite=True)
    assert config == new and not resuming
    assert sorted(os.listdir(model_dir)) == []  # results and the temporary folder are gone


def test_run_killed_in_its_refit_resumes_but_a_finished_refit_run_is_kept(tmp_path):
    """final.json of the folder's run marks a --refit begun: resumed (the selection is done)
    even with no backup; once metrics.json is written the run is finished."""
    old = _identity(refit=True)
    model_dir = str(tmp_path / "run")
    _finished_run(model_dir, old)
    os.remove(os.path.join(model_dir, run_dir.METRICS))
    _write(model_dir, run_dir.FINAL_RECORD, {"run_id": old["run_id"], "finished": False})
    config, resuming = run_dir.start(model_dir, _identity(refit=True), overwrite=False)
    assert resuming and config["run_id"] == old["run_id"]
    with pytest.raises(RunFolderError, match="no finished final.keras"):
        run_dir.check_complete(model_dir)
    _write(model_dir, run_dir.FINAL_RECORD, {"run_id": old["run_id"], "finished": True})
    open(os.path.join(model_dir, run_dir.FINAL_MODEL), "w").close()
    assert run_dir.check_complete(model_dir)["run_id"] == old["run_id"]
    assert run_dir.delivered_model(model_dir, old).endswith(run_dir.FINAL_MODEL)
    _write(model_dir, run_dir.METRICS, {"run_id": old["run_id"]})
    with pytest.raises(RunFolderError, match="finished run"):
        run_dir.start(model_dir, _identity(refit=True), overwrite=False)
    # Another run's final.json resumes nothing: the folder restarts afresh.
    other = str(tmp_path / "other")
    os.makedirs(other)
    _write(other, run_dir.CONFIG, _identity(refit=True))
    _write(other, run_dir.FINAL_RECORD, {"run_id": "someone else", "finished": False})
    assert run_dir.start(other, _identity(refit=True), overwrite=False)[1] is False


def test_run_killed_before_its_first_backup_restarts_afresh(tmp_path):
    _write(tmp_path, run_dir.CONFIG, _identity())
    (tmp_path / run_dir.HISTORY).write_text("epoch,loss\n")
    new = _identity()
    config, resuming = run_dir.start(str(tmp_path), new, overwrite=False)
    assert not resuming and config["run_id"] == new["run_id"]
    assert not (tmp_path / run_dir.HISTORY).exists()


def test_results_without_config_are_not_taken_for_a_run(tmp_path):
    open(tmp_path / run_dir.BEST_MODEL, "w").close()
    with pytest.raises(RunFolderError, match="best.keras but no config.json"):
        run_dir.start(str(tmp_path), _identity(), overwrite=False)


def test_check_complete_refuses_parts_of_other_runs(tmp_path):
    model_dir = str(tmp_path)
    identity = _identity()
    _finished_run(model_dir, identity)
    assert run_dir.check_complete(model_dir, need_metrics=True)["run_id"] == identity["run_id"]

    _write(model_dir, run_dir.METRICS, {"run_id": "other"})
    with pytest.raises(RunFolderError, match="metrics.json belongs to run other"):
        run_dir.check_complete(model_dir)
    _write(model_dir, run_dir.METRICS, {"run_id": identity["run_id"]})
    _write(model_dir, run_dir.BEST_RECORD, {"run_id": "old", "epoch": 3})
    with pytest.raises(RunFolderError, match="best.keras belongs to run old"):
        run_dir.check_complete(model_dir)
    os.remove(os.path.join(model_dir, run_dir.BEST_RECORD))
    with pytest.raises(RunFolderError, match="has not finished an epoch"):
        run_dir.check_complete(model_dir)
    _write(model_dir, run_dir.CONFIG, FLAGS_)  # an older narm-tf's config.json
    with pytest.raises(RunFolderError, match="no run_id"):
        run_dir.check_complete(model_dir)


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    model_dir = str(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from narm_tf.training import run_dir\n"
         "with run_dir.locked(sys.argv[1]):\n"
         "    open(sys.argv[1] + '/config.json', 'w').close(); print('held', flush=True);"
         " time.sleep(60)", model_dir],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"in use by another training run \\(pid "
                                                 f"{holder.pid} on host "):
            with run_dir.locked(model_dir):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_dir.locked(model_dir):  # a killed holder leaves no lock behind
        pass


def test_lock_of_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    model_dir = tmp_path / "new"
    with pytest.raises(ValueError):
        with run_dir.locked(str(model_dir)):
            raise ValueError("no dataset")
    assert not model_dir.exists()


def test_truncate_history_keeps_earlier_epochs_only(tmp_path):
    (tmp_path / run_dir.HISTORY).write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.5\n")
    run_dir.truncate_history(str(tmp_path), 2)
    assert (tmp_path / run_dir.HISTORY).read_text() == "epoch,loss\n0,3.0\n1,2.0\n"


def test_vocabulary_round_trips(tmp_path):
    run_dir.write_vocabulary(str(tmp_path), [214536502, 7], [5, 0])
    vocabulary, counts = run_dir.read_vocabulary(str(tmp_path))
    np.testing.assert_array_equal(vocabulary, [214536502, 7])
    np.testing.assert_array_equal(counts, [5, 0])
    assert json.dumps(vocabulary.tolist()) == "[214536502, 7]"


def test_a_killed_warm_started_run_resumes_only_from_the_same_source(tmp_path):
    """--warm_start_from is identity: the same source resumes (from backup/, not warm-started
    again), another source is refused naming the flag; --overwrite clears warm_start.tsv."""
    old = _identity(warm_start_from="runs/day1")
    _write(tmp_path, run_dir.CONFIG, old)
    os.makedirs(tmp_path / run_dir.BACKUP)
    open(tmp_path / run_dir.WARM_START_MAP, "w").close()
    config, resuming = run_dir.start(str(tmp_path), _identity(warm_start_from="runs/day1"),
                                     overwrite=False)
    assert resuming and config["run_id"] == old["run_id"]
    with pytest.raises(RunFolderError, match="--warm_start_from: 'runs/day1' there, "
                                             "'runs/day0' now"):
        run_dir.start(str(tmp_path), _identity(warm_start_from="runs/day0"), overwrite=False)
    run_dir.start(str(tmp_path), _identity(), overwrite=True)
    assert not os.path.exists(tmp_path / run_dir.WARM_START_MAP)


def _killed_run(model_dir, epochs_done, **changes):
    """A run killed after `epochs_done` epochs of 12 (patience 5, best at epoch 2): best.keras
    and its record, history.csv and backup/, but no metrics.json."""
    identity = _identity(epochs=12, patience=5, **changes)
    _finished_run(model_dir, identity)
    os.remove(os.path.join(model_dir, run_dir.METRICS))
    rows = "".join(f"{epoch},1.0\n" for epoch in range(epochs_done))
    with open(os.path.join(model_dir, run_dir.HISTORY), "w") as f:
        f.write("epoch,loss\n" + rows)
    os.makedirs(os.path.join(model_dir, run_dir.BACKUP))
    return identity


def test_a_run_killed_midway_is_unfinished_naming_what_is_missing_and_the_resume(tmp_path):
    model_dir = str(tmp_path / "run")
    identity = _killed_run(model_dir, 3)
    assert run_dir.check_complete(model_dir)["run_id"] == identity["run_id"]  # consistent
    with pytest.raises(RunFolderError) as raised:
        run_dir.check_finished(model_dir, opt_in="--allow_unfinished")
    message = str(raised.value)
    assert f"{model_dir} holds an unfinished training run ({identity['run_id']})" in message
    assert "no metrics.json, the file a run writes last: training stopped after epoch 3 of " \
           "12 (history.csv)" in message
    assert "Rerun the narm_tf.train command that wrote it (same --model_dir and flags) to " \
           "finish it: it resumes where it stopped" in message
    assert message.endswith("or pass --allow_unfinished to use its best.keras as it is")
    config, missing = run_dir.check_finished(model_dir, allow_unfinished=True)
    assert config["run_id"] == identity["run_id"] and len(missing) == 1
    # Past best + patience but backup/ left: a resumed run (early stopping restarts its
    # count), still stopped midway.
    resumed = str(tmp_path / "resumed")
    _killed_run(resumed, 8)
    with pytest.raises(RunFolderError, match="training stopped after epoch 8 of 12 "):
        run_dir.check_finished(resumed)


def test_an_early_stopped_run_is_finished_and_an_old_finished_folder_too(tmp_path):
    """Early stopping at epoch 7 of 12 (best 2, patience 5) finishes a run like the epoch cap:
    metrics.json decides. A folder written before this check (no patience in config.json)
    counts as finished alike; killed while testing, its message says training had ended."""
    model_dir = str(tmp_path / "run")
    identity = _killed_run(model_dir, 7)
    os.rmdir(os.path.join(model_dir, run_dir.BACKUP))  # Keras deletes it when fit ends
    with pytest.raises(RunFolderError, match="training ended after epoch 7 \\(history.csv\\) "
                                             "but the run stopped before its model was tested"
                                             ".*no backup/ is left to resume from"):
        run_dir.check_finished(model_dir)
    _write(model_dir, run_dir.METRICS, {"run_id": identity["run_id"]})
    assert run_dir.check_finished(model_dir) == (identity, [])
    old = str(tmp_path / "old")
    _finished_run(old, run_dir.new_identity({"dataset": "diginetica"}, "1.0.0", 2))
    assert run_dir.check_finished(old)[1] == []


def test_a_refit_run_is_finished_only_with_its_final_model(tmp_path):
    model_dir = str(tmp_path / "run")
    identity = _killed_run(model_dir, 12, refit=True)
    _write(model_dir, run_dir.FINAL_RECORD, {"run_id": identity["run_id"], "finished": False})
    with pytest.raises(RunFolderError) as raised:
        run_dir.check_finished(model_dir)
    assert f"no finished final.keras of run {identity['run_id']}: its --refit training has " \
           "not ended; no metrics.json, the file a run writes last: its model was not " \
           "tested" in str(raised.value)
    assert "it resumes where it stopped" in str(raised.value)
    _, missing = run_dir.check_finished(model_dir, allow_unfinished=True)
    assert len(missing) == 2
    assert run_dir.available_model(model_dir, identity).endswith(run_dir.BEST_MODEL)
    _write(model_dir, run_dir.FINAL_RECORD, {"run_id": identity["run_id"], "finished": True})
    open(os.path.join(model_dir, run_dir.FINAL_MODEL), "w").close()
    _write(model_dir, run_dir.METRICS, {"run_id": identity["run_id"]})
    assert run_dir.check_finished(model_dir)[1] == []
    assert run_dir.available_model(model_dir, identity).endswith(run_dir.FINAL_MODEL)


def test_matching_keys_of_string_and_integer_vocabularies():
    """String ids match as written ("00215336475" is not "215336475"; bytes read as UTF-8),
    integers as integers; an integer vocabulary is never matched against a string one."""
    old = np.array(["SKU-6475A", "00215336475"], dtype=object)
    new = np.array([b"00215336475", b"215336475"], dtype=object)
    assert run_dir.matching_keys(old, new, "old", "new") == (
        ["SKU-6475A", "00215336475"], ["00215336475", "215336475"])
    assert run_dir.matching_keys(np.array([7, 215336475]), np.array([215336475], np.int64),
                                 "old", "new") == ([7, 215336475], [215336475])
    with pytest.raises(ValueError, match="old holds integer item ids, new string ids: an integer "
                                         "catalogue and a string catalogue"):
        run_dir.matching_keys(np.array([215336475]), new, "old", "new")
