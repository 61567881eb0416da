"""narm_tf.experiments: the runs the tables need, and resuming from the per-experiment cache."""

import pytest

from narm_tf import experiments


def test_every_table_cell_has_exactly_one_run():
    runs = experiments.model_runs(seeds=3)
    names = [run.name for run in runs]
    assert len(names) == len(set(names)) == 12
    by_name = {run.name: run for run in runs}
    assert {by_name[f"narm_seed{s}"].seed for s in range(3)} == {0, 1, 2}
    assert all(by_name[f"gru_seed{s}"].variant == "global" and
               by_name[f"gru_seed{s}"].decoder == "dense" for s in range(3))
    assert by_name["narm_dense"].decoder == "dense" and by_name["narm_dense"].variant == "hybrid"
    for variant in ("global", "local", "hybrid"):
        for hidden in (50, 100):
            run = by_name[experiments.table4_run(variant, hidden)]
            assert (run.variant, run.hidden_units, run.decoder) == (variant, hidden, "bilinear")


def test_runner_computes_once_then_reads_the_cache(tmp_path, capsys):
    calls = []

    def compute():
        calls.append(1)
        return {"recall": 50.0, "mrr": 20.0}

    first = experiments.Runner(str(tmp_path), total=1).run("exp", compute)
    second = experiments.Runner(str(tmp_path), total=1).run("exp", compute)
    assert len(calls) == 1
    assert second == first and first["recall"] == 50.0 and "seconds" in first
    assert "[1/1] exp: cached" in capsys.readouterr().out
    assert not list(tmp_path.glob("cache/*.tmp"))


def test_table_values_are_percent_except_popularity_bias():
    measured = {"recall": 0.5, "mrr": 0.25, "ndcg": 0.3, "coverage": 0.125,
                "popularity_bias": 0.0625, "count": 8}
    assert experiments.table_values(measured) == {"recall": 50.0, "mrr": 25.0, "ndcg": 30.0,
                                                  "coverage": 12.5, "popularity_bias": 0.0625}
    assert experiments.table_values({"recall": 0.5, "mrr": 0.25, "popularity_bias": None}) == {
        "recall": 50.0, "mrr": 25.0}


def test_table3_shows_beyond_accuracy_columns_and_dashes_for_old_cache_entries():
    figures = {"recall": 10.0, "mrr": 5.0, "ndcg": 6.0, "coverage": 1.5,
               "popularity_bias": 0.25}
    results = {f"baseline_{key}": dict(figures) for key in experiments.BASELINE_NAMES}
    results["baseline_pop"] = {"recall": 9.0, "mrr": 2.5}  # cached before the new metrics
    results["gru_seed0"] = results["gru_seed1"] = dict(figures)
    results["narm_seed0"] = {"recall": 60.0, "mrr": 30.0, "ndcg": 40.0, "coverage": 50.0,
                             "popularity_bias": 0.1}
    results["narm_seed1"] = {"recall": 62.0, "mrr": 32.0, "ndcg": 42.0, "coverage": 54.0,
                             "popularity_bias": 0.3}
    lines = experiments.table3_lines(results, seeds=2, column=0, reference={})
    assert lines[0].count("|") == 8 and "NDCG@20 | Coverage@20 | Pop. bias@20" in lines[0]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:]}
    assert rows["POP"] == ["9.00", "2.50", "-", "-", "-", "6.71 / 1.65 |"]
    assert rows["SR"][:5] == ["10.00", "5.00", "6.00", "1.50", "0.2500"]
    # Two seeds: mean ± sample standard deviation (sqrt(2) for 60/62, 0.1414 for 0.1/0.3).
    assert rows["NARM"] == ["61.00 ± 1.41", "31.00 ± 1.41", "41.00 ± 1.41", "52.00 ± 2.83",
                            "0.2000 ± 0.1414", "68.32 / 28.76 |"]
    with_reference = experiments.table3_lines(results, 2, 0, experiments.SAMPLE_REFERENCE)
    assert with_reference[2].endswith("| 6.71 / 1.65 | 8.9 / 2.6 |")


def test_kind_values_are_percent_and_empty_groups_lose_their_figures():
    by_kind = {"all": {"count": 4, "share": 1.0, "recall": 0.5, "mrr": 0.25, "ndcg": 0.375},
               "repeat": {"count": 0, "share": 0.0, "recall": None, "mrr": None, "ndcg": None}}
    assert experiments.kind_values(by_kind) == {
        "all": {"count": 4, "share": 100.0, "recall": 50.0, "mrr": 25.0, "ndcg": 37.5},
        "repeat": {"count": 0, "share": 0.0}}


def test_kind_table_has_repeat_and_new_columns_per_method_and_dashes_when_unknown():
    def kinds(repeat_recall, repeat_mrr, new_recall, new_mrr):
        return {"by_kind": {
            "repeat": {"count": 1, "share": 25.0, "recall": repeat_recall, "mrr": repeat_mrr},
            "new": {"count": 3, "share": 75.0, "recall": new_recall, "mrr": new_mrr}}}

    results = {f"baseline_{key}": kinds(80.0, 60.0, 10.0, 5.0)
               for key in experiments.BASELINE_NAMES}
    results["baseline_pop"] = {"recall": 9.0, "mrr": 2.5}  # cached before the kinds
    results["baseline_spop"]["by_kind"]["new"] = {"count": 0, "share": 0.0}  # no new target
    results["gru_seed0"] = results["gru_seed1"] = kinds(70.0, 40.0, 50.0, 20.0)
    results["narm_seed0"], results["narm_seed1"] = (kinds(90.0, 50.0, 60.0, 30.0),
                                                    kinds(92.0, 52.0, 62.0, 34.0))
    lines = experiments.kind_table_lines(results, seeds=2)
    assert lines[0] == ("| method | repeat share | repeat Recall@20 | repeat MRR@20 | new share "
                        "| new Recall@20 | new MRR@20 |") and lines[1].count("|") == 8
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:] if "|" in line}
    assert rows["POP"] == ["-"] * 5 + ["- |"]
    assert rows["S-POP"] == ["25.00", "80.00", "60.00", "0.00", "-", "- |"]
    assert rows["SR"] == ["25.00", "80.00", "60.00", "75.00", "10.00", "5.00 |"]
    assert rows["NARM"] == ["25.00", "91.00 ± 1.41", "51.00 ± 1.41", "75.00", "61.00 ± 1.41",
                            "32.00 ± 2.83 |"]
    assert "Repeat: the target is among the prefix's clicks" in lines[-1]


def test_tuned_runs_train_with_the_flagfile_and_only_seed_and_folders_on_top(tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    from narm_tf import train

    cfg = tmp_path / "best.cfg"
    cfg.write_text("# found by narm_tf.tune\n--hidden_units=64\n--epochs=7\n--patience=2\n"
                   "--learning_rate=0.004\n--seed=9\n")
    runs = experiments.model_runs(seeds=2, tuned_flagfile=str(cfg))
    tuned = [run for run in runs if run.flagfile]
    assert [(run.name, run.seed) for run in tuned] == [("tuned_seed0", 0), ("tuned_seed1", 1)]
    assert len(experiments.model_runs(seeds=2)) == len(runs) - 2

    with flagsaver.flagsaver(dataset="yoochoose/yoochoose_full", data_dir="/data", epochs=40):
        flags.FLAGS.mark_as_parsed()
        command = experiments.train_command(tuned[1], "/out/runs/tuned_seed1")
    assert command[1:3] == ["-m", "narm_tf.train"]
    parsed = flags.FlagValues()
    train.define_flags(parsed)
    parsed(["narm_tf.train", *command[3:]])
    assert (parsed.hidden_units, parsed.epochs, parsed.patience, parsed.learning_rate) == (
        64, 7, 2, 0.004)  # the flagfile's, not the experiments' --epochs=40
    assert (parsed.seed, parsed.model_dir, parsed.data_dir) == (1, "/out/runs/tuned_seed1",
                                                                "/data")


def test_table3_has_a_tuned_row_when_tuned_runs_exist():
    figures = {"recall": 10.0, "mrr": 5.0}
    results = {f"baseline_{key}": dict(figures) for key in experiments.BASELINE_NAMES}
    for name in ("gru_seed0", "gru_seed1", "narm_seed0", "narm_seed1"):
        results[name] = dict(figures)
    assert not any("tuned" in line for line in experiments.table3_lines(results, 2, None, {}))
    results["tuned_seed0"] = {"recall": 70.0, "mrr": 36.0}
    results["tuned_seed1"] = {"recall": 72.0, "mrr": 38.0}
    lines = experiments.table3_lines(results, 2, None, {})
    tuned = [line for line in lines if line.startswith("| NARM (tuned")]
    assert tuned == ["| NARM (tuned on validation) | 71.00 ± 1.41 | 37.00 ± 1.41 | - | - | - | - |"]


def test_repeat_rows_train_with_repeat_and_get_their_own_table3_row():
    from absl import flags
    from absl.testing import flagsaver

    runs = experiments.model_runs(seeds=2, repeat=True)
    repeat = [run for run in runs if run.repeat]
    assert [run.name for run in repeat] == ["repeat_seed0", "repeat_seed1"]
    with flagsaver.flagsaver(epochs=40):
        flags.FLAGS.mark_as_parsed()
        command = experiments.train_command(repeat[0], "/out/runs/repeat_seed0")
        assert {"--repeat", "--repeat_explore=new", "--repeat_calibrate"} <= set(command)
        assert "--repeat" not in experiments.train_command(runs[0], "/out/runs/narm_seed0")
    figures = {"recall": 10.0, "mrr": 5.0}
    results = {f"baseline_{key}": dict(figures) for key in experiments.BASELINE_NAMES}
    for name in ("gru_seed0", "gru_seed1", "narm_seed0", "narm_seed1"):
        results[name] = dict(figures)
    results["repeat_seed0"] = {"recall": 66.0, "mrr": 36.0}
    results["repeat_seed1"] = {"recall": 68.0, "mrr": 35.0}
    lines = experiments.table3_lines(results, 2, None, {})
    rows = [line for line in lines if line.startswith("| NARM (repeat-aware")]
    assert rows == ["| NARM (repeat-aware, beyond the paper) | 67.00 ± 1.41 | 35.50 ± 0.71 "
                    "| - | - | - | - |"]


def test_the_div_score_row_runs_v_sknn_with_its_score_decay(synthetic_data_dir):
    from narm_tf.data import dataset as data
    from narm_tf.research import baselines

    dataset = data.Dataset("yoochoose/yoochoose_full", synthetic_data_dir)
    splits = {s: dataset.split(s) for s in ("train", "validation", "test")}
    num_items = dataset.num_items
    row = experiments.run_baseline("vsknn_div", splits, num_items)
    direct = baselines.fit_and_evaluate("vsknn", splits["train"], splits["validation"],
                                        splits["test"], num_items, score_decay=True)
    assert row["mrr"] == pytest.approx(100 * direct["mrr"])
    assert row["recall"] == pytest.approx(100 * direct["recall"])
    kinds = row["by_kind"]  # in %, every test prefix a repeat or a new target
    assert kinds["repeat"]["count"] + kinds["new"]["count"] == row["count"] == len(splits["test"])
    assert kinds["repeat"]["recall"] == pytest.approx(100 * direct["by_kind"]["repeat"]["recall"])
    assert row != experiments.run_baseline("vsknn", splits, num_items)


def test_the_report_names_the_command_as_the_user_typed_it():
    from absl import flags
    from absl.testing import flagsaver

    argv = ["/venv/lib/python3.11/site-packages/narm_tf/experiments.py",
            "--dataset=yoochoose/yoochoose_full", "--data_dir=~/tensorflow_datasets",
            "--out=results/yoochoose_sample", "--epochs=40", "--tuned_flagfile=$CFG",
            "--reference", "yoochoose_sample", "--out=my report"]
    command = experiments.command_line(argv)
    assert command == ("python -m narm_tf.experiments --dataset=yoochoose/yoochoose_full "
                       "--data_dir=~/tensorflow_datasets --out=results/yoochoose_sample "
                       "--epochs=40 --tuned_flagfile=$CFG --reference yoochoose_sample "
                       "'--out=my report'")
    assert experiments.command_line(["/usr/bin/narm-experiments", "--out=r"]) == (
        "narm-experiments --out=r")
    # The header shows that command, not the expanded absolute path the flag holds.
    with flagsaver.flagsaver(dataset="yoochoose/yoochoose_full", out="/tmp/abs/report",
                             seeds=3, epochs=40, patience=5, batch_size=512, tuned_flagfile=""):
        flags.FLAGS.mark_as_parsed()
        header = "\n".join(experiments.header_lines(
            experiments.command_line(argv[:1] + ["--out=~/report"])))
    assert "Generated by `python -m narm_tf.experiments --out=~/report` (seeds 3, up to 40 " \
           "epochs, patience 5, batch 512)" in header
    assert "/tmp/abs" not in header
