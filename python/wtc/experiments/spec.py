"""Sweep specs: which (data set, model, strength, seed) runs a study trains, and how each is
evaluated. A spec is a TOML (or JSON) file, a preset name, or both: a file may start from a
preset with ``preset = "mini"`` and override any key.

    preset = "mini"
    data = ["dsprites-procedural"]
    models = ["beta-vae", "wtc-vae"]
    seeds = [1, 11]
    steps = 2000
    stack = 4              # runs of a cell trained as one stacked model (default: what fits)

    [strengths]            # the swept strength of each model (beta or gamma, see SWEPT)
    wtc-vae = [10, 40]

    [fixed]                # strengths held fixed
    wtc-wae = {beta = 1.0}

    [data_options.dsprites-procedural]
    grid_step = 2

    [train]                # any other TrainConfig field, for every run
    latent_dim = 10
    adam_betas = [0.9, 0.999]

    [axes]                 # TrainConfig fields swept too: one run per combination, and the
    lr = [1e-4, 5e-4]      # run id names them: DATA/MODEL/STRENGTH=V/lr=0.0005/seed=S

    [eval]
    protocol = "paper"
    repeats = 2
    sizes = {votes_train = 500, votes_eval = 250}

    [executor]             # where the runs train (default local); see wtc.experiments.executors
    name = "slurm"
    partition = "gpu"
    time = "12:00:00"
    gpus_per_job = 1
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from wtc.metrics.registry import default_metrics

# Views of the model registry, declared by each model class: the strength each model's sweep
# varies (the others, e.g. WTC-WAE's beta, stay at their defaults) and its grids: the paper's
# table 4, the paper's figures, the authors' run_training.sh (wtc.models.base.GRIDS).
from wtc.models import MODELS, PAPER_STRENGTHS, SWEPT
from wtc.models.base import AUTHORS_STRENGTHS, FIGURE_STRENGTHS

PAPER_SEEDS = [1, 11, 42, 73, 89]
DEFAULT_METRICS = default_metrics()  # registered with default=True, in registration order


class SpecError(ValueError):
    """A sweep spec that names something unknown or holds an impossible value."""


@dataclass
class EvalSpec:
    protocol: str = "paper"
    repeats: int | None = None  # None: the protocol's (paper: 50)
    sizes: dict = field(default_factory=dict)  # sample-size overrides, see wtc.metrics.evaluate
    metrics: list = field(default_factory=lambda: list(default_metrics()))  # read when made


@dataclass
class SweepSpec:
    name: str = "paper"
    data: list = field(default_factory=lambda: ["dsprites", "shapes3d", "cars3d"])
    data_root: str | None = None
    data_options: dict = field(default_factory=dict)  # data set -> options for wtc.data.load
    models: list = field(default_factory=lambda: list(MODELS))
    strengths: dict = field(default_factory=dict)  # model -> values of SWEPT[model]
    # model -> the swept values table 1 picks each model's best strength from (default: all of
    # them); the paper preset sweeps WTC-VAE over its figures' six values, table 1 over four
    table1_strengths: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)  # model -> {strength: value}
    seeds: list = field(default_factory=lambda: list(PAPER_SEEDS))
    steps: int = 300_000
    batch_size: int = 64
    lr: float = 1e-4
    checkpoint_every: int = 10_000
    train: dict = field(default_factory=dict)  # other TrainConfig fields, for every run
    axes: dict = field(default_factory=dict)  # TrainConfig field -> its values, one run each
    # where the jobs run: name (local, slurm, ray) and that executor's options, see
    # wtc.experiments.executors.parse_executor; the command line's --executor options go over it
    executor: dict = field(default_factory=dict)
    # the most runs of a cell (strengths x seeds) a job trains as one stacked model; None: what
    # fits (wtc.experiments.sweep.default_stack). Speed only: the runs' results are the same.
    stack: int | None = None
    eval: EvalSpec = field(default_factory=EvalSpec)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def strength_values(self, model: str) -> list:
        return [float(v) for v in self.strengths.get(model, PAPER_STRENGTHS[model])]

    def validate(self) -> SweepSpec:
        from wtc.data import CLI_OPTIONS, NAMES, RENAMED_OPTIONS
        from wtc.metrics.evaluate import METRICS, PROTOCOLS, SIZE_NAMES

        def check_names(kind, given, valid):
            unknown = [g for g in given if g not in valid]
            if unknown:
                raise SpecError(f"unknown {kind} {', '.join(map(repr, unknown))}; valid: "
                                f"{', '.join(valid)}")

        for key in ("data", "models", "seeds"):
            value = getattr(self, key)
            if not isinstance(value, list) or not value:
                raise SpecError(f"{key} must be a non-empty list, got {value!r}")
            if len(set(value)) != len(value):
                raise SpecError(f"{key} lists a value twice: {value!r}")
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise SpecError(f"data_root must be a folder's path (a string), got "
                            f"{self.data_root!r}")
        for key in ("data", "models"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise SpecError(f"{key} must be a list of names, got {getattr(self, key)!r}")
        for key in ("data_options", "strengths", "fixed"):
            if not isinstance(getattr(self, key), dict):
                raise SpecError(f"{key} must be a table, got {getattr(self, key)!r}")
        check_names("data set", self.data, NAMES)
        check_names("model", self.models, list(MODELS))
        check_names("model in [strengths]", list(self.strengths), list(MODELS))
        check_names("model in [fixed]", list(self.fixed), list(MODELS))
        check_names("data set in [data_options]", list(self.data_options), self.data)
        for name, options in self.data_options.items():
            if not isinstance(options, dict):
                raise SpecError(f"data_options.{name} must be a table of options, got "
                                f"{options!r}")
            # each run's wtc train gets them as command-line options
            check_names(f"option in [data_options.{name}]", list(options),
                        list(CLI_OPTIONS) + list(RENAMED_OPTIONS))  # old names still accepted
            for key, value in options.items():
                _check_data_option(name, key, value, RENAMED_OPTIONS)
        for model, values in self.strengths.items():
            if model not in self.models:
                raise SpecError(f"[strengths] sets {model}, which is not in models "
                                f"{self.models}")
            if (not isinstance(values, list) or not values
                    or not all(_finite_number(v) and v >= 0 for v in values)):
                raise SpecError(f"strengths.{model} must be a non-empty list of finite numbers "
                                f">= 0 (values of its {SWEPT[model]}), got {values!r}")
            if len({float(v) for v in values}) != len(values):  # two runs in one folder
                raise SpecError(f"strengths.{model} lists a value twice: {values!r}")
        if not isinstance(self.table1_strengths, dict):
            raise SpecError(f"table1_strengths must be a table, got {self.table1_strengths!r}")
        check_names("model in [table1_strengths]", list(self.table1_strengths), self.models)
        for model, values in self.table1_strengths.items():
            swept = self.strength_values(model)
            if (not isinstance(values, list) or not values
                    or not all(_finite_number(v) and float(v) in swept for v in values)):
                raise SpecError(f"table1_strengths.{model} must be a non-empty list of the "
                                f"values {model}'s sweep runs ({swept}), got {values!r}")
        for model, values in self.fixed.items():
            if not isinstance(values, dict):
                raise SpecError(f"fixed.{model} must be a table of strengths, got {values!r}")
            for name, value in values.items():
                if name not in MODELS[model]:
                    raise SpecError(f"fixed.{model}.{name}: {model} takes "
                                    f"{', '.join(MODELS[model])}, not {name}")
                if name == SWEPT[model]:
                    raise SpecError(f"fixed.{model}.{name}: {name} is the strength {model}'s "
                                    "sweep varies; set it in [strengths]")
                if not _finite_number(value) or value < 0:
                    raise SpecError(f"fixed.{model}.{name} must be a finite number >= 0, got "
                                    f"{value!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                   for s in self.seeds):  # numpy's generators take no negative seed
            raise SpecError(f"seeds must be integers >= 0, got {self.seeds!r}")
        for key in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{key} must be an integer >= 1, got {value!r}")
        if not _finite_number(self.lr) or not self.lr > 0:
            raise SpecError(f"lr must be a finite number > 0, got {self.lr!r}")
        self._validate_train_fields()
        if self.stack is not None and (not isinstance(self.stack, int)
                                       or isinstance(self.stack, bool) or self.stack < 1):
            raise SpecError(f"stack must be an integer >= 1 (runs a job trains as one model), "
                            f"got {self.stack!r}")
        if not isinstance(self.executor, dict):
            raise SpecError(f"executor must be a table, got {self.executor!r}")
        from wtc.experiments.executors import parse_executor

        parse_executor(self.executor)  # a wrong table fails here, before anything is submitted
        ev = self.eval
        if not isinstance(ev.sizes, dict):
            raise SpecError(f"eval.sizes must be a table of sample sizes, got {ev.sizes!r}")
        if not isinstance(ev.metrics, list) or not all(isinstance(m, str) for m in ev.metrics):
            raise SpecError(f"eval.metrics must be a list of metric names, got {ev.metrics!r}")
        if not isinstance(ev.protocol, str) or ev.protocol not in PROTOCOLS:
            raise SpecError(f"eval.protocol must be one of {', '.join(PROTOCOLS)}, "
                            f"got {ev.protocol!r}")
        if ev.repeats is not None and (not isinstance(ev.repeats, int)
                                       or isinstance(ev.repeats, bool) or ev.repeats < 1):
            raise SpecError(f"eval.repeats must be an integer >= 1, got {ev.repeats!r}")
        check_names("metric in eval.metrics", ev.metrics, list(METRICS))
        check_names("sample size in eval.sizes", list(ev.sizes), list(SIZE_NAMES))
        for key, value in ev.sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise SpecError(f"eval.sizes.{key} must be an integer >= 2, got {value!r}")
        return self


    def _validate_train_fields(self) -> None:
        from wtc.experiments.sweep import expand, run_config
        from wtc.train import TrainConfig

        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        strengths = {k for defaults in MODELS.values() for k in defaults}

        def check_field(where, name, value, axis):
            if name not in fields:
                raise SpecError(f"unknown field {name!r} in [{where}]; valid: TrainConfig's "
                                f"fields ({', '.join(fields)})")
            why = _NOT_SETTABLE.get(name) or (_NOT_AXIS.get(name) if axis else
                                              _TOP_LEVEL.get(name))
            if name in strengths:
                why = "strengths are set in [strengths] (swept) and [fixed]"
            if why:
                raise SpecError(f"{where}.{name}: {why}")
            if axis and TrainConfig.field_kind(name)[0] == "dict":
                raise SpecError(f"{where}.{name}: a table cannot be a sweep axis")
            try:
                value = TrainConfig.check_value(name, value)
            except ValueError as err:
                raise SpecError(f"{where}.{name}: {err}") from None
            if axis and isinstance(value, str) and ("/" in value or not value):
                raise SpecError(f"{where}.{name}: {value!r} cannot name a run folder")

        for key in ("train", "axes"):
            if not isinstance(getattr(self, key), dict):
                raise SpecError(f"{key} must be a table of TrainConfig fields, got "
                                f"{getattr(self, key)!r}")
        for name, value in self.train.items():
            check_field("train", name, value, axis=False)
        for name, values in self.axes.items():
            if name in self.train:
                raise SpecError(f"axes.{name}: {name} is set in [train] too; set it in one place")
            if not isinstance(values, list) or not values:
                raise SpecError(f"axes.{name} must be a non-empty list of values, got {values!r}")
            for value in values:
                check_field("axes", name, value, axis=True)
            if len({json.dumps(v) for v in values}) != len(values):
                raise SpecError(f"axes.{name} lists a value twice: {values!r}")
        runs = expand(self)
        ids = [run.id for run in runs]
        if len(set(ids)) != len(ids):
            raise SpecError("two runs share a folder name (axis values that differ beyond 6 "
                            "significant digits?): " + next(i for i in ids if ids.count(i) > 1))
        checked = set()
        for run in runs:  # each setting's TrainConfig, once: e.g. latent_dim = 0 fails here
            key = (run.data, run.model, run.axes)
            if key not in checked:
                checked.add(key)
                try:
                    run_config(self, run).validate()
                except ValueError as err:
                    raise SpecError(f"run {run.id}: {err}") from None


def _finite_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_data_option(data: str, key: str, value, renamed: dict) -> None:
    """A data option's value of the type its flag parses: each run gets it on the command line."""
    from wtc.data.registry import cli_options

    options = cli_options()
    name = renamed.get(key, key)
    if name not in options:
        return
    kind = options[name][0].type
    where = f"data_options.{data}.{key}"
    if kind is int:
        values = value if isinstance(value, list) and value else [value]  # grid_step: per factor
        low = 1 if name == "grid_step" else None
        if not all(isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)
                   for v in values):
            raise SpecError(f"{where} must be an integer{f' >= {low}' if low else ''}"
                            f"{' or a list of them (one per factor)' if low else ''}, got "
                            f"{value!r}")
    elif kind is str and not isinstance(value, str):
        raise SpecError(f"{where} must be a string, got {value!r}")


# TrainConfig fields a spec sets elsewhere, or that the sweep sets itself, and why.
_NOT_SETTABLE = {
    "model": "the runs' models are the spec's models list",
    "data": "the runs' data sets are the spec's data list",
    "seed": "the runs' seeds are the spec's seeds list",
    "data_root": "set data_root at the top level of the spec",
    "data_options": "set data options per data set in [data_options.NAME]",
    "device": "the sweep picks each run's device (--devices)",
    "progress": "sweep runs never show a progress bar",
}
_TOP_LEVEL = {k: f"set {k} at the top level of the spec"
              for k in ("steps", "batch_size", "lr", "checkpoint_every")}
_NOT_AXIS = {"steps": "every run of a sweep trains the spec's steps (set steps at the top "
                      "level)"}


def _preset_paper() -> SweepSpec:
    """What the paper's table 1 and figures show, at the settings the paper states: dSprites,
    Shapes3D and Cars3D (section 5.1); the six models; table 4(a)'s strengths, and for WTC-VAE
    the six of section 5.4 and figures 3 and 7 (gamma 1, 4, 10, 20, 40, 80), table 1 still
    choosing its best among table 4's four; seeds 1, 11, 42, 73, 89 (five, figure 2's caption);
    table 4(b): batch 64, Adam 1e-4, betas (0.9, 0.999), 300,000 steps; evaluation protocol
    ``paper`` (appendix D's sizes, 50 repeats). beta-TCVAE takes the form and estimator of the
    authors' code (rec + KL + beta * TC, weighted sampling without its constant: the paper
    names neither, and its beta-TCVAE numbers come from that code)."""
    return SweepSpec(strengths={m: FIGURE_STRENGTHS[m] for m in MODELS},
                     table1_strengths={m: PAPER_STRENGTHS[m] for m in MODELS
                                       if FIGURE_STRENGTHS[m] != PAPER_STRENGTHS[m]},
                     train={k: AUTHORS_TRAIN[k] for k in ("tcvae_objective", "estimator")})


#: What the authors' scripts (yjxiao/disentrepr_wtc) fix beyond our defaults, and where.
AUTHORS_TRAIN = {
    "tcvae_objective": "authors",  # disent/criterions/tc_vae_loss.py: rec + KL + beta * TC
    "estimator": "mws-authors",  # the same file's weighted sampling, without its constant
    "update_order": "authors",  # disent/trainer.py: main step, then the adversary's
    "train_split": 0.9,  # train.py trains on split 'train': vision_dataset.py's 90%, seed 42
    "data_order": "epochs",  # train.py's epoch iterator: a fresh shuffle each epoch
}


def _preset_authors() -> SweepSpec:
    """The study as the authors' scripts ran it: run_training.sh's data sets (dsprites, cars3d,
    shapes3d: dSprites with its colour factor, our default), its six tasks and their values
    (``authors_grid``: WTC-VAE gamma and WTC-WAE's WTC weight in 1, 4, 8, 16, the rest table
    4's), ``--max-update 300000``; options.py's defaults batch 64 and lr 1e-4, adam.py's betas
    (0.9, 0.999); the objectives, estimator, update order, split and data order of their code
    (``AUTHORS_TRAIN``); evaluated as their run_evaluation.sh and evaluate.py did (protocol
    ``authors``: 50 repeats with seeds seed + 73 i, the sizes their loops yield). Their scripts
    take the seed as an argument and list none: the seeds are the paper preset's five."""
    return SweepSpec(name="authors", data=["dsprites", "cars3d", "shapes3d"],
                     strengths={m: AUTHORS_STRENGTHS[m] for m in MODELS},
                     train=dict(AUTHORS_TRAIN), eval=EvalSpec(protocol="authors"))


def _preset_celeba() -> SweepSpec:
    """The paper's figure 4 (section 5.6): WTC-VAE with gamma 40 and latent dimension 20 on
    CelebA (the centre 178x178 crop down-sampled to 64x64, as wtc.data's celeba does), at table
    4(b)'s optimisation settings (batch 64, Adam 1e-4, 300,000 steps "across all experiments").
    CelebA has no ground-truth factors, so the evaluation is the reconstruction error alone (one
    repeat): it is what lets ``wtc report`` pick the run whose latent traversals it draws
    (``figure4_traversals_celeba.png``). The paper names no seed: one run, seed 1."""
    return SweepSpec(name="celeba", data=["celeba"], models=["wtc-vae"],
                     strengths={"wtc-vae": [40.0]}, seeds=[1], train={"latent_dim": 20},
                     eval=EvalSpec(protocol="paper", repeats=1, metrics=["reconstruction"]))


def _preset_mini() -> SweepSpec:
    # Sized for 2 CPU cores in under 45 minutes: 24 runs, two at a time on one thread each (the
    # runs' log.jsonl of the recorded study show a median of 5.5 steps/s). Short training at a
    # larger learning rate than the paper's, and every metric of table 1 from fewer samples.
    return SweepSpec(
        name="mini", data=["dsprites-procedural"],
        strengths={"beta-vae": [1.0, 8.0], "factor-vae": [10.0, 40.0], "beta-tcvae": [1.0, 8.0],
                   "wtc-vae": [10.0, 40.0], "wae": [1.0, 8.0], "wtc-wae": [10.0, 40.0]},
        seeds=[1, 11], steps=800, lr=5e-4, checkpoint_every=200,
        eval=EvalSpec(protocol="paper", repeats=2,
                      sizes={"num_train": 4_000, "num_test": 2_000, "votes_train": 250,
                             "votes_eval": 125, "variance_samples": 4_000}))


PRESETS = {"paper": _preset_paper, "authors": _preset_authors, "celeba": _preset_celeba,
           "mini": _preset_mini}


def from_dict(raw: dict, base: SweepSpec | None = None) -> SweepSpec:
    """A spec from a parsed file: ``preset`` (optional) first, then every other key over it."""
    if not isinstance(raw, dict):
        raise SpecError(f"a sweep spec must be a table (a JSON object) of keys, got "
                        f"{type(raw).__name__} {str(raw)[:80]}")
    raw = dict(raw)
    preset = raw.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise SpecError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        spec = PRESETS[preset]()
    else:
        spec = base if base is not None else SweepSpec()
    spec = dataclasses.replace(spec)
    # Settings the base gives for models and data sets the new lists leave out go with them.
    if isinstance(raw.get("models"), list):
        spec.strengths = {k: v for k, v in spec.strengths.items() if k in raw["models"]}
        spec.table1_strengths = {k: v for k, v in spec.table1_strengths.items()
                                 if k in raw["models"]}
        spec.fixed = {k: v for k, v in spec.fixed.items() if k in raw["models"]}
    if isinstance(raw.get("data"), list):
        spec.data_options = {k: v for k, v in spec.data_options.items() if k in raw["data"]}
    # a model given new strengths picks table 1's best among them, unless the file says otherwise
    if isinstance(raw.get("strengths"), dict) and "table1_strengths" not in raw:
        spec.table1_strengths = {k: v for k, v in spec.table1_strengths.items()
                                 if k not in raw["strengths"]}
    valid = [f.name for f in dataclasses.fields(SweepSpec)]
    for key, value in raw.items():
        if key not in valid:
            raise SpecError(f"unknown key {key!r} in the sweep spec; valid keys: preset, "
                            f"{', '.join(valid)}")
        if key == "eval":
            if not isinstance(value, dict):
                raise SpecError(f"eval must be a table, got {value!r}")
            eval_keys = [f.name for f in dataclasses.fields(EvalSpec)]
            for k in value:
                if k not in eval_keys:
                    raise SpecError(f"unknown key {k!r} in [eval]; valid keys: "
                                    f"{', '.join(eval_keys)}")
            value = dataclasses.replace(spec.eval, **value)
        if key == "train" and isinstance(value, dict):  # a table merged over the base's
            value = {**spec.train, **value}
        setattr(spec, key, value)
    if preset is not None and "name" not in raw:
        spec.name = preset
    return spec.validate()


def load_spec(source: str | Path) -> SweepSpec:
    """A preset name (``PRESETS``: paper, authors, celeba, mini) or a .toml / .json spec
    file."""
    text = str(source)
    if text in PRESETS:
        return PRESETS[text]().validate()
    path = Path(source)
    if not path.exists():
        raise SpecError(f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing "
                        "spec file")
    try:  # a binary or unreadable file is a refusal like any bad spec
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (a spec is UTF-8 TOML or JSON)") from None
    except OSError as err:
        raise SpecError(f"cannot read the spec {path}: {err.strerror}") from None
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"{path}: not valid JSON: {err}") from None
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser as the tomli package
            try:
                import tomli as tomllib
            except ImportError:
                raise SpecError(f"{path}: reading TOML needs Python 3.11 or the tomli package; "
                                "or write the spec as JSON") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"{path}: not valid TOML ({err})") from err
    else:
        raise SpecError(f"{path}: a spec file must end in .toml or .json")
    spec = from_dict(raw)
    if "name" not in raw and "preset" not in raw:
        spec.name = path.stem
    return spec


def spec_from_json(raw: dict) -> SweepSpec:
    """The inverse of :meth:`SweepSpec.to_json` (for the spec a sweep folder records)."""
    raw = dict(raw)
    ev = EvalSpec(**raw.pop("eval"))
    return SweepSpec(**raw, eval=ev)


def parse_assignments(items, option: str = "--train") -> dict | None:
    """``["latent_dim=6", "adam_betas=[0.5, 0.9]"]`` -> ``{"latent_dim": 6, ...}``: each value
    read as JSON, else kept as text (``estimator=mws``); None when there are none."""
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{option} takes FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def override(spec: SweepSpec, **values) -> SweepSpec:
    """``spec`` with the given keys replaced (the command line's common case); ``None`` keeps
    a key as it is."""
    return from_dict({k: v for k, v in values.items() if v is not None}, base=spec)
