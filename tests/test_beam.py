"""The Beam path (`tfds build --beam_pipeline_options`) builds the same dataset as in memory.

Each test builds through the real TFDS builders twice, once per path, and compares what a
reader loads back from disk: every split's examples in order, the vocabulary, the statistics.
"""

import dataclasses
import os
import pathlib
import subprocess

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from narm_tf import synthetic
from narm_tf.data import beam as beam_path
from narm_tf.data.clicks import InputError, read_yoochoose_clicks
from tfds_builders.click_log import click_log_dataset_builder as click_log
from tfds_builders.diginetica import diginetica_dataset_builder as diginetica
from tfds_builders.yoochoose import yoochoose_dataset_builder as yoochoose

from conftest import ROOT, shared_file

# The in-process builds name the runner Beam's DirectRunner hands a batch pipeline to when it
# has no Prism binary (Prism is downloaded on first use, which fails offline): each build skips
# the failed Prism attempt (~2-3 s CPU: a pipeline proto, a worker pool, the download), and
# runs on the runner the worker settings configure whether or not Prism could be fetched. The
# tfds CLI test keeps the DirectRunner's own choice.
FN_API_RUNNER = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# Two workers as threads: the pipeline is still split into bundles and its transforms pickled;
# worker processes (each its own TensorFlow start) are the tfds CLI test's.
TWO_WORKERS = [FN_API_RUNNER, "--direct_num_workers=2", "--direct_running_mode=multi_threading"]
IN_PROCESS = [FN_API_RUNNER, "--direct_num_workers=1", "--direct_running_mode=in_memory"]
READ_BATCH = 65_536  # examples per batch when a split is read back (`load`)


def build(builder_class, manual, data_dir, beam_args=None, **kwargs) -> dict:
    """Builds (on Beam if beam_args is not None), then loads it back from its directory:
    {split: (prefixes, labels, lengths, session_ids) lists} plus vocabulary and statistics."""
    builder = builder_class(data_dir=str(data_dir), **kwargs)
    options = None if beam_args is None else PipelineOptions(beam_args)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), beam_options=options))
    return load(builder.data_dir)


def load(directory) -> dict:
    """What TFDS reads back from `directory`: each split's examples in order as (prefix,
    label, length, session_id) tuples of Python ints, plus vocabulary and statistics. The
    split is read in batches (ragged: a prefix keeps its own length, no padding added), a
    few times cheaper than one example at a time through tfds.as_numpy."""
    loaded = tfds.builder_from_directory(str(directory))
    result = {"vocabulary": list(loaded.info.metadata["vocabulary"]),
              "statistics": dict(loaded.info.metadata["statistics"])}
    for split in ("train", "validation", "test"):
        dataset = loaded.as_dataset(split=split, shuffle_files=False).ragged_batch(READ_BATCH)
        result[split] = [row for batch in dataset for row in zip(
            *(as_lists(batch[key]) for key in ("prefix", "label", "length", "session_id")),
            strict=True)]
    return result


def as_lists(column: tf.Tensor | tf.RaggedTensor) -> list:
    """A batch's column as Python lists: one value (or list, for a ragged prefix) per example."""
    return column.to_list() if isinstance(column, tf.RaggedTensor) else column.numpy().tolist()


def assert_same(beam: dict, memory: dict) -> None:
    assert beam["statistics"] == memory["statistics"]
    assert list(beam["statistics"]) == list(memory["statistics"])  # stored in one order
    assert beam["vocabulary"] == memory["vocabulary"]
    for split in ("train", "validation", "test"):
        assert len(beam[split]) == len(memory[split]), split
        assert beam[split] == memory[split], split


# ------------------------------------------------------------------- a log checked by hand


def hand_log(folder: pathlib.Path) -> None:
    """Two files; sessions 7 and 5 share a date and span both files; 7 has a time tie."""
    (folder / "a.csv").write_text("session_id,item_id,time\n"
                                  "7,30,1000\n5,10,1000\n7,20,1000\n")
    (folder / "b.csv").write_text("session_id,item_id,time\n"
                                  "5,40,2000\n7,50,2000\n9,60,200000\n9,30,200000\n9,20,200001\n")


HAND = click_log.ClickLogConfig(name="hand", time_format="epoch_s", min_item_support=1,
                                validation_share=0.5)


@pytest.mark.parametrize("beam_args, chunk_bytes", [(None, None), (IN_PROCESS, None),
                                                    (IN_PROCESS, 8)],
                         ids=["in_memory", "beam", "beam_csv_byte_ranges"])
def test_hand_log_order_ties_and_vocabulary(tmp_path, monkeypatch, beam_args, chunk_bytes):
    """Session 7 before 5 (same date: 7 appears first in the log); within 7, the tied clicks
    at t=1000 keep file order (30 then 20); vocabulary 30,20,50,10,40 -> 1..5; test session 9
    [60,30,20] keeps [30,20]; the split date is 200001 - 86400 = 113601. Validation: 1 of
    the 2 train sessions, the first of np.random.default_rng(0).permutation(2) = [0, 1]:
    session 7, the first in date order. With 8-byte ranges, every CSV line is its own read
    task (some ranges hold no line start), so order and ties cross tasks."""
    if chunk_bytes:
        monkeypatch.setattr(beam_path, "CSV_CHUNK_BYTES", chunk_bytes)
    hand_log(tmp_path)
    built = build(click_log.Builder, tmp_path, tmp_path / "out", beam_args, config=HAND)
    assert built["vocabulary"] == [30, 20, 50, 10, 40]
    assert built["train"] == [([4], 5, 1, 5)]
    assert built["validation"] == [([1, 2], 3, 2, 7), ([1], 2, 1, 7)]
    assert built["test"] == [([1], 2, 1, 9)]
    assert built["statistics"] == {
        "clicks": 8, "duplicate_clicks": 0, "train_sessions": 2, "test_sessions": 1,
        "vocabulary_size": 5, "train_prefixes": 3, "train_items": 5, "kept_train_sessions": 2,
        "validation_sessions": 1, "validation_prefixes": 2, "test_prefixes": 1,
        "average_length": pytest.approx(7 / 3), "split_date": 113601, "fraction": 1,
        "first_click": "1970-01-01T00:16:40Z", "last_click": "1970-01-03T07:33:21Z"}


# ---------------------------------------------------------------------- the shared samples


def test_diginetica_sample_two_workers(tmp_path):
    """DIGINETICA (days, timeframe order) on 2 workers: identical dataset."""
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-item-views.csv").symlink_to(
        shared_file("diginetica_sample/train-item-views.csv"))
    memory = build(diginetica.Builder, manual, tmp_path / "memory")
    beam = build(diginetica.Builder, manual, tmp_path / "beam", TWO_WORKERS)
    assert_same(beam, memory)
    assert memory["statistics"]["test_prefixes"] == 99  # the samples' table in docs/data.md


def test_yoochoose_sample_one_64th(tmp_path):
    """YOOCHOOSE 1/64: the fraction cut and the validation draw among the kept sessions."""
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "yoochoose-clicks.dat").symlink_to(
        shared_file("yoochoose_sample/yoochoose-clicks.dat"))
    memory = build(yoochoose.Builder, manual, tmp_path / "memory", config="yoochoose1_64")
    beam = build(yoochoose.Builder, manual, tmp_path / "beam", IN_PROCESS,
                 config="yoochoose1_64")
    assert_same(beam, memory)
    assert memory["statistics"]["train_prefixes"] == 814  # the samples' table in docs/data.md


# ------------------------------------------------------------------------ a synthetic log


def test_synthetic_log_in_three_files_two_workers(tmp_path, monkeypatch):
    """A synthetic log split into 3 CSV files mid-session, read in 4 KiB byte ranges, with
    rules other than the defaults (fraction 4, validation 20%, seed 3): identical dataset on
    2 workers."""
    monkeypatch.setattr(beam_path, "CSV_CHUNK_BYTES", 4096)
    manual = tmp_path / "manual"
    manual.mkdir()
    path = synthetic.write_synthetic_clicks(str(tmp_path), num_sessions=3000, num_items=300,
                                            num_days=8)
    lines = pathlib.Path(path).read_text().splitlines(keepends=True)
    third = len(lines) // 3
    for part in range(3):
        rows = lines[part * third:] if part == 2 else lines[part * third:(part + 1) * third]
        (manual / f"clicks-{part}.csv").write_text("".join(rows))
    config = click_log.ClickLogConfig(
        name="synthetic", files="clicks-*.csv", header=False, session=0, time=1, item=2,
        fraction=4, validation_share=0.2, seed=3)
    memory = build(click_log.Builder, manual, tmp_path / "memory", config=config)
    beam = build(click_log.Builder, manual, tmp_path / "beam", TWO_WORKERS, config=config)
    assert_same(beam, memory)
    assert memory["statistics"]["clicks"] == len(lines)
    assert memory["statistics"]["validation_sessions"] == \
        int(0.2 * memory["statistics"]["kept_train_sessions"]) >= 1


def test_parquet_row_groups_and_csv_of_the_same_clicks(tmp_path):
    """A Parquet log read in row groups of 500 (each a read task) across 2 files, on Beam,
    and the same clicks as one CSV in memory: identical datasets."""
    path = synthetic.write_synthetic_clicks(str(tmp_path), num_sessions=600, num_items=80,
                                            num_days=6)
    clicks = read_yoochoose_clicks(path)
    frame = pd.DataFrame({"sid": clicks["session_id"], "sku": clicks["item_id"],
                          "ts": clicks["time"]})
    half = len(frame) // 2  # mid-session: sessions span both files
    for part, rows in enumerate((frame[:half], frame[half:])):
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False),
                       tmp_path / f"clicks-{part}.parquet", row_group_size=500)
    frame.to_csv(tmp_path / "clicks.csv", index=False)
    rules = {"session": "sid", "item": "sku", "time": "ts", "time_format": "epoch_ms",
             "validation_share": 0.2}
    parquet = click_log.ClickLogConfig(name="parquet", files="clicks-*.parquet", **rules)
    csv = click_log.ClickLogConfig(name="csv", files="clicks.csv", **rules)
    assert pq.ParquetFile(tmp_path / "clicks-0.parquet").metadata.num_row_groups >= 2
    memory = build(click_log.Builder, tmp_path, tmp_path / "memory", config=csv)
    beam = build(click_log.Builder, tmp_path, tmp_path / "beam", IN_PROCESS, config=parquet)
    assert_same(beam, memory)
    assert memory["statistics"]["clicks"] == len(frame)


# ----------------------------------------------------------------------------- the CLI


def tfds_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs `tfds build ...` from the repository root (as tests/test_builders.py does)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(["tfds", "build", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_tfds_build_cli_with_beam_pipeline_options(tmp_path):
    """`tfds build --beam_pipeline_options=...` runs the Beam path and builds the same
    dataset as the in-process default build."""
    hand_log(tmp_path)
    config = '{"name": "hand", "time_format": "epoch_s", "min_item_support": 1, ' \
             '"validation_share": 0.5}'
    run = tfds_cli("tfds_builders/click_log", f"--config={config}", f"--manual_dir={tmp_path}",
                   f"--data_dir={tmp_path / 'beam'}",
                   "--beam_pipeline_options=direct_num_workers=2,"
                   "direct_running_mode=multi_processing")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Statistics of click_log/hand" in run.stdout
    beam_dir = next((tmp_path / "beam" / "click_log" / "hand").iterdir())
    memory = build(click_log.Builder, tmp_path, tmp_path / "memory", config=HAND)
    assert_same(load(beam_dir), memory)


def test_missing_column_fails_before_the_pipeline_runs(tmp_path):
    """The Beam path checks the files' columns when it builds the graph, naming them."""
    hand_log(tmp_path)
    bad = dataclasses.replace(HAND.log, item="sku")
    with pytest.raises(InputError, match=r"a\.csv, line 1: no column 'sku'"):
        beam_path.Preprocess([str(tmp_path / "a.csv")], bad)


def test_bad_line_in_a_csv_byte_range_is_named_by_its_line_in_the_file(tmp_path, monkeypatch):
    """A bad value read in a byte range is reported with its line number in the whole file."""
    monkeypatch.setattr(beam_path, "CSV_CHUNK_BYTES", 8)
    hand_log(tmp_path)
    text = (tmp_path / "b.csv").read_text().replace("9,30,200000", "9,30,2000x0")
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(Exception, match=r"b\.csv, line 5: field 3 \(time\) value '2000x0' "
                                        r"is not an integer count of seconds"):
        with beam.Pipeline(options=PipelineOptions(IN_PROCESS)) as pipeline:
            _ = pipeline | beam_path.Preprocess(
                [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], HAND.log)


def test_time_ordered_validation_and_string_ids_are_identical_on_beam(tmp_path):
    """The newest 20% of the training sessions as validation, over string session ids and
    SKUs: the same dataset in memory and on Beam (vocabulary of strings included)."""
    manual = tmp_path / "manual"
    manual.mkdir()
    path = synthetic.write_synthetic_clicks(str(manual), num_sessions=600, num_items=80)
    clicks = pd.read_csv(path, header=None, names=["sid", "ts", "item", "cat"], dtype=str)
    pd.DataFrame({"sid": "v" + clicks["sid"], "sku": "SKU-0" + clicks["item"],
                  "ts": clicks["ts"]}).to_csv(manual / "clicks.csv", index=False)
    config = click_log.ClickLogConfig(name="newest", files="clicks.csv", session="sid",
                                      item="sku", time="ts", validation="time",
                                      validation_share=0.2)
    memory = build(click_log.Builder, manual, tmp_path / "memory", config=config)
    beam = build(click_log.Builder, manual, tmp_path / "beam", IN_PROCESS, config=config)
    assert_same(beam, memory)
    assert all(item.startswith("SKU-0") for item in memory["vocabulary"])
    validation = {session for *_, session in memory["validation"]}
    train = {session for *_, session in memory["train"]}
    assert len(validation) == memory["statistics"]["validation_sessions"] > 0
    assert not validation & train


WINDOW = click_log.ClickLogConfig(name="to_0405", base="yoochoose_full", end_date="2014-04-05")


@pytest.fixture(scope="module")
def window_in_memory(tmp_path_factory) -> tuple[pathlib.Path, list[str], dict]:
    """A 7-day synthetic log (from 2014-04-01) in a manual dir, its lines, and its WINDOW
    built in memory and loaded back: the reference of both read modes below (the in-memory
    path reads whole files whatever CSV_CHUNK_BYTES says)."""
    manual = tmp_path_factory.mktemp("window") / "manual"
    manual.mkdir()
    path = synthetic.write_synthetic_clicks(str(manual), num_sessions=1200, num_items=150)
    lines = open(path).read().splitlines()
    memory = build(yoochoose.Builder, manual, manual.parent / "memory", config=WINDOW)
    return manual, lines, memory


@pytest.mark.parametrize("chunk_bytes", [None, 4096], ids=["whole_file", "byte_ranges"])
def test_end_date_window_is_identical_on_beam(tmp_path, monkeypatch, chunk_bytes,
                                              window_in_memory):
    """A window ending 2014-04-05 of a 7-day synthetic log (from 2014-04-01): the same
    dataset in memory and on Beam, whether the cut falls in whole files or byte ranges; its
    clicks are those dated before 2014-04-06T00:00Z."""
    if chunk_bytes:
        monkeypatch.setattr(beam_path, "CSV_CHUNK_BYTES", chunk_bytes)
    manual, lines, memory = window_in_memory
    kept = sum(line.split(",")[1] < "2014-04-06" for line in lines)
    beam = build(yoochoose.Builder, manual, tmp_path / "beam", IN_PROCESS, config=WINDOW)
    assert_same(beam, memory)
    assert memory["statistics"]["clicks"] == kept < len(lines)
    assert memory["statistics"]["split_date"] < 1396742400  # 2014-04-06T00:00Z
