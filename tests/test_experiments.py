"""narm_tf.experiments: the runs the tables need, and resuming from the per-experiment cache."""

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
