"""Real TFDS builds (programmatic and `tfds build` CLI), loading, sample counts, bad input."""

import os
import pathlib
import subprocess

import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from narm_tf import data, preprocessing, synthetic
from tfds_builders.click_log.click_log_dataset_builder_test import ClickLogShopTest  # noqa: F401
from tfds_builders.diginetica.diginetica_dataset_builder_test import DigineticaTest  # noqa: F401
from tfds_builders.yoochoose.yoochoose_dataset_builder_test import YoochooseFullTest  # noqa: F401

from conftest import ROOT, shared_file

# The two imports above run each builder's own test (TFDS's DatasetBuilderTestCase on its
# hand-made dummy_data/, beside the builder) with this suite.

data.register_builders()


@pytest.fixture(scope="module")
def tiny_manual(tmp_path_factory) -> pathlib.Path:
    """A manual dir with a tiny synthetic YOOCHOOSE log and the same clicks as DIGINETICA views."""
    manual = tmp_path_factory.mktemp("manual")
    path = synthetic.write_synthetic_clicks(str(manual), num_sessions=400, num_items=60,
                                            num_days=10)
    clicks = preprocessing.read_yoochoose_clicks(path)
    views = pd.DataFrame({
        "session_id": clicks["session_id"], "user_id": "NA", "item_id": clicks["item_id"],
        "timeframe": clicks["time"] - clicks["time"].min(),
        "eventdate": pd.to_datetime(clicks["date"], unit="s").dt.strftime("%Y-%m-%d")})
    views.to_csv(manual / "train-item-views.csv", sep=";", index=False)
    return manual


def tfds_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs `tfds build ...` from the repository root of an uninstalled clone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(["tfds", "build", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_loads(name: str, data_dir, statistics: dict) -> None:
    """tfds.load gives the split sizes of the statistics and the documented features."""
    splits = tfds.load(name, data_dir=str(data_dir), split=["train", "validation", "test"],
                       download=False)
    sizes = [int(ds.cardinality()) for ds in splits]
    assert sizes[0] + sizes[1] == statistics["train_prefixes"]
    assert sizes[1] == statistics["validation_prefixes"]
    assert sizes[2] == statistics["test_prefixes"]
    example = next(iter(splits[2]))
    assert set(example) == {"prefix", "label", "length", "session_id"}
    assert all(v.dtype == tf.int64 for v in example.values())
    assert example["prefix"].shape[0] == min(int(example["length"]), 19) >= 1
    assert_sessions_disjoint(name, data_dir, statistics)


def assert_sessions_disjoint(name: str, data_dir, statistics: dict) -> None:
    """No session has prefixes in both train and validation; the statistics count them."""
    train, validation = (set(data.load_split(name, split, str(data_dir)).session_ids.tolist())
                         for split in ("train", "validation"))
    assert not train & validation
    assert len(validation) == statistics["validation_sessions"] >= 1
    assert len(train | validation) == statistics["kept_train_sessions"]
    assert statistics["validation_sessions"] == statistics["kept_train_sessions"] // 10


def test_programmatic_build_prints_statistics_and_loads(tiny_manual, tmp_path, capsys):
    data.build_dataset("yoochoose", str(tiny_manual), str(tmp_path), config="yoochoose_full")
    out = capsys.readouterr().out
    assert "Statistics of yoochoose/yoochoose_full" in out and "test_prefixes" in out
    statistics = data.load_statistics("yoochoose/yoochoose_full", str(tmp_path))
    assert statistics["fraction"] == 1
    assert_loads("yoochoose/yoochoose_full", tmp_path, statistics)
    info = tfds.builder("yoochoose/yoochoose_full", data_dir=str(tmp_path)).info
    assert str(info.version) == "2.0.0" and "10% of the training sessions" in info.description
    assert "not 10% of the prefixes" in info.release_notes["2.0.0"]
    assert len(data.load_vocabulary("yoochoose/yoochoose_full", str(tmp_path))) \
        == statistics["vocabulary_size"]


def test_default_config_is_one_64th():
    assert tfds.builder("yoochoose", data_dir="/nonexistent").builder_config.name \
        == "yoochoose1_64"


@pytest.mark.parametrize("target, name, extra", [
    ("tfds_builders/yoochoose", "yoochoose/yoochoose1_4", ["--config=yoochoose1_4"]),
    ("tfds_builders/diginetica", "diginetica", []),
])
def test_tfds_build_cli_then_tfds_load(tiny_manual, tmp_path, target, name, extra):
    run = tfds_cli(target, *extra, f"--manual_dir={tiny_manual}", f"--data_dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Statistics of {name}" in run.stdout
    # Printed by this clone's builder: `tfds build` imported the repository's narm_tf.
    assert "Exact duplicate clicks (same session, item and time): 0, kept" in run.stdout
    assert_loads(name, tmp_path, data.load_statistics(name, str(tmp_path)))


# ---------------------------------------------------------------- real samples (SPEC table)


@pytest.fixture(scope="module")
def yoochoose_sample_dir(tmp_path_factory) -> pathlib.Path:
    manual = tmp_path_factory.mktemp("yoochoose_sample")
    (manual / "yoochoose-clicks.dat").symlink_to(
        shared_file("yoochoose_sample/yoochoose-clicks.dat"))
    return manual


def test_yoochoose_sample_build(yoochoose_sample_dir, tmp_path):
    """One real build (yoochoose_full); the fractions' counts come from in-process calls."""
    data.build_dataset("yoochoose", str(yoochoose_sample_dir), str(tmp_path), "yoochoose_full")
    name = "yoochoose/yoochoose_full"
    splits = tfds.builder(name, data_dir=str(tmp_path)).info.splits
    assert splits["train"].num_examples + splits["validation"].num_examples == 52_098
    assert splits["test"].num_examples == 10_102
    assert len(data.load_vocabulary(name, str(tmp_path))) == 2_808
    statistics = data.load_statistics(name, str(tmp_path))
    assert (statistics["train_sessions"], statistics["test_sessions"]) == (17_688, 3_403)
    assert statistics["validation_sessions"] == 1_768  # floor(0.1 * 17,688)
    assert splits["validation"].num_examples == statistics["validation_prefixes"]
    assert_sessions_disjoint(name, tmp_path, statistics)


@pytest.mark.parametrize("fraction, train_prefixes", [(64, 814), (4, 13_024)])
def test_yoochoose_sample_fractions(yoochoose_sample_dir, fraction, train_prefixes):
    clicks = preprocessing.read_yoochoose_clicks(str(yoochoose_sample_dir / "yoochoose-clicks.dat"))
    result = preprocessing.preprocess(clicks, 1, 1, fraction=fraction)
    assert len(result.train) + len(result.validation) == train_prefixes
    assert len(result.test) == 10_102 and len(result.vocabulary) == 2_808
    kept = set(result.train.session_ids.tolist())
    held = set(result.validation.session_ids.tolist())
    assert not kept & held and len(held) == len(kept | held) // 10
    exact = clicks.duplicated(["session_id", "item_id", "time"]).sum()  # 1 on this sample
    assert result.statistics["duplicate_clicks"] == exact


def test_diginetica_sample_counts(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-item-views.csv").symlink_to(
        shared_file("diginetica_sample/train-item-views.csv"))
    out = tmp_path / "out"
    data.build_dataset("diginetica", str(manual), str(out))
    splits = tfds.builder("diginetica", data_dir=str(out)).info.splits
    assert splits["train"].num_examples + splits["validation"].num_examples == 1_205
    assert splits["test"].num_examples == 99
    assert len(data.load_vocabulary("diginetica", str(out))) == 309
    statistics = data.load_statistics("diginetica", str(out))
    assert (statistics["train_sessions"], statistics["test_sessions"]) == (469, 39)
    assert statistics["validation_sessions"] == 46  # floor(0.1 * 469)
    assert_sessions_disjoint("diginetica", out, statistics)


# ----------------------------------------------------------------------------- bad input


def assert_nothing_loadable(name: str, data_dir: pathlib.Path) -> None:
    """No folder tfds.load would accept: no dataset_info.json, not prepared, load fails."""
    assert not list(data_dir.rglob("dataset_info.json"))
    assert not tfds.builder(name, data_dir=str(data_dir)).is_prepared()
    with pytest.raises(Exception):  # noqa: B017 (TFDS raises AssertionError or its own errors)
        tfds.load(name, data_dir=str(data_dir), split="train", download=False)


@pytest.mark.parametrize("content, error, message", [
    (None, FileNotFoundError, "Manual directory {manual} does not exist or is empty"),
    ({"other.dat": ""}, FileNotFoundError, "expected {manual}/yoochoose-clicks.dat"),
    ("", preprocessing.InputError, "the file is empty"),
    ("1;2014-04-01T10:00:00.000Z;10;0\n", preprocessing.InputError, "line 1: expected 4 fields"),
    ("1,2014-04-01T10:00:00.000Z,10,0\n1,not-a-time,10,0\n", preprocessing.InputError,
     "line 2: field 2 has an unparsable value 'not-a-time'"),
    ("1,2014-04-01T10:00:00.000Z,10,0\n2,2014-04-03T10:00:00.000Z,10,0\n",
     preprocessing.InputError, "no session is left"),
])
def test_bad_input_leaves_nothing_loadable(tmp_path, content, error, message):
    manual = tmp_path / "manual"
    manual.mkdir()
    if isinstance(content, dict):
        for name, text in content.items():
            (manual / name).write_text(text)
    elif content is not None:
        (manual / "yoochoose-clicks.dat").write_text(content)
    out = tmp_path / "out"
    with pytest.raises(error) as raised:
        data.build_dataset("yoochoose", str(manual), str(out), "yoochoose_full")
    assert message.format(manual=manual) in str(raised.value)
    assert_nothing_loadable("yoochoose/yoochoose_full", out)


def test_cli_bad_input_names_the_file_and_leaves_nothing(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-item-views.csv").write_text("session_id;item_id\n1;2\n")
    run = tfds_cli("tfds_builders/diginetica", f"--manual_dir={manual}",
                   f"--data_dir={tmp_path / 'out'}")
    assert run.returncode != 0
    assert f"{manual}/train-item-views.csv, line 1: expected the header" in run.stderr
    assert_nothing_loadable("diginetica", tmp_path / "out")

