"""Real TFDS builds (programmatic and `tfds build` CLI), loading, sample counts, bad input."""

import json
import os
import pathlib
import shutil
import subprocess
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from narm_tf import synthetic
from narm_tf.data import dataset as data
from narm_tf.data.clicks import (
    DIGINETICA,
    YOOCHOOSE,
    ClickLog,
    InputError,
    read_log,
    read_yoochoose_clicks,
)
from narm_tf.data.rules import preprocess, preprocess_log
from tfds_builders import session_prefixes
from tfds_builders.click_log import click_log_dataset_builder as click_log
from tfds_builders.yoochoose import yoochoose_dataset_builder

from conftest import ROOT, shared_file

data.register_builders()


@pytest.fixture(scope="module")
def tiny_manual(tmp_path_factory) -> pathlib.Path:
    """A manual dir with a tiny synthetic YOOCHOOSE log and the same clicks as DIGINETICA views."""
    manual = tmp_path_factory.mktemp("manual")
    path = synthetic.write_synthetic_clicks(str(manual), num_sessions=400, num_items=60,
                                            num_days=10)
    clicks = read_yoochoose_clicks(path)
    views = pd.DataFrame({
        "session_id": clicks["session_id"], "user_id": "NA", "item_id": clicks["item_id"],
        "timeframe": clicks["time"] - clicks["time"].min(),
        "eventdate": pd.to_datetime(clicks["date"], unit="s").dt.strftime("%Y-%m-%d")})
    views.to_csv(manual / "train-item-views.csv", sep=";", index=False)
    return manual


def tfds_cli(*args: str, cwd=ROOT, **env_vars: str) -> subprocess.CompletedProcess:
    """Runs `tfds build ...` from the repository root of an uninstalled clone (or `cwd`), with
    `env_vars` added to the environment."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **env_vars)
    return subprocess.run(["tfds", "build", *args], cwd=cwd, env=env, capture_output=True,
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
    dataset = data.Dataset(name, str(data_dir))
    train, validation = (set(dataset.split(split).session_ids.tolist())
                         for split in ("train", "validation"))
    assert not train & validation
    assert len(validation) == statistics["validation_sessions"] >= 1
    assert len(train | validation) == statistics["kept_train_sessions"]
    assert statistics["validation_sessions"] == statistics["kept_train_sessions"] // 10


def test_programmatic_build_prints_statistics_and_loads(tiny_manual, tmp_path, capsys):
    data.build_dataset("yoochoose", str(tiny_manual), str(tmp_path), config="yoochoose_full")
    out = capsys.readouterr().out
    assert "Statistics of yoochoose/yoochoose_full" in out and "test_prefixes" in out
    statistics = data.Dataset("yoochoose/yoochoose_full", str(tmp_path)).statistics
    assert statistics["fraction"] == 1
    assert_loads("yoochoose/yoochoose_full", tmp_path, statistics)
    info = tfds.builder("yoochoose/yoochoose_full", data_dir=str(tmp_path)).info
    assert str(info.version) == "2.1.0" and "10% of the training sessions" in info.description
    assert "not 10% of the prefixes" in info.release_notes["2.0.0"]
    assert "\"validation\": \"time\"" in info.release_notes["2.1.0"]
    assert len(data.Dataset("yoochoose/yoochoose_full", str(tmp_path)).vocabulary) \
        == statistics["vocabulary_size"]


def test_default_config_is_one_64th():
    assert tfds.builder("yoochoose", data_dir="/nonexistent").builder_config.name \
        == "yoochoose1_64"


def test_tfds_build_cli_then_tfds_load(tiny_manual, tmp_path):
    run = tfds_cli("tfds_builders/diginetica", f"--manual_dir={tiny_manual}",
                   f"--data_dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Statistics of diginetica" in run.stdout
    # Printed by this clone's builder: `tfds build` imported the repository's narm_tf.
    assert "Exact duplicate clicks (same session, item and time): 0, kept" in run.stdout
    assert_loads("diginetica", tmp_path, data.Dataset("diginetica", str(tmp_path)).statistics)


# --------------------------------------------------------------- click_log: any shop's log

SHOP_JSON = {"name": "my_shop", "files": "clicks-*.parquet",  # format: parquet, inferred
             "session": "sid", "item": "sku", "time": "ts", "time_format": "epoch_ms",
             "test_days": 2, "min_item_support": 3, "max_len": 5, "validation_share": 0.2,
             "seed": 7}


def shop_log(clicks: pd.DataFrame, folder: pathlib.Path) -> None:
    """The clicks as a shop's Parquet log: two files, small row groups, epoch ms, own names."""
    frame = pd.DataFrame({"sid": clicks["session_id"], "sku": clicks["item_id"],
                          "ts": clicks["time"]})
    half = len(frame) // 2
    for part, rows in enumerate((frame[:half], frame[half:])):
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False),
                       folder / f"clicks-{part}.parquet", row_group_size=500)


# `tfds build` of a click_log config from another folder, paths under HOME (`~` after `=` is
# expanded by no shell: the builder does it).
CLICK_LOG_BUILDER = str(ROOT / "tfds_builders" / "click_log")
HOME_PATHS = ("--data_dir=~/tensorflow_datasets", "--manual_dir=~/shop_logs")


@pytest.fixture(scope="module")
def shop_cli_build(tiny_manual, tmp_path_factory) -> types.SimpleNamespace:
    """tiny_manual's clicks as a shop's Parquet log in ~/shop_logs, built with SHOP_JSON by one
    real `tfds build` run from an empty folder elsewhere (HOME set, HOME_PATHS): `run`, the
    `clicks`, `home`, the working folder `cwd` and the data dir `out`. The two CLI tests of
    this build share the run (a `tfds build` costs ~8 s of CPU, mostly TensorFlow's start)."""
    root = tmp_path_factory.mktemp("shop_cli")
    home, cwd = root / "home", root / "elsewhere"
    (home / "shop_logs").mkdir(parents=True)
    cwd.mkdir()
    clicks = read_yoochoose_clicks(str(tiny_manual / "yoochoose-clicks.dat"))
    shop_log(clicks, home / "shop_logs")
    run = tfds_cli(CLICK_LOG_BUILDER, f"--config={json.dumps(SHOP_JSON)}", *HOME_PATHS,
                   cwd=cwd, HOME=str(home))
    return types.SimpleNamespace(run=run, clicks=clicks, home=home, cwd=cwd,
                                 out=home / "tensorflow_datasets")


def test_tfds_build_cli_with_a_json_config(shop_cli_build):
    """A shop's own config through the real `tfds build`: its rules reach the dataset."""
    run, clicks = shop_cli_build.run, shop_cli_build.clicks
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Statistics of click_log/my_shop" in run.stdout
    name, out = "click_log/my_shop", str(shop_cli_build.out)
    statistics = data.Dataset(name, out).statistics
    expected = preprocess(
        clicks, 2, 1, seed=7, min_item_support=3, max_len=5, validation_share=0.2)
    assert statistics == expected.statistics
    for split in ("train", "validation", "test"):
        loaded, want = data.Dataset(name, out).split(split), getattr(expected, split)
        np.testing.assert_array_equal(loaded.labels, want.labels)
        np.testing.assert_array_equal(loaded.session_ids, want.session_ids)
        assert np.count_nonzero(loaded.prefixes, axis=1).max() == 5  # max_len reached
    assert statistics["validation_sessions"] == int(0.2 * statistics["kept_train_sessions"])


# ------------------------------------- real samples (the figures of docs/data.md's sample table)


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
    assert len(data.Dataset(name, str(tmp_path)).vocabulary) == 2_808
    statistics = data.Dataset(name, str(tmp_path)).statistics
    assert (statistics["train_sessions"], statistics["test_sessions"]) == (17_688, 3_403)
    assert statistics["validation_sessions"] == 1_768  # floor(0.1 * 17,688)
    assert splits["validation"].num_examples == statistics["validation_prefixes"]
    assert_sessions_disjoint(name, tmp_path, statistics)


@pytest.mark.parametrize("fraction, train_prefixes", [(64, 814), (4, 13_024)])
def test_yoochoose_sample_fractions(yoochoose_sample_dir, fraction, train_prefixes):
    clicks = read_yoochoose_clicks(str(yoochoose_sample_dir / "yoochoose-clicks.dat"))
    result = preprocess(clicks, 1, 1, fraction=fraction)
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
    assert len(data.Dataset("diginetica", str(out)).vocabulary) == 309
    statistics = data.Dataset("diginetica", str(out)).statistics
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
    ("", InputError, "the file is empty"),
    ("1;2014-04-01T10:00:00.000Z;10;0\n", InputError, "line 1: expected 4 fields"),
    ("1,2014-04-01T10:00:00.000Z,10,0\n1,not-a-time,10,0\n", InputError,
     "line 2: field 2 (time) value 'not-a-time' is not an ISO-8601 time with a zone"),
    ("1,2014-04-01T10:00:00.000Z,10,0\n2,2014-04-03T10:00:00.000Z,10,0\n",
     InputError, "no session is left"),
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
    assert run.returncode == 1
    # One line naming the problem ends the output: no traceback.
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tfds build: {manual}/train-item-views.csv, line 1: expected the "
                           f"header")
    assert "Traceback" not in run.stderr + run.stdout
    assert_nothing_loadable("diginetica", tmp_path / "out")



def test_parquet_and_csv_logs_of_the_same_clicks_give_identical_datasets(tiny_manual, tmp_path):
    """CSV with ISO times (one file) and Parquet with native timestamps (two files, row groups
    of 500): same examples, vocabulary and statistics."""
    clicks = read_yoochoose_clicks(str(tiny_manual / "yoochoose-clicks.dat"))
    frame = pd.DataFrame({"sid": clicks["session_id"], "sku": clicks["item_id"],
                          "ts": pd.to_datetime(clicks["time"], unit="ms", utc=True)})
    csv_path = tmp_path / "clicks.csv"
    frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(csv_path,
                                                                              index=False)
    table = pa.table({"sid": clicks["session_id"], "sku": clicks["item_id"],
                      "ts": pa.array(clicks["time"], pa.timestamp("ms", tz="UTC"))})
    half = len(clicks) // 2
    paths = [str(tmp_path / f"clicks-{i}.parquet") for i in range(2)]
    for path, rows in zip(paths, (table[:half], table[half:]), strict=True):
        pq.write_table(rows, path, row_group_size=500)
    rules = {"session": "sid", "item": "sku", "time": "ts", "time_format": "iso"}
    from_csv = preprocess_log([str(csv_path)], ClickLog(**rules))
    from_parquet = preprocess_log(
        paths, ClickLog(format="parquet", **rules))
    assert len(from_csv.test) > 0 and from_csv.statistics == from_parquet.statistics
    np.testing.assert_array_equal(from_csv.vocabulary, from_parquet.vocabulary)
    for split in ("train", "validation", "test"):
        for field in ("prefixes", "labels", "lengths", "session_ids"):
            np.testing.assert_array_equal(getattr(getattr(from_csv, split), field),
                                          getattr(getattr(from_parquet, split), field))
    # And both are YOOCHOOSE's own preprocessing of these clicks.
    assert from_csv.statistics == preprocess(clicks, 1, 1).statistics


def test_named_diginetica_config_gives_the_sample_counts():
    from tfds_builders.click_log import click_log_dataset_builder as click_log

    path = str(shared_file("diginetica_sample/train-item-views.csv"))
    result = preprocess_log([path], click_log.DIGINETICA_CONFIG.log)
    assert len(result.train) + len(result.validation) == 1_205
    assert (len(result.test), len(result.vocabulary)) == (99, 309)


@pytest.mark.parametrize("config, message", [
    ({"name": "x", "sesion": "sid"}, "unknown key(s) ['sesion']; valid keys: name, files, "
     "format, delimiter, header, session, item, time, order, time_format, test_days, "
     "min_item_support, min_session_length, max_len, fraction, validation_share, seed"),
    ({"files": "*.csv"}, "no 'name'; valid keys: name, files"),
    ({"name": "x", "format": "json"}, "format must be one of csv, parquet; got 'json'"),
    ({"name": "x", "time_format": "unix"},
     "time_format must be one of iso, epoch_s, epoch_ms, date; got 'unix'"),
    ({"name": "x", "min_session_length": 1}, "min_session_length must be an integer >= 2"),
    ({"name": "x", "max_len": 20}, "max_len must be an integer in 1..19, got 20"),
    ({"name": "x", "fraction": 0}, "fraction must be an integer >= 1, got 0"),
    ({"name": "x", "test_days": "7"}, "test_days must be an integer >= 1, got '7'"),
    ({"name": "x", "validation_share": 1}, "validation_share must be a number in (0, 1)"),
    ({"name": "x", "header": "yes"}, "header must be true or false, got 'yes'"),
    ({"name": "x", "delimiter": "||"}, "delimiter must be one character"),
    ({"name": "x", "header": False, "session": "sid"},
     "session must be a 0-based field position (int) for a csv log without a header"),
    ({"name": "x", "format": "parquet", "item": 2}, "item must be a column name (str)"),
    ({"name": "x", "item": "sid", "session": "sid"}, "must be distinct columns"),
    ({"name": "x", "files": "../clicks.csv"}, "files must be a glob inside the manual dir"),
    ({"name": "x", "end_date": "2014-04-31"}, "end_date must be a day YYYY-MM-DD (UTC; "
     "clicks after it are ignored), got '2014-04-31'"),
    ({"name": "x", "base": "yoochoose"}, "base must be one of yoochoose1_64, yoochoose1_4, "
     "yoochoose_full, diginetica, got 'yoochoose'"),
])
def test_bad_configs_fail_when_parsed_naming_the_valid_choices(config, message):
    from tfds_builders.click_log import click_log_dataset_builder as click_log

    with pytest.raises(ValueError) as raised:
        click_log.ClickLogConfig(**json.loads(json.dumps(config)))  # what `tfds build` calls
    assert message in str(raised.value)


def test_unknown_columns_fail_before_reading_listing_the_columns(tmp_path):
    good = tmp_path / "a.csv"
    good.write_text("sid,sku,ts\n1,2,10\n")
    bad = tmp_path / "b.csv"
    bad.write_text("sid,item,ts\n" + "1,2,x\n" * 3)  # bad values too: never read
    log = ClickLog(session="sid", item="sku", time="ts", time_format="epoch_s")
    with pytest.raises(InputError) as raised:
        read_log([str(good), str(bad)], log)
    assert str(raised.value) == (f"{bad}, line 1: no column 'sku' (item) in the header; "
                                 f"columns: sid, item, ts")
    headerless = ClickLog(header=False, session=0, item=1, time=3)
    with pytest.raises(InputError, match=r"line 1: no field 3 \(time, 0-based\)"):
        read_log([str(good)], headerless)
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"sid": [1], "ts": [10]}), parquet)
    with pytest.raises(InputError) as raised:
        read_log([str(parquet)], ClickLog(
            format="parquet", session="sid", item="sku", time="ts", time_format="epoch_s"))
    assert str(raised.value) == f"{parquet}: no column 'sku' (item); columns: sid, ts"


def test_bad_rows_name_the_file_and_line_or_row_group(tmp_path):
    tsv = tmp_path / "log.tsv"
    tsv.write_text("sid\tsku\tday\n1\t2\t2016-05-01\n1\t3\t2016-02-30\n")
    log = ClickLog(delimiter="\t", session="sid", item="sku", time="day",
                                 time_format="date")
    with pytest.raises(InputError,
                       match=f"{tsv}, line 3: field 3 \\(time\\) value '2016-02-30' is not "
                             f"a day YYYY-MM-DD"):
        read_log([str(tsv)], log)
    parquet = tmp_path / "log.parquet"
    pq.write_table(pa.table({"sid": [1, 2, 3, None], "sku": [5, 6, 7, 8],
                             "ts": [10, 20, 30, 40]}), parquet, row_group_size=2)
    shop = ClickLog(format="parquet", session="sid", item="sku", time="ts",
                                  time_format="epoch_s")
    with pytest.raises(InputError) as raised:
        read_log([str(parquet)], shop)
    assert str(raised.value) == f"{parquet}, row group 1, column 'sid' (session): row 1 of " \
                                f"the group is null"
    pq.write_table(pa.table({"sid": [1, 2], "sku": ["5", "6"], "ts": [10, 20]}), parquet)
    with pytest.raises(InputError, match="column 'sku' \\(item\\): has type "
                                                       "string.*need \"id_type\": \"string\""):
        read_log([str(parquet)], ClickLog(
            **{**vars(shop), "id_type": "int"}))


def test_a_bad_click_log_build_leaves_nothing_loadable(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "clicks.csv").write_text("session_id,item_id,time\n1,2,not-a-time\n")
    from tfds_builders.click_log import click_log_dataset_builder as click_log

    config = click_log.ClickLogConfig(name="bad_shop", files="clicks.csv")
    builder = click_log.Builder(config=config, data_dir=str(tmp_path / "out"))
    with pytest.raises(InputError,
                       match=f"{manual}/clicks.csv, line 2: field 3 \\(time\\) value "
                             f"'not-a-time' is not an ISO-8601 time with a zone"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert not list((tmp_path / "out").rglob("dataset_info.json"))


# ------------------------------------------------------------------ time windows (end_date)


def test_tfds_build_cli_yoochoose_window_from_a_named_base(tiny_manual, tmp_path):
    """`tfds build tfds_builders/yoochoose --config=JSON` with base + end_date: the named
    config's rules on the clicks dated before the day after end_date (UTC)."""
    day = "2014-04-06"
    config = {"name": "full_to_0406", "base": "yoochoose_full", "end_date": day}
    run = tfds_cli("tfds_builders/yoochoose", f"--config={json.dumps(config)}",
                   f"--manual_dir={tiny_manual}", f"--data_dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (tiny_manual / "yoochoose-clicks.dat").read_text().splitlines()
    window = [line for line in lines if line.split(",")[1][:10] <= day]
    assert 0 < len(window) < len(lines)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "yoochoose-clicks.dat").write_text("\n".join(window) + "\n")
    expected = preprocess_log([str(tmp_path / "cut" / "yoochoose-clicks.dat")],
                                            YOOCHOOSE)
    name = "yoochoose/full_to_0406"
    built = data.Dataset(name, str(tmp_path))
    assert built.statistics == expected.statistics
    np.testing.assert_array_equal(built.vocabulary, expected.vocabulary)
    np.testing.assert_array_equal(built.split("test").labels, expected.test.labels)


def test_diginetica_window_through_click_log(tiny_manual, tmp_path):
    """DIGINETICA's rules up to a day (inclusive) via click_log's base: eventdates after it go."""
    from tfds_builders.click_log import click_log_dataset_builder as click_log

    config = click_log.ClickLogConfig(name="digi_to_0409", base="diginetica",
                                      end_date="2014-04-09")
    builder = click_log.Builder(config=config, data_dir=str(tmp_path / "out"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tiny_manual)))
    views = pd.read_csv(tiny_manual / "train-item-views.csv", sep=";")
    kept = views[views["eventdate"] <= "2014-04-09"]
    assert 0 < len(kept) < len(views)
    (tmp_path / "cut").mkdir()
    kept.to_csv(tmp_path / "cut" / "train-item-views.csv", sep=";", index=False)
    expected = preprocess_log([str(tmp_path / "cut" / "train-item-views.csv")],
                                            DIGINETICA)
    statistics = data.Dataset("click_log/digi_to_0409", str(tmp_path / "out")).statistics
    assert statistics == expected.statistics and statistics["clicks"] == len(kept)


# -------------------------------------------- one dataset name: one set of rules and raw files


def shop_csv(clicks: pd.DataFrame, path: pathlib.Path) -> None:
    """The clicks as a CSV log in click_log's default columns (session_id, item_id, ISO time)."""
    times = pd.to_datetime(clicks["time"], unit="ms", utc=True)
    pd.DataFrame({"session_id": clicks["session_id"], "item_id": clicks["item_id"],
                  "time": times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}).to_csv(path, index=False)


def build_click_log(data_dir: str, manual_dir: str, builder=click_log.Builder, **config):
    """A real in-process build of a JSON-like click_log config (what `tfds build` does)."""
    built = builder(config=click_log.ClickLogConfig(**config), data_dir=data_dir)
    built.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def test_a_name_rebuilt_with_other_rules_or_files_fails_naming_them(tiny_manual, tmp_path,
                                                                    monkeypatch, capsys):
    """Same data_dir, name and version: reused only with the same config and raw files, else it
    stops naming each difference and the folder to delete; the old dataset is untouched. A
    dataset built before builds were recorded is reused with a warning. (Both paths given as
    environment variables, expanded by the builder.)"""
    clicks = read_yoochoose_clicks(str(tiny_manual / "yoochoose-clicks.dat"))
    manual, out = tmp_path / "logs", tmp_path / "out"
    manual.mkdir()
    shop_csv(clicks, manual / "clicks-1.csv")
    monkeypatch.setenv("SHOP_LOGS", str(manual))
    monkeypatch.setenv("SHOP_OUT", str(out))
    shop = {"name": "shop", "files": "clicks-*.csv"}
    build_click_log("$SHOP_OUT", "$SHOP_LOGS", **shop)
    first = data.Dataset("click_log/shop", str(out)).statistics
    build_click_log("$SHOP_OUT", "$SHOP_LOGS", **shop)  # same rules and files: reused
    folder = out / "click_log" / "shop" / "1.0.0"
    with pytest.raises(session_prefixes.StaleDatasetError) as raised:
        build_click_log("$SHOP_OUT", "$SHOP_LOGS", **shop, test_days=2, min_item_support=10)
    assert str(raised.value) == (
        f"click_log/shop in {folder} was built with other rules or raw files than this "
        f"build's: min_item_support: 5 -> 10; test_days: 1 -> 2. Pick another config name, "
        f"or delete {folder} (tfds build --overwrite does) to rebuild it.")
    shop_csv(clicks[:50], manual / "clicks-2.csv")  # one more click file in the manual dir
    size = (manual / "clicks-2.csv").stat().st_size
    with pytest.raises(session_prefixes.StaleDatasetError,
                       match=f"other rules or raw files than this build's: clicks-2.csv: absent "
                             f"-> {size:,} bytes modified 20"):
        build_click_log("$SHOP_OUT", "$SHOP_LOGS", **shop)
    assert data.Dataset("click_log/shop", str(out)).statistics == first
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["config"]["files"] == "clicks-*.csv" and list(metadata["raw_files"]) \
        == ["clicks-1.csv"]
    del metadata["config"], metadata["raw_files"]  # as built before builds were recorded
    (folder / "metadata.json").write_text(json.dumps(metadata))
    capsys.readouterr()
    build_click_log("$SHOP_OUT", "$SHOP_LOGS", **shop, test_days=2)
    captured = capsys.readouterr()
    assert f"Warning: click_log/shop in {folder} was built before builds recorded their " \
           f"config and raw files" in captured.err
    assert "Statistics of click_log/shop" in captured.out
    assert data.Dataset("click_log/shop", str(out)).statistics == first
    assert not list(pathlib.Path.cwd().glob("$SHOP*"))


@pytest.mark.parametrize("name, raw", [("yoochoose/yoochoose_full", "yoochoose-clicks.dat"),
                                       ("diginetica", "train-item-views.csv")])
def test_named_config_rebuilt_from_a_changed_raw_file_fails(tiny_manual, tmp_path, name, raw):
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(tiny_manual / raw, manual / raw)
    data.build_dataset(name, str(manual), str(tmp_path / "out"))
    size = (manual / raw).stat().st_size
    with open(manual / raw, "a") as log:
        log.write(log_line := (tiny_manual / raw).read_text().splitlines()[-1] + "\n")
    with pytest.raises(session_prefixes.StaleDatasetError,
                       match=f"{raw}: {size:,} bytes modified .+ -> "
                             f"{size + len(log_line):,} bytes modified "):
        data.build_dataset(name, str(manual), str(tmp_path / "out"))


def test_nightly_end_date_recipe_builds_one_dataset_a_day(tiny_manual, tmp_path):
    """The daily recipe: `to_<DAY>` from base + end_date over a log that grows each night (it
    holds today's clicks too). Each night's name builds its own dataset; rebuilding a day's
    name after the log changed stops rather than reuse it."""
    lines = (tiny_manual / "yoochoose-clicks.dat").read_text().splitlines(keepends=True)
    raw = tmp_path / "raw"
    raw.mkdir()
    out, yoochoose = str(tmp_path / "tfds"), yoochoose_dataset_builder.Builder
    statistics = []
    for day, today in (("2014-04-06", "2014-04-07"), ("2014-04-07", "2014-04-08")):
        (raw / "yoochoose-clicks.dat").write_text(
            "".join(line for line in lines if line.split(",")[1][:10] <= today))
        name = f"to_{day.replace('-', '')}"
        build_click_log(out, str(raw), yoochoose, name=name, base="yoochoose_full", end_date=day)
        statistics.append(data.Dataset(f"yoochoose/{name}", out).statistics)
    assert statistics[0]["clicks"] < statistics[1]["clicks"]
    with pytest.raises(session_prefixes.StaleDatasetError, match="yoochoose/to_20140406 in .+: "
                       "yoochoose-clicks.dat: "):
        build_click_log(out, str(raw), yoochoose, name="to_20140406", base="yoochoose_full",
                        end_date="2014-04-06")


def test_tfds_build_cli_expands_home_and_stops_a_stale_name_in_one_line(shop_cli_build):
    """`tfds build ... --data_dir=~/tensorflow_datasets --manual_dir=~/shop_logs` from another
    folder (no shell expands `~` after `=`): the dataset lands under HOME, nothing named `~`
    in the working folder. The same name with other rules then exits 1 on one line."""
    run, home, cwd, out = (shop_cli_build.run, shop_cli_build.home, shop_cli_build.cwd,
                           shop_cli_build.out)
    assert run.returncode == 0, run.stderr[-3000:]
    first = data.Dataset("click_log/my_shop", str(out)).statistics
    assert list(cwd.iterdir()) == []
    changed = {**SHOP_JSON, "test_days": 1, "min_item_support": 10}
    run = tfds_cli(CLICK_LOG_BUILDER, f"--config={json.dumps(changed)}", *HOME_PATHS, cwd=cwd,
                   HOME=str(home))
    assert run.returncode == 1
    folder = out / "click_log" / "my_shop" / "1.0.0"
    assert run.stderr.strip().splitlines()[-1] == (
        f"tfds build: click_log/my_shop in {folder} was built with other rules or raw files "
        f"than this build's: min_item_support: 3 -> 10; test_days: 2 -> 1. Pick another "
        f"config name, or delete {folder} (tfds build --overwrite does) to rebuild it.")
    assert "Traceback" not in run.stderr and "Statistics of" not in run.stdout
    assert data.Dataset("click_log/my_shop", str(out)).statistics == first


def test_tfds_build_cli_bad_json_config_in_one_line(tmp_path):
    run = tfds_cli("tfds_builders/click_log", '--config={"name": "shop", "files": clicks.csv}',
                   f"--data_dir={tmp_path}")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "tfds build: --config is not valid JSON: Expecting value: line 1 column 27 (char 26)")
    assert "Traceback" not in run.stderr
