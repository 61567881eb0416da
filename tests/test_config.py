"""narm_tf.config: every flag is one declared setting with a role, and the flags, checks, resume
and warm-start rules, the tuner's table and the model's defaults all follow the declarations."""

import dataclasses
import inspect
import os

import numpy as np
import pytest
from absl import flags

from narm_tf import config as config_lib
from narm_tf.training import run_dir, warm_start

from conftest import ROOT

# The rules as they stood when they were spread over run_dir and warm_start: a setting moved to
# another role changes which runs resume or warm-start, so it must change here too.
RESUMABLE = {"epochs", "patience", "export_base", "export_k", "eval_batch_size", "train_metrics",
             "steps_per_execution", "jit_compile", "data_dir", "model_dir", "overwrite", "input"}
ARCHITECTURE = {"embedding_dim", "hidden_units", "variant", "decoder", "attention", "repeat",
                "repeat_explore", "repeat_calibrate", "refit"}
OLDER_RUNS = {"warm_start_from": "", "input": "auto", "mixed_precision": "off", "repeat": False,
              "loss": "full", "num_negatives": 1024, "warm_validation": "unseen",
              "repeat_explore": "all", "repeat_calibrate": False, "refit": False,
              "learning_rate_decay": 1.0, "covisit": 0}


def _parsed(*argv) -> flags.FlagValues:
    from narm_tf import train

    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["narm_tf.train", *argv])
    return flag_values


def _other_value(spec: config_lib.Setting):
    """A value of `spec` other than its default that its check accepts."""
    if spec.choices:
        return next(choice for choice in spec.choices if choice != spec.default)
    return {bool: lambda: not spec.default, int: lambda: spec.default + 1,
            float: lambda: spec.default / 2, list: lambda: ["2", "4"],
            str: lambda: spec.default + "_other"}[spec.type]()


def test_a_setting_cannot_be_declared_without_a_role():
    with pytest.raises(TypeError, match="role"):
        @dataclasses.dataclass(frozen=True)
        class Unclassified:
            new_flag: int = config_lib.setting(1, "A flag nobody classified.")
    with pytest.raises(ValueError, match="setting role 'tunable': must be one of"):
        config_lib.setting(1, "A flag with no such role.", role="tunable")


def test_every_setting_has_a_role_help_and_a_default_and_older_value_it_accepts():
    assert len(config_lib.SETTINGS) == 37
    for name, spec in config_lib.SETTINGS.items():
        assert spec.role in config_lib.ROLES, name
        assert spec.help.strip() and spec.group in config_lib.GROUPS, name
        assert spec.type in (bool, int, float, str, list), name
        assert spec.check is None or spec.check.accepts(spec.default), name
        assert spec.needs is None or config_lib.SETTINGS[spec.needs].type is bool, name
    assert config_lib.with_role(config_lib.RESUMABLE) == RESUMABLE
    assert config_lib.with_role(config_lib.ARCHITECTURE) == ARCHITECTURE
    assert config_lib.older_run_values() == OLDER_RUNS
    for name, value in OLDER_RUNS.items():
        check = config_lib.SETTINGS[name].check
        assert check is None or check.accepts(value), name


def test_the_command_defines_exactly_the_settings_with_their_defaults_types_and_checks():
    parsed = _parsed()
    assert set(parsed) == set(config_lib.SETTINGS)  # a flag added beside the table fails here
    assert config_lib.from_flags(parsed) == config_lib.default_config()
    assert config_lib.default_config()["data_dir"] == os.path.expanduser("~/tensorflow_datasets")
    typed = _parsed("--embedding_dim=64", "--learning_rate=0.004", "--norefit",
                    "--length_buckets=2,4", "--variant=local", "--data_dir=~/somewhere")
    assert (typed.embedding_dim, typed.learning_rate, typed.refit) == (64, 0.004, False)
    assert (typed.length_buckets, typed.variant) == (["2", "4"], "local")
    assert typed.data_dir == os.path.expanduser("~/somewhere")
    with pytest.raises(flags.IllegalFlagValueError, match="--patience must be an integer >= 1"):
        _parsed("--patience=0")
    with pytest.raises(flags.IllegalFlagValueError, match="one of <global|local|hybrid>"):
        _parsed("--variant=bogus")


def test_every_shipped_flagfile_parses_unchanged_and_passes_the_checks():
    folder = ROOT / "narm_tf" / "configs"
    configs = {path.name: config_lib.from_flags(_parsed(f"--flagfile={path}"))
               for path in sorted(folder.glob("*.cfg"))}
    assert len(configs) >= 8
    for config in configs.values():
        config_lib.check_config(config)
    tuned = configs["yoochoose_sample_tuned.cfg"]
    assert (tuned["embedding_dim"], tuned["attention"], tuned["learning_rate_decay"],
            tuned["refit"]) == (150, "softmax", 0.8, True)
    assert configs["repeat_shop.cfg"]["repeat_explore"] == "new"


def test_checks_refuse_values_and_combinations_naming_the_flag():
    base = config_lib.default_config()
    with pytest.raises(ValueError, match=r"--variant='bogus': must be global, local or hybrid"):
        config_lib.check_config({**base, "variant": "bogus"})
    with pytest.raises(ValueError, match=r"--loss='mean': must be full or sampled"):
        config_lib.check_config({**base, "loss": "mean"})
    with pytest.raises(ValueError, match=r"--repeat_calibrate=True needs --repeat"):
        config_lib.check_config({**base, "repeat_calibrate": True})
    with pytest.raises(ValueError, match=r"unknown training settings: \['hiden_units'\]"):
        config_lib.default_config(hiden_units=8)


def test_the_typed_view_groups_the_flat_config_and_refuses_an_incomplete_one():
    config = config_lib.default_config(hidden_units=8, refit=True)
    typed = config_lib.Config.from_dict({**config, "run_id": "x", "vocabulary_size": 3})
    assert (typed.model.hidden_units, typed.training.refit) == (8, True)
    assert typed.runtime.model_dir == "runs/narm" and typed.data.length_buckets == []
    assert typed.as_dict() == config
    assert config_lib.Config().as_dict()["data_dir"] == "~/tensorflow_datasets"  # unexpanded
    with pytest.raises(ValueError, match=r"lacks the settings \['seed'\]"):
        config_lib.Config.from_dict({k: v for k, v in config.items() if k != "seed"})


def test_resume_and_warm_start_follow_each_settings_role():
    base = {**config_lib.default_config(), "run_id": "r", "dataset_version": "2.0.0",
            "vocabulary_size": 120}
    for name, spec in config_lib.SETTINGS.items():
        changed = {**base, name: _other_value(spec)}
        resumes = not run_dir.differences(base, changed)
        warm_starts = not warm_start.architecture_differences(base, changed)
        assert resumes == (spec.role == config_lib.RESUMABLE), name
        assert warm_starts == (spec.role != config_lib.ARCHITECTURE), name
    for key in run_dir.IDENTITY:  # the dataset's identity: a resume keeps it, a warm start not
        assert run_dir.differences(base, {**base, key: "other"})
        assert not warm_start.architecture_differences(base, {**base, key: "other"})


def test_an_older_config_json_resumes_or_names_the_setting_it_does_not_record(tmp_path):
    identity = run_dir.new_identity(config_lib.default_config(model_dir=str(tmp_path)), "2.0.0",
                                    120)
    older = {k: v for k, v in identity.items() if k not in OLDER_RUNS}  # before those flags
    run_dir.write_json(run_dir.path(str(tmp_path), run_dir.CONFIG), older)
    os.makedirs(tmp_path / run_dir.BACKUP)
    config, resuming = run_dir.start(str(tmp_path), identity, overwrite=False)
    assert resuming and config["run_id"] == older["run_id"]
    # A setting the run could not have had: refused, naming it.
    with pytest.raises(run_dir.RunFolderError, match="--refit: False there, True now"):
        run_dir.start(str(tmp_path), {**identity, "refit": True}, overwrite=False)
    # A setting every run records, missing: no value to compare, so refused saying so.
    del older["length_buckets"]
    run_dir.write_json(run_dir.path(str(tmp_path), run_dir.CONFIG), older)
    with pytest.raises(run_dir.RunFolderError, match=r"--length_buckets: not recorded there "
                                                     r"\(written before the flag existed\), "
                                                     r"\[\] now\)"):
        run_dir.start(str(tmp_path), identity, overwrite=False)


def test_the_tuners_table_and_run_local_flags_come_from_the_settings():
    from narm_tf import tune

    # The order the shipped searches ran in (KerasTuner's draws follow it), then the rows added
    # since (the repeat mechanism and the co-visitation prior).
    assert list(tune.SEARCH_SPACE) == ["learning_rate", "embedding_dropout",
                                       "representation_dropout", "embedding_dim", "hidden_units",
                                       "batch_size", "attention", "epochs", "patience",
                                       "repeat", "covisit"]
    assert tune.SEARCH_SPACE["learning_rate"] == ("log", 5e-4, 1e-2)
    assert tune.SEARCH_SPACE["embedding_dropout"] == ("range", 0.0, 0.5, 0.05)
    assert tune.OPTIONAL_SPACE == {"learning_rate_decay": ("choice", [1.0, 0.9, 0.85, 0.8])}
    assert tune.CONDITIONAL_SPACE == {
        "repeat_explore": ("repeat", [True], ("choice", ["all", "new"])),
        "repeat_calibrate": ("repeat", [True], ("choice", [False, True]))}
    assert set(tune.RUN_LOCAL) == {"data_dir", "model_dir", "overwrite", "export_base", "seed",
                                   "num_cpu_devices"}
    positions = [spec.search.position for spec in config_lib.SETTINGS.values()
                 if spec.search is not None and spec.search.position is not None]
    assert sorted(positions) == list(range(len(tune.SEARCH_SPACE)))


def test_the_models_defaults_and_metric_names_are_the_settings():
    from narm_tf.model import narm, sampled

    model_defaults = dataclasses.asdict(config_lib.ModelConfig())
    parameters = inspect.signature(narm.build_narm).parameters
    assert {name: parameters[name].default for name in model_defaults} == model_defaults
    compile_parameters = inspect.signature(narm.compile_narm).parameters
    defaults = config_lib.default_config()
    for name in ("learning_rate", "train_metrics", "steps_per_execution"):
        assert compile_parameters[name].default == defaults[name], name
    assert compile_parameters["k"].default == config_lib.K == 20
    assert inspect.signature(sampled.attach).parameters["num_negatives"].default == \
        defaults["num_negatives"]
    assert narm.VARIANTS == config_lib.SETTINGS["variant"].choices

    model = narm.compile_narm(narm.build_narm(5, embedding_dim=4, hidden_units=4),
                              jit_compile=False)
    logs = model.evaluate(np.array([[1, 2], [3, 0]]), np.array([3, 4]), verbose=0,
                          return_dict=True)
    assert {config_lib.RECALL, config_lib.MRR} <= set(logs) and config_lib.RECALL == "recall@20"
    assert run_dir.MONITOR == "val_" + config_lib.RECALL
