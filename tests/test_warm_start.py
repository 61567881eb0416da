"""narm_tf.training.warm_start: a synthetic log in two windows (end_date), the later one with
new items; train on window 1, warm start on windows 1+2 (real TFDS builds, real model.fit)."""

import csv
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

WINDOW_1 = "yoochoose/to_0404"  # clicks up to 2014-04-04 (UTC), test day 04-04
WINDOW_2 = "yoochoose/yoochoose_full"  # the whole log, 2014-04-01 .. 04-07
FRESH_OFFSET = 900_000_000  # a fresh raw id: old id + this
SMALL = {"batch_size": 64, "embedding_dim": 16, "hidden_units": 16, "eval_batch_size": 256,
         "steps_per_execution": 4, "jit_compile": "off"}  # no XLA compile per run


def write_two_windows(manual) -> list[int]:
    """A synthetic log whose 8 most clicked items take fresh raw ids from 2014-04-05 on (as if
    the shop replaced them): window 2 introduces them. Returns the fresh ids."""
    from narm_tf import synthetic

    path = synthetic.write_synthetic_clicks(str(manual), num_sessions=1500, num_items=120,
                                            seed=3)
    rows = [line.split(",") for line in open(path).read().splitlines()]
    items, counts = np.unique([int(row[2]) for row in rows], return_counts=True)
    replaced = set(items[np.argsort(-counts, kind="stable")[:8]].tolist())
    with open(path, "w") as f:
        for session, time, item, category in rows:
            if int(item) in replaced and time[:10] >= "2014-04-05":
                item = str(int(item) + FRESH_OFFSET)
            f.write(f"{session},{time},{item},{category}\n")
    return sorted(item + FRESH_OFFSET for item in replaced)


def build_windows(root) -> tuple[str, list[int]]:
    """Both windows built with the real YOOCHOOSE builder; returns (data_dir, fresh ids)."""
    from narm_tf.data import dataset as data
    from tfds_builders.click_log import click_log_dataset_builder as click_log
    from tfds_builders.yoochoose import yoochoose_dataset_builder as yoochoose

    manual = root / "manual"
    manual.mkdir()
    fresh = write_two_windows(manual)
    data_dir = str(root / "tfds")
    config = click_log.ClickLogConfig(name="to_0404", base="yoochoose_full",
                                      end_date="2014-04-04")
    yoochoose.Builder(config=config, data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    data.build_dataset("yoochoose", str(manual), data_dir, config="yoochoose_full")
    return data_dir, fresh


def train_run(data_dir, model_dir, dataset, **overrides) -> dict:
    from narm_tf import config as config_lib
    from narm_tf.training import trainer

    config = config_lib.default_config(**{"dataset": dataset, "data_dir": data_dir,
                                          "model_dir": str(model_dir), **SMALL, **overrides})
    return trainer.train(config)


def make_runs(root) -> dict:
    """data_dir, fresh ids, the window-1 run and a warm-started window-2 run, in folder `root`."""
    data_dir, fresh = build_windows(root)
    old, warm = root / "old", root / "warm"
    train_run(data_dir, old, WINDOW_1, epochs=4)
    train_run(data_dir, warm, WINDOW_2, epochs=2, warm_start_from=str(old))
    return {"data_dir": data_dir, "fresh": fresh, "old": str(old), "warm": str(warm)}


@pytest.fixture
def runs(warm_start_runs):
    """`make_runs`, trained once per test session (conftest), shared with test_publish."""
    return warm_start_runs


def vocabulary_of(model_dir) -> list[int]:
    from narm_tf.training import run_dir

    return run_dir.read_vocabulary(model_dir)[0].tolist()


def test_window_2_brings_the_fresh_items_window_1_lacks(runs):
    old, new = set(vocabulary_of(runs["old"])), set(vocabulary_of(runs["warm"]))
    assert not old & set(runs["fresh"])
    assert set(runs["fresh"]) <= new


def test_known_rows_are_the_old_models_and_new_rows_start_at_their_mean(runs, tmp_path):
    """Before any update: every item both runs know has its old embedding row; new items sit
    within a few NEW_ROW_NOISE standard deviations of the known rows' mean; the GRU, attention
    and bilinear decoder weights are the old ones."""
    import keras

    from narm_tf import config as config_lib
    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir, trainer, warm_start

    config = config_lib.default_config(dataset=WINDOW_2, data_dir=runs["data_dir"],
                                       model_dir=str(tmp_path), warm_start_from=runs["old"],
                                       **SMALL)
    vocabulary = data.Dataset(WINDOW_2, runs["data_dir"]).vocabulary
    model = trainer.build_and_compile(config, len(vocabulary), trainer.make_strategy())
    counts = warm_start.warm_start(model, config, vocabulary)  # the hook train() calls
    assert counts["new"] >= len(runs["fresh"]) and counts["kept"] + counts["dropped"] == \
        len(vocabulary_of(runs["old"]))
    old_model = keras.models.load_model(run_dir.path(runs["old"], run_dir.BEST_MODEL))
    old_rows = keras.ops.convert_to_numpy(old_model.get_layer("item_embedding").embeddings)
    new_rows = keras.ops.convert_to_numpy(model.get_layer("item_embedding").embeddings)
    old_index = {item: i for i, item in enumerate(vocabulary_of(runs["old"]), start=1)}
    known = [(i, old_index[item]) for i, item in enumerate(vocabulary.tolist(), start=1)
             if item in old_index]
    assert len(known) > 50
    for new_i, old_i in known:
        np.testing.assert_array_equal(new_rows[new_i], old_rows[old_i])
    mean, std = old_rows[1:].mean(axis=0), old_rows[1:].std(axis=0)
    for item in runs["fresh"]:
        row = new_rows[vocabulary.tolist().index(item) + 1]
        assert np.all(np.abs(row - mean) <= 5 * warm_start.NEW_ROW_NOISE * std + 1e-6)
        assert not np.array_equal(row, mean)  # the noise tells new items apart
    for name in ("gru", "attention", "bilinear_decoder"):
        for new_w, old_w in zip(model.get_layer(name).weights,
                                old_model.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(new_w),
                                          keras.ops.convert_to_numpy(old_w))


def test_mapping_file_maps_every_old_index_to_the_same_raw_id(runs):
    old, new = vocabulary_of(runs["old"]), vocabulary_of(runs["warm"])
    with open(os.path.join(runs["warm"], "warm_start.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(row["old_index"]) for row in rows] == list(range(1, len(old) + 1))
    for row in rows:
        item, new_index = int(row["item_id"]), int(row["new_index"])
        assert item == old[int(row["old_index"]) - 1]
        assert (new[new_index - 1] == item) if new_index else (item not in new)


def test_new_items_reach_top_k_lists_after_training(runs):
    """After 2 epochs on window 2, the fresh items are recommended: most (6 of the 8) appear
    in the top 20 of some test session, and fresh-item targets are hit about as often as the
    others (the model, warm-started, did not stay blind to the new items)."""
    import keras

    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir

    model = keras.models.load_model(run_dir.path(runs["warm"], run_dir.BEST_MODEL))
    test = data.Dataset(WINDOW_2, runs["data_dir"]).split("test")
    scores = model.predict(test.prefixes, batch_size=512, verbose=0)
    scores[:, 0] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :20]
    vocabulary = np.array(vocabulary_of(runs["warm"]))
    fresh = set(runs["fresh"])
    recommended = set(vocabulary[top.ravel() - 1].tolist())
    fresh_targets = np.isin(vocabulary[test.labels - 1], list(fresh))
    hits = (top == test.labels[:, None]).any(axis=1)
    assert len(fresh & recommended) >= 6
    assert fresh_targets.sum() >= 20
    assert hits[fresh_targets].mean() >= 0.5 * hits[~fresh_targets].mean()


def test_warm_start_is_part_of_the_run_identity(runs):
    from narm_tf.training import run_dir

    config = run_dir.read_json(runs["warm"], run_dir.CONFIG)
    assert config["warm_start_from"] == runs["old"]
    other = {**config, "warm_start_from": "/elsewhere"}
    assert run_dir.differences(config, other) == {
        "warm_start_from": (runs["old"], "/elsewhere")}
    # A config.json written before the flag existed reads as "no warm start".
    before = {key: value for key, value in config.items() if key != "warm_start_from"}
    assert run_dir.differences(before, {**config, "warm_start_from": ""}) == {}


def test_warm_validation_is_identity_but_may_differ_from_the_old_run(runs):
    from narm_tf.training import run_dir, warm_start

    config = run_dir.read_json(runs["warm"], run_dir.CONFIG)
    assert config["warm_validation"] == "unseen"
    assert run_dir.differences(config, {**config, "warm_validation": "all"}) == {
        "warm_validation": ("unseen", "all")}
    before = {key: value for key, value in config.items() if key != "warm_validation"}
    assert run_dir.differences(before, config) == {}  # older config.json: unseen
    old = run_dir.read_json(runs["old"], run_dir.CONFIG)
    assert warm_start.architecture_differences(old, {**config, "warm_validation": "all"}) == {}


def test_other_architecture_flags_fail_naming_them_and_leave_no_run(runs, tmp_path):
    from narm_tf.training import run_dir, warm_start

    model_dir = tmp_path / "wider"
    with pytest.raises(warm_start.WarmStartError) as raised:
        train_run(runs["data_dir"], model_dir, WINDOW_2, epochs=1, hidden_units=24,
                  variant="global", learning_rate_decay=0.9, warm_start_from=runs["old"])
    message = str(raised.value)
    assert "--hidden_units: 16 there, 24 now" in message
    assert "--variant: 'hybrid' there, 'global' now" in message
    assert "learning_rate" not in message and "dataset" not in message
    assert run_dir.read_json(str(model_dir), run_dir.CONFIG) is None  # the rerun starts clean


def test_an_unfinished_source_is_refused(runs, tmp_path):
    from narm_tf.training import warm_start

    with pytest.raises(warm_start.WarmStartError, match="holds no config.json"):
        train_run(runs["data_dir"], tmp_path / "run", WINDOW_2, epochs=1,
                  warm_start_from=str(tmp_path / "nothing"))


def test_unseen_validation_drops_sessions_the_old_run_trained_on():
    """6 validation prefixes of sessions 5, 5, 7, 9, 9, 9; the old run trained on 1, 5, 9:
    session 7 (1 prefix) is kept, sessions 5 and 9 (5 prefixes) dropped."""
    from narm_tf.data.examples import Prefixes
    from narm_tf.training import warm_start

    validation = Prefixes(np.arange(6 * 19, dtype=np.int32).reshape(6, 19),
                          np.array([11, 12, 13, 14, 15, 16]), np.array([1, 2, 1, 1, 2, 3]),
                          np.array([5, 5, 7, 9, 9, 9]))
    kept, counts = warm_start.unseen_validation(validation, np.array([1, 5, 9]))
    assert counts == {"dropped_sessions": 2, "kept_sessions": 1, "dropped_prefixes": 5,
                      "kept_prefixes": 1}
    assert kept.session_ids.tolist() == [7] and kept.labels.tolist() == [13]
    np.testing.assert_array_equal(kept.prefixes[0], np.arange(38, 57))


def test_the_warm_run_validated_on_sessions_the_old_run_never_trained_on(runs, capsys):
    """Window 2's validation shares sessions with window 1's train split (the two draws
    differ): the warm run's early stopping saw only the others, and best.json's score is its
    best model's Recall@20 on them."""
    import keras

    from narm_tf import config as config_lib
    from narm_tf import evaluate
    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir, warm_start

    window_1 = data.Dataset(WINDOW_1, runs["data_dir"])
    old_sessions = set(window_1.split("train").session_ids.tolist())
    window_2 = data.Dataset(WINDOW_2, runs["data_dir"], input="stream")
    validation = window_2.split("validation")
    unseen = [s not in old_sessions for s in validation.session_ids.tolist()]
    expected_sessions = {s for s, u in zip(validation.session_ids.tolist(), unseen,
                                                   strict=True) if u}
    dropped_sessions = set(validation.session_ids.tolist()) - expected_sessions
    assert expected_sessions and dropped_sessions  # the windows do overlap

    config = run_dir.read_json(runs["warm"], run_dir.CONFIG)
    kept = warm_start.validation_split(config, window_2, resuming=True).split("validation")
    assert set(kept.session_ids.tolist()) == expected_sessions
    assert not set(kept.session_ids.tolist()) & old_sessions
    assert len(kept) == sum(unseen)
    printed = capsys.readouterr().out
    assert (f"dropped {len(dropped_sessions)} sessions ({len(unseen) - sum(unseen)} prefixes)"
            f" the old run trained on; kept {len(expected_sessions)} sessions ({sum(unseen)} "
            "prefixes)") in printed
    assert warm_start.validation_split({**config, "warm_validation": "all"}, window_2,
                                       resuming=True) is window_2

    best = keras.models.load_model(run_dir.path(runs["warm"], run_dir.BEST_MODEL))
    recorded = run_dir.read_json(runs["warm"], run_dir.BEST_RECORD)[run_dir.MONITOR]
    assert abs(evaluate.evaluate_model(best, kept, k=config_lib.K).recall - recorded) < 1e-3


def test_unreadable_old_data_fails_naming_it_and_leaves_no_run(runs, tmp_path):
    """The old run's dataset moved away: the warm run names it and --warm_validation."""
    import shutil

    from narm_tf.training import run_dir, warm_start

    old = tmp_path / "old"
    shutil.copytree(runs["old"], old)
    config = run_dir.read_json(str(old), run_dir.CONFIG)
    run_dir.write_json(str(old / run_dir.CONFIG), {**config, "data_dir": str(tmp_path / "gone")})
    with pytest.raises(warm_start.WarmStartError) as raised:
        train_run(runs["data_dir"], tmp_path / "run", WINDOW_2, epochs=1,
                  warm_start_from=str(old))
    message = str(raised.value)
    assert f"{WINDOW_1} in {tmp_path / 'gone'}" in message
    assert "--warm_validation=all" in message
    assert run_dir.read_json(str(tmp_path / "run"), run_dir.CONFIG) is None


def test_no_unseen_validation_session_left_fails(runs, tmp_path):
    from narm_tf.data import dataset as data
    from narm_tf.training import run_dir, warm_start

    old_sessions = data.Dataset(WINDOW_1, runs["data_dir"]).split("train").session_ids
    window_2 = data.Dataset(WINDOW_2, runs["data_dir"])
    validation = window_2.split("validation")
    seen = validation.take(np.flatnonzero(np.isin(validation.session_ids, old_sessions)))
    config = {**run_dir.read_json(runs["warm"], run_dir.CONFIG), "model_dir": str(tmp_path)}
    with pytest.raises(warm_start.WarmStartError, match="none is left to stop on; pass "
                                                        "--warm_validation=all"):
        warm_start.validation_split(config, window_2.with_split("validation", seen),
                                    resuming=False)


def test_remap_items_along_the_last_axis():
    """A dense decoder's kernel [2H, N + 1]: columns follow their items; a new one starts at
    the mean column plus noise of 0.1 std per row (means 2 and 20, stds 1 and 10)."""
    from narm_tf.training import warm_start

    old = np.array([[0.0, 1.0, 3.0], [0.0, 10.0, 30.0]])  # items 1, 2 -> columns 1, 2
    source = np.array([0, 2, -1, 1])  # new 1 = old 2, new 2 is new, new 3 = old 1
    new = warm_start.remap_items(old, source, -1, np.random.default_rng(0))
    assert new.shape == (2, 4)
    np.testing.assert_array_equal(new[:, [0, 1, 3]], [[0, 3, 1], [0, 30, 10]])
    # new column: mean (2, 20) + 0.1 * std (1, 10) * noise
    assert abs(new[0, 2] - 2) <= 0.5 and abs(new[1, 2] - 20) <= 5
    assert new[0, 2] != 2 and new[1, 2] != 20


def test_repeat_weights_carry_over_but_calibrated_temperatures_restart_at_one():
    import keras

    from narm_tf.model.narm import REPEAT_EXPLORE, build_narm
    from narm_tf.training import warm_start

    keras.utils.set_random_seed(0)
    old = build_narm(5, embedding_dim=4, hidden_units=4, repeat=True, repeat_explore="new")
    new = build_narm(6, embedding_dim=4, hidden_units=4, repeat=True, repeat_explore="new")
    old_layer, new_layer = old.get_layer(REPEAT_EXPLORE), new.get_layer(REPEAT_EXPLORE)
    old_layer.explore_scale.assign(0.67)  # as --repeat_calibrate leaves them
    old_layer.repeat_scale.assign(0.03)
    warm_start.transfer_weights(old, new, np.array([0, 1, 2, 3, 4, 5, -1]))
    assert float(new_layer.explore_scale) == 1.0 and float(new_layer.repeat_scale) == 1.0
    np.testing.assert_array_equal(new_layer.w_h.numpy(), old_layer.w_h.numpy())


def test_a_source_killed_midway_is_refused_and_leaves_no_run(runs, tmp_path):
    """An old run without metrics.json (its training killed) seeds nothing: the error names
    what it lacks and that rerunning its command finishes it."""
    from narm_tf.training import run_dir, warm_start

    killed = tmp_path / "killed"
    shutil.copytree(runs["old"], killed)
    (killed / run_dir.METRICS).unlink()
    with pytest.raises(warm_start.WarmStartError) as raised:
        train_run(runs["data_dir"], tmp_path / "run", WINDOW_2, epochs=1,
                  warm_start_from=str(killed))
    message = str(raised.value)
    assert message.startswith(f"--warm_start_from={killed}: {killed} holds an unfinished "
                              "training run")
    assert "no metrics.json, the file a run writes last" in message
    assert "Rerun the narm_tf.train command that wrote it (same --model_dir and flags)" in message
    assert "--allow_unfinished" not in message  # warm start has no such opt-in
    assert run_dir.read_json(str(tmp_path / "run"), run_dir.CONFIG) is None


def test_string_ids_are_matched_as_written_and_never_against_integers(tmp_path):
    """SKUs and zero-padded ids keep their rows by exact string ("00215336475" is not
    "215336475"); warm_start.tsv lists them; an integer catalogue against a string one is
    refused naming both."""
    from narm_tf.training import warm_start

    old = np.array(["SKU-6475A", "00215336475", "B-1"], dtype=object)
    new = np.array(["00215336475", "215336475", "SKU-6475A", "C-9"], dtype=object)
    np.testing.assert_array_equal(warm_start.source_indices(old, new), [0, 2, -1, 1, -1])
    np.testing.assert_array_equal(warm_start.index_map(old, new), [0, 3, 1, 0])
    warm_start.write_map(str(tmp_path), old, new)
    with open(tmp_path / "warm_start.tsv") as f:
        rows = [(row["item_id"], int(row["new_index"]))
                for row in csv.DictReader(f, delimiter="\t")]
    assert rows == [("SKU-6475A", 3), ("00215336475", 1), ("B-1", 0)]
    np.testing.assert_array_equal(warm_start.source_indices(np.array([7, 215336475]),
                                                            np.array([215336475, 9])),
                                  [0, 2, -1])
    with pytest.raises(warm_start.WarmStartError,
                       match="the old run's vocabulary.tsv holds integer item ids, the new "
                             "dataset's vocabulary string ids"):
        warm_start.source_indices(np.array([215336475, 7]), new)
