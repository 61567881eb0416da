"""The training settings, declared once: typed, grouped, with default, help, check and role.

    Config
      data      DataConfig      which dataset, where, and how its batches are read
      model     ModelConfig     the network (`narm_tf.model.narm.build_narm`'s arguments)
      training  TrainingConfig  optimization, early stopping, what a run starts from, refit
      runtime   RuntimeConfig   the run folder, devices, compilation, precision, export

Each field is a `setting`: its default (the one place it is set), help text (the flag's), check
(the accepted range, tested when the command line is parsed and by `check_config`) and role:
  architecture  shapes the model: must match to resume a run and to warm-start from one;
  run           the run's own (what and how it trains): must match to resume a run, may differ
                from the run a warm start starts from;
  resumable     extends the run, says where things are, or changes how (not what) it computes:
                may change when a killed run resumes.
A tunable setting carries its search range (`search`); a setting added after runs were first
written names the value a config.json without it holds (`older_runs`); `needs` names the switch
a setting acts under; `run_local` marks where a run reads and writes (and its seed): never part
of a flagfile the tuner writes.

Everything else derives from this table: the absl flags (`define_flags`), `default_config`,
`check_config`, the resume rule (`narm_tf.training.run_dir`), the warm-start rule
(`narm_tf.training.warm_start`), the tuner's search table and run-local flags (`narm_tf.tune`)
and the model's defaults (`narm_tf.model.narm`, `narm_tf.model.sampled`). A new flag is one
`setting` here; `tests/test_config.py` checks that every flag has one and that the rules hold.

At run time a config is a flat dict `{name: value}` (what config.json holds and `train` takes);
`Config.from_dict` gives its typed, grouped view. No TensorFlow import here: the model and the
run folder import this module.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable

# ---------------------------------------------------------------------------- the metrics

K = 20  # The cutoff of Recall@K and MRR@K, as in the paper: selection, tuning and reports.


def metric_name(metric: str, k: int = K) -> str:
    """A compiled metric's name, Keras' log key: `metric_name("recall")` is "recall@20"."""
    return f"{metric}@{k}"


RECALL = metric_name("recall")
MRR = metric_name("mrr")
MONITOR = f"val_{RECALL}"  # The validation metric that selects best.keras (Keras' log key).

# ------------------------------------------------------------------------------ the roles

ARCHITECTURE = "architecture"  # must match to resume and to warm-start
RUN = "run"                    # must match to resume; may differ from a warm start's source
RESUMABLE = "resumable"        # may change when a killed run resumes
ROLES = (ARCHITECTURE, RUN, RESUMABLE)


@dataclasses.dataclass(frozen=True)
class Check:
    """A setting's accepted values: `accepts(value)`, and their range in words for messages
    ("--name must be {words}")."""

    accepts: Callable[[object], bool]
    words: str


@dataclasses.dataclass(frozen=True)
class Search:
    """A tunable setting's row in `narm_tf.tune`'s search: `kind` "choice" (`spec`: the
    values), "range" (low, high, step) or "log" (low, high, log-uniform). `position`: its place
    among the rows always searched (KerasTuner declares them, and trials.csv lists them, in
    this order: the order the searches behind the shipped tuned configs ran in); None for a row
    searched only when `--search` names it (`optional`) or under the switch it `needs`."""

    kind: str
    spec: tuple
    position: int | None = None
    optional: bool = False

    @property
    def row(self) -> tuple:
        """The row as `narm_tf.tune` declares it: ("choice", [values]) or (kind, *spec)."""
        return (self.kind, list(self.spec)) if self.kind == "choice" else (self.kind, *self.spec)


def choice(*values, position: int | None = None, optional: bool = False) -> Search:
    return Search("choice", values, position, optional)


def stepped(low: float, high: float, step: float, position: int | None = None) -> Search:
    return Search("range", (low, high, step), position)


def log_uniform(low: float, high: float, position: int | None = None) -> Search:
    return Search("log", (low, high), position)


def _at_least(minimum: int, words: str) -> Check:
    return Check(lambda value: value is not None and value >= minimum, words)


POSITIVE = _at_least(1, "an integer >= 1")
NON_NEGATIVE = _at_least(0, "an integer >= 0")
RATE = Check(lambda value: value is not None and 0 <= value < 1, "a rate in [0, 1)")


def _length_buckets(value) -> bool:
    from narm_tf.data import examples  # numpy only: a config is checked without TensorFlow

    try:
        examples.bucket_widths(value)
    except ValueError:
        return False
    return True


_NOT_RECORDED = object()  # `older_runs` of a setting every config.json records
_SPEC = "narm_tf.setting"  # the key of a field's declaration in its metadata


def setting(default, help_text: str, *, role: str, check: Check | None = None,
            choices: tuple = (), path: bool = False, search: Search | None = None,
            needs: str | None = None, older_runs=_NOT_RECORDED, run_local: bool = False):
    """A field of a settings group: its default, help and role (required: an unclassified
    setting cannot be declared), and optionally its check, choices (an enum flag), whether it
    is a path (`~` and `$VARIABLES` expanded), search range, the boolean switch it `needs`
    (its default unless that is on), the value a config.json written before it existed holds
    (`older_runs`), and whether it is `run_local`."""
    if role not in ROLES:
        raise ValueError(f"setting role {role!r}: must be one of {ROLES}")
    spec = dict(help=help_text, role=role, check=check, choices=tuple(choices), path=path,
                search=search, needs=needs, older_runs=older_runs, run_local=run_local)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={_SPEC: spec})
    return dataclasses.field(default=default, metadata={_SPEC: spec})


# --------------------------------------------------------------------------- the settings


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which built TFDS dataset a run reads, where, and how its batches are made."""

    dataset: str = setting(
        "yoochoose/yoochoose1_64",
        "TFDS name/config: yoochoose/yoochoose1_64, yoochoose/yoochoose1_4, "
        "yoochoose/yoochoose_full or diginetica.", role=RUN)
    data_dir: str = setting(
        "~/tensorflow_datasets",
        "TFDS data_dir holding the built dataset (`tfds build ... --data_dir`).",
        role=RESUMABLE, path=True, run_local=True)
    input: str = setting(
        "auto",
        "Read the splits whole into memory, or stream batches from the TFDS record files "
        "(bounded shuffle buffer). auto = stream when the splits' examples x "
        "narm_tf.data.dataset.BYTES_PER_PREFIX exceed half the available memory, or under "
        "TF_CONFIG multi-worker training (which always streams).",
        role=RESUMABLE, choices=("auto", "memory", "stream"), older_runs="auto")
    length_buckets: list[str] = setting(
        [],
        "Opt-in, e.g. 2,3,4,6,8,11,15 (narm_tf.data.dataset.DEFAULT_LENGTH_BUCKETS): "
        "group prefixes of similar length into each batch and cut it to the first "
        "width that holds them, so the GRU skips padding (one XLA compilation per "
        "width). Faster epochs, but each epoch learns less (measured on the demo "
        "data; see README). Empty (default): random batches, 19 wide.",
        role=RUN, check=Check(_length_buckets, "empty, or ascending distinct widths in 1..19"))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """NARM's network (paper section 3): `build_narm`'s arguments besides the catalogue size."""

    embedding_dim: int = setting(50, "Item embedding size D.", role=ARCHITECTURE,
                                 check=POSITIVE, search=choice(50, 100, 150, 200, position=3))
    hidden_units: int = setting(100, "GRU hidden units H.", role=ARCHITECTURE, check=POSITIVE,
                                search=choice(50, 100, 150, 200, position=4))
    variant: str = setting("hybrid", "Session feature: c_g, c_l or [c_g; c_l] (paper Table 4).",
                           role=ARCHITECTURE, choices=("global", "local", "hybrid"))
    decoder: str = setting("bilinear",
                           "Bilinear decoder (eq. 10) or fully connected (paper Table 2).",
                           role=ARCHITECTURE, choices=("bilinear", "dense"))
    attention: str = setting(
        "unnormalized",
        "Attention weights as in eq. 7-8 (unnormalized, the paper) or softmax.",
        role=ARCHITECTURE, choices=("unnormalized", "softmax"),
        search=choice("unnormalized", "softmax", position=6))
    embedding_dropout: float = setting(0.25, "Dropout between the embedding and the GRU.",
                                       role=RUN, check=RATE,
                                       search=stepped(0.0, 0.5, 0.05, position=1))
    representation_dropout: float = setting(0.5, "Dropout between c_t and the decoder.",
                                            role=RUN, check=RATE,
                                            search=stepped(0.0, 0.7, 0.05, position=2))
    repeat: bool = setting(
        False,
        "Beyond the paper: RepeatNet's repeat/explore gate over the session's own items "
        "(narm_tf.model.layers.RepeatExplore). Off = the paper.",
        role=ARCHITECTURE, search=choice(False, True, position=9), older_runs=False)
    repeat_explore: str = setting(
        "all",
        "With --repeat: what its explore mode recommends, the whole catalogue (all) or only "
        "items not in the session (new, RepeatNet's).",
        role=ARCHITECTURE, choices=("all", "new"), needs="repeat", search=choice("all", "new"),
        older_runs="all")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How the model trains (paper section 4.3.2), stops, starts, and is refit."""

    batch_size: int = setting(512, "Global batch size, split across replicas.", role=RUN,
                              check=POSITIVE, search=choice(128, 256, 512, position=5))
    learning_rate: float = setting(
        1e-3, "Adam learning rate.", role=RUN,
        check=Check(lambda value: value is not None and 0 < value < math.inf,
                    "a finite number > 0"),
        search=log_uniform(5e-4, 1e-2, position=0))
    learning_rate_decay: float = setting(
        1.0,
        "Beyond the paper: the learning rate of epoch e (from 0) is learning_rate x decay^e, "
        "in selection and --refit alike. 1 (default): constant, as the paper.",
        role=RUN, check=Check(lambda value: value is not None and 0 < value <= 1,
                              "a factor in (0, 1]"),
        search=choice(1.0, 0.9, 0.85, 0.8, optional=True), older_runs=1.0)
    epochs: int = setting(30, "Maximum epochs.", role=RESUMABLE, check=POSITIVE,
                          search=choice(30, 60, 100, position=7))
    patience: int = setting(5, "Early stopping: epochs without a better validation Recall@20.",
                            role=RESUMABLE, check=POSITIVE, search=choice(3, 5, 10, position=8))
    steps_per_epoch: int = setting(
        0, "Batches per epoch; 0 = one pass over the train split.", role=RUN,
        check=Check(NON_NEGATIVE.accepts,
                    "an integer >= 0 (0 = one pass over the train split)"))
    seed: int = setting(0, "Seed of initialization, dropout and shuffling.", role=RUN,
                        check=NON_NEGATIVE, run_local=True)
    loss: str = setting(
        "full",
        "full: softmax over all items (eq. 11, the paper). sampled: softmax over the target and "
        "--num_negatives shared negatives drawn from training-label counts^0.75, logQ-corrected, "
        "accidental hits removed (bilinear decoder only). Validation stays full-ranking.",
        role=RUN, choices=("full", "sampled"), older_runs="full")
    num_negatives: int = setting(1024, "Negatives per training batch with --loss=sampled.",
                                 role=RUN, check=POSITIVE, older_runs=1024)
    warm_start_from: str = setting(
        "",
        "A finished run folder to start from (narm_tf.training.warm_start): known items keep "
        "their rows, new items start at the mean row; architecture flags must match.",
        role=RUN, path=True, older_runs="")
    warm_validation: str = setting(
        "unseen",
        "With --warm_start_from: validate (early stopping, best.keras) on the validation "
        "sessions the old run did not train on (unseen), or on all of them.",
        role=RUN, choices=("unseen", "all"), older_runs="unseen")
    refit: bool = setting(
        False,
        "After early stopping chose the epoch on validation, train a fresh model (same "
        "settings and seed) on train + validation for that many epochs: final.keras, which "
        "the run then tests and exports (the baselines fit on train + validation too). "
        "Off: best.keras, trained on train only.",
        role=ARCHITECTURE, older_runs=False)
    repeat_calibrate: bool = setting(
        False,
        "With --repeat: after training, fit its two inverse temperatures (explore logits, "
        "repeat attention) on the validation split by cross-entropy "
        "(narm_tf.model.narm.calibrate_repeat) and save them into best.keras before the test.",
        role=ARCHITECTURE, needs="repeat", search=choice(False, True), older_runs=False)
    covisit: int = setting(
        0,
        "After training, add a co-visitation prior from the training sessions to the scores "
        "(narm_tf.model.covisit), keeping this many neighbours per item, its weight chosen on "
        "the validation split (0 when it does not help there); 0 = off, the paper's model.",
        role=RUN, check=NON_NEGATIVE, search=choice(0, 100, position=10), older_runs=0)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where a run writes, on which devices, compiled how, in which precision, exported where."""

    model_dir: str = setting("runs/narm", "The run folder: checkpoints, logs and metrics.",
                             role=RESUMABLE, path=True, run_local=True)
    overwrite: bool = setting(
        False,
        "Delete the results of an earlier run in --model_dir and start afresh. Without it, "
        "a rerun resumes a killed run with the same settings, and refuses anything else.",
        role=RESUMABLE, run_local=True)
    num_cpu_devices: int = setting(
        0,
        "Split the CPU into N logical devices for MirroredStrategy when no GPU is present "
        "(tests the multi-replica path on CPU); 0 or 1 = one device.",
        role=RUN, check=NON_NEGATIVE, run_local=True)
    jit_compile: str = setting(
        "auto",
        "XLA-compile the train step. auto = on, except across several logical CPU devices, "
        "where XLA cannot reach the other replicas' variables.",
        role=RESUMABLE, choices=("auto", "on", "off"))
    mixed_precision: str = setting(
        "off",
        "Keras dtype policy of the layers (variables stay float32; the item embedding, the "
        "scores and the loss stay float32). mixed_float16 (GPUs) scales the loss; "
        "mixed_bfloat16 suits CPUs with AVX512_BF16/AMX and TPUs. See README for what it did "
        "to speed and Recall@20 here.",
        role=RUN, choices=("off", "mixed_float16", "mixed_bfloat16"), older_runs="off")
    train_metrics: bool = setting(
        False,
        "Also compute Recall@20/MRR@20 on every training batch (validation always has "
        "them): one more pass over the [batch, N+1] scores per step.", role=RESUMABLE)
    steps_per_execution: int = setting(
        16,
        "Batches per call into the compiled train step (Keras compile option): fewer "
        "stalls between batches; callbacks see every Nth batch.", role=RESUMABLE,
        check=POSITIVE)
    eval_batch_size: int = setting(
        1024, "Batch size of validation and the final test evaluation.", role=RESUMABLE,
        check=POSITIVE)
    export_base: str = setting(
        "", "If set, export the best model for TF Serving to EXPORT_BASE/<version>.",
        role=RESUMABLE, path=True, run_local=True)
    export_k: int = setting(20, "Top-k of the exported signature.", role=RESUMABLE,
                            check=POSITIVE)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every training setting, by group (`Config()`: the defaults)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """The typed view of a flat config (keys that are no setting, e.g. run_id, ignored);
        ValueError naming the settings it lacks."""
        missing = [name for name in SETTINGS if name not in values]
        if missing:
            raise ValueError(f"the config lacks the settings {missing}")
        groups = {group: {} for group in GROUPS}
        for name, spec in SETTINGS.items():
            groups[spec.group][name] = values[name]
        return cls(**{group: GROUPS[group](**fields) for group, fields in groups.items()})

    def as_dict(self) -> dict:
        """The flat config `{name: value}`, in declaration order (lists copied)."""
        return {name: _copy(getattr(getattr(self, spec.group), name))
                for name, spec in SETTINGS.items()}


def _copy(value):
    return list(value) if isinstance(value, list) else value


# ----------------------------------------------------------------- the table, derived


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting as declared: `name`, its `group` in `Config`, Python `type` (bool, int,
    float, str or list of str) and default, and what `setting` was given."""

    name: str
    group: str
    type: type
    default: object
    help: str
    role: str
    check: Check | None
    choices: tuple
    path: bool
    search: Search | None
    needs: str | None
    older_runs: object
    run_local: bool

    @property
    def recorded_by_every_run(self) -> bool:
        """Whether every config.json holds it (it existed before runs recorded their flags)."""
        return self.older_runs is _NOT_RECORDED


def _choice_words(choices: tuple) -> str:
    return " or ".join([", ".join(choices[:-1]), choices[-1]])


def _collect() -> tuple[dict, dict]:
    """({group name: its class}, {setting name: Setting}) in declaration order."""
    groups = {field.name: typing.get_type_hints(Config)[field.name]
              for field in dataclasses.fields(Config)}
    settings = {}
    for group, group_class in groups.items():
        hints = typing.get_type_hints(group_class)
        for field in dataclasses.fields(group_class):
            spec = dict(field.metadata[_SPEC])
            if spec["choices"] and spec["check"] is None:
                choices = spec["choices"]
                spec["check"] = Check(lambda value, choices=choices: value in choices,
                                      _choice_words(choices))
            default = (field.default_factory() if field.default is dataclasses.MISSING
                       else field.default)
            kind = typing.get_origin(hints[field.name]) or hints[field.name]
            settings[field.name] = Setting(name=field.name, group=group, type=kind,
                                           default=default, **spec)
    return groups, settings


GROUPS, SETTINGS = _collect()


def with_role(role: str) -> frozenset:
    """The names of the settings of `role` (ARCHITECTURE, RUN or RESUMABLE)."""
    return frozenset(name for name, spec in SETTINGS.items() if spec.role == role)


def older_run_values() -> dict:
    """{setting: the value a config.json written before the setting existed holds}."""
    return {name: spec.older_runs for name, spec in SETTINGS.items()
            if not spec.recorded_by_every_run}


def run_local() -> tuple:
    """The settings that say where a run reads and writes (and its seed), not what it trains."""
    return tuple(name for name, spec in SETTINGS.items() if spec.run_local)


def search_tables() -> tuple[dict, dict, dict]:
    """`narm_tf.tune`'s rows: (always searched, by position; optional, searched when
    `--search` names them; conditional, {name: (switch, [True], row)}: searched with their
    switch, in trials where it is on)."""
    tunable = {name: spec for name, spec in SETTINGS.items() if spec.search is not None}
    always = sorted((spec.search.position, name) for name, spec in tunable.items()
                    if spec.search.position is not None)
    optional = {name: spec.search.row for name, spec in tunable.items()
                if spec.search.optional}
    conditional = {name: (spec.needs, [True], spec.search.row)
                   for name, spec in tunable.items() if spec.needs is not None}
    return {name: tunable[name].search.row for _, name in always}, optional, conditional


# ---------------------------------------------------------------------- flags and checks


def define_flags(flag_values=None) -> None:
    """Defines every setting as an absl flag (its type, default, help and check) in
    `flag_values` (default absl's FLAGS)."""
    from absl import flags

    from narm_tf import cli

    flag_values = flags.FLAGS if flag_values is None else flag_values
    for name, spec in SETTINGS.items():
        args = dict(name=name, default=spec.default, help=spec.help, flag_values=flag_values)
        if spec.path:
            cli.define_path(name, spec.default, spec.help, flag_values=flag_values)
        elif spec.choices:
            flags.DEFINE_enum(enum_values=list(spec.choices), **args)
        elif spec.type is bool:
            flags.DEFINE_boolean(**args)
        elif spec.type is int:
            flags.DEFINE_integer(**args)
        elif spec.type is float:
            flags.DEFINE_float(**args)
        elif spec.type is list:
            flags.DEFINE_list(**args)
        else:
            flags.DEFINE_string(**args)
        if spec.check is not None:
            flags.register_validator(name, spec.check.accepts,
                                     message=f"--{name} must be {spec.check.words}",
                                     flag_values=flag_values)


def from_flags(flag_values=None) -> dict:
    """The flat config the parsed flags hold (`flag_values`, default absl's FLAGS)."""
    if flag_values is None:
        from absl import flags

        flag_values = flags.FLAGS
    return {name: flag_values[name].value for name in SETTINGS}


def default_config(**overrides) -> dict:
    """The defaults (paths expanded, as the flags give them) with `overrides`, checked: a
    flat config, `narm_tf.training.trainer.train`'s input from Python."""
    from narm_tf import cli

    config = Config().as_dict()
    config.update({name: cli.expand(config[name]) for name, spec in SETTINGS.items()
                   if spec.path})
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown training settings: {sorted(unknown)}")
    config.update(overrides)
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """ValueError naming the first setting outside its accepted range (its `check`), or a
    combination that does not fit (`--loss=sampled`'s, a setting set without the switch it
    `needs`)."""
    for name, spec in SETTINGS.items():
        if spec.check is not None and not spec.check.accepts(config[name]):
            raise ValueError(f"--{name}={config[name]!r}: must be {spec.check.words}")
    from narm_tf.model import sampled

    sampled.check_settings(config)  # --loss=sampled with settings it does not fit
    for name, spec in SETTINGS.items():
        if (spec.needs is not None and config.get(name, spec.default) != spec.default
                and not config.get(spec.needs)):
            raise ValueError(f"--{name}={config[name]!r} needs --{spec.needs}")
