"""One training loop for all six models.

Each step: encode a batch, take the adversary steps (critics, discriminator) on the detached
codes, then the main step on the encoder and decoder with the adversaries frozen - so no
adversary loss reaches the encoder and no in-place error can occur. Seeded and deterministic on
CPU. Checkpoints (models, optimisers, every RNG state and the data order) are written atomically
every ``checkpoint_every`` steps or ``checkpoint_minutes``, whichever comes first, and at the end,
so a killed run resumes exactly where it stopped and loses at most a few minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wtc import models
from wtc.data import load as load_data
from wtc.runfiles import (
    CHECKPOINT,
    CONFIG,
    LOG,
    LOSS_CURVES,
    RECONSTRUCTIONS,
    RESULT,
    TENSORBOARD,
    atomic_write,
    read_json,
    remove_stale_temporaries,
    save_torch_atomic,
    write_json_atomic,
)

FORMAT = "wtc-checkpoint-v1"
# Settings a resumed run may change; everything else must match the run being resumed.
RESUMABLE_CHANGES = {"steps", "device", "progress", "log_every", "checkpoint_every",
                     "checkpoint_minutes", "eval_samples", "tensorboard"}
UPDATE_ORDERS = ("paper", "authors")  # see TrainConfig.update_order
DATA_ORDERS = ("iid", "epochs")  # see TrainConfig.data_order
# The clock of time-based checkpoints (a name of its own, so tests can move it).
_clock = time.monotonic
# Loss curves are redrawn at a checkpoint at most this often: drawing takes about a second.
CURVES_EVERY_S = 300.0


class TrainingError(RuntimeError):
    """A run that cannot go on: non-finite loss, bad checkpoint, occupied folder."""


class DeviceError(TrainingError, ValueError):
    """A device that does not exist or is not visible: caught wherever a bad value is."""


def _field(default, help: str, unset: str | None = None):
    """A TrainConfig field with its command-line help (``wtc train`` flags are made from these);
    ``unset`` says what a None default means."""
    return field(default=default, metadata={"help": help, "unset": unset})


@dataclass
class TrainConfig:
    """Everything that defines a run: what ``RUN/config.json`` holds, what ``wtc train --config``
    reads, and what ``wtc train``'s flags (one per field) and a sweep spec's ``[train]`` and
    ``[axes]`` set."""

    model: str = _field("wtc-vae", "the model (a registered name, see wtc.models.MODELS)")
    data: str = _field("dsprites-procedural", "a data set name (see `wtc data`)")
    data_root: str | None = _field(None, "the folder holding the data set's file",
                                   unset="the data set's usual place")
    data_options: dict = field(default_factory=dict, metadata={
        "help": "options for wtc.data.load as a JSON object, e.g. '{\"grid_step\": 2}'; the data "
                "options' own flags override its keys"})
    beta: float | None = _field(None, "strength beta, for the models that take it",
                                unset="the model's")
    gamma: float | None = _field(None, "strength gamma, for the models that take it",
                                 unset="the model's")
    latent_dim: int = _field(10, "latent dimensions")
    estimator: str = _field("mss", "beta-tcvae's estimator of log q(z): mss (Chen et al.'s "
                                   "stratified sampling), mws (Chen et al.'s weighted sampling) or "
                                   "mws-authors (the WTC authors' weighted sampling, without its "
                                   "constant)")
    tcvae_objective: str = _field("chen", "beta-tcvae's objective: chen (rec + MI + beta * TC + "
                                          "dimension-wise KL, Chen et al.) or authors (rec + KL + "
                                          "beta * TC, the WTC authors' code)")
    update_order: str = _field("paper", "paper (adversary steps on the step's codes, then the main "
                                        "step: the paper's algorithms 2 and 3) or authors (the main "
                                        "step with the current adversary, then the adversary "
                                        "step on the same codes: the WTC authors' code)")
    train_split: float = _field(1.0, "the share of the data set training draws from (the rest is "
                                     "held out, chosen with seed 42 as the WTC authors do); "
                                     "evaluation uses all of it")
    data_order: str = _field("iid", "how training batches are drawn: iid (uniformly, with "
                                    "replacement) or epochs (a fresh shuffle of the training "
                                    "split each epoch, the WTC authors' loader)")
    steps: int = _field(300_000, "training steps (more than a finished run's to continue it)")
    batch_size: int = _field(64, "images per step")
    lr: float = _field(1e-4, "Adam learning rate, every network")
    adam_betas: tuple = _field((0.9, 0.999), "Adam's two betas, every network")
    adversary_steps: int = _field(1, "adversary (critic, discriminator) steps per main step")
    seed: int = _field(0, "seed of the initial weights, the data order and every sample")
    device: str | None = _field(None, "cpu, cuda, cuda:1, ...", unset="cuda if present, else cpu")
    checkpoint_every: int = _field(10_000, "steps between checkpoints")
    checkpoint_minutes: float = _field(10.0, "minutes between checkpoints (whichever of this and "
                                             "checkpoint_every comes first)")
    log_every: int = _field(100, "steps between log.jsonl records")
    eval_samples: int = _field(2048, "images for the final reconstruction error")
    progress: bool = _field(True, "show a progress bar")
    tensorboard: bool = _field(True, "also log to RUN/tensorboard when the tensorboard package "
                                     "is installed")

    # -- fields as data ------------------------------------------------------------------------
    @staticmethod
    def field_kind(name: str) -> tuple[str, bool]:
        """(base type name, None allowed) of a field, from its annotation."""
        f = _FIELDS[name]
        parts = [p.strip() for p in str(f.type).split("|")]
        return next(p for p in parts if p != "None"), "None" in parts

    @classmethod
    def check_value(cls, name: str, value):
        """``value`` as field ``name`` holds it (lists become tuples for tuple fields, integers
        floats for float fields), or a ValueError naming the field."""
        if name not in _FIELDS:
            raise ValueError(f"unknown TrainConfig field {name!r}; valid fields: "
                             f"{', '.join(_FIELDS)}")
        kind, optional = cls.field_kind(name)
        if value is None and optional:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "float" and number:
            return float(value)
        if kind == "str" and isinstance(value, str):
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "dict" and isinstance(value, dict):
            return value
        if kind == "tuple" and isinstance(value, (list, tuple)) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(value)
        wanted = {"int": "an integer", "float": "a number", "str": "a string",
                  "bool": "true or false", "dict": "a table (JSON object)",
                  "tuple": "a list of numbers"}[kind]
        raise ValueError(f"{name} must be {wanted}{' or null' if optional else ''}, "
                         f"got {value!r}")

    @classmethod
    def from_json(cls, raw: dict, where: str = "the config") -> TrainConfig:
        """A config from its JSON form (``config.json``, ``--config``); an unknown field or a
        value of the wrong type is a ValueError that names it."""
        if not isinstance(raw, dict):  # a ValueError like every other bad config
            raise ValueError(  # noqa: TRY004
                f"{where} must be a JSON object of TrainConfig fields, got {raw!r}")
        values = {}
        for key, value in raw.items():
            if key not in _FIELDS:
                raise ValueError(f"unknown field {key!r} in {where}; valid fields: "
                                 f"{', '.join(_FIELDS)}")
            values[key] = cls.check_value(key, value)
        return cls(**values)

    @classmethod
    def from_file(cls, path) -> TrainConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except OSError as err:
            raise ValueError(f"cannot read the config {path}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON: {err}") from None
        return cls.from_json(raw, where=str(path))

    # -- checks --------------------------------------------------------------------------------
    def strengths(self) -> dict:
        """The strengths this config sets: every field that is a registered model's strength."""
        allowed = models.MODELS.get(self.model, {})
        out = {}
        for key in _strength_fields():
            value = getattr(self, key)
            if value is not None:
                if key not in allowed:
                    raise ValueError(f"{self.model} has no {key} (it takes "
                                     f"{', '.join(allowed) or 'none'})")
                if not 0 <= value < float("inf"):  # a negative weight turns a penalty around;
                    # an infinite one makes every loss inf or NaN
                    raise ValueError(f"{key} must be >= 0 and finite, got {value}")
                out[key] = value
        return out

    def validate(self) -> None:
        for name in _FIELDS:
            self.check_value(name, getattr(self, name))
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid names: "
                             f"{', '.join(models.MODELS)}")
        from wtc.data import NAMES

        if self.data not in NAMES:
            raise ValueError(f"unknown data set {self.data!r}; valid names: {', '.join(NAMES)}")
        self.strengths()
        for name in ("steps", "batch_size", "adversary_steps", "checkpoint_every", "log_every",
                     "latent_dim", "eval_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")
        if self.seed < 0:  # numpy's generators take none
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.checkpoint_minutes > 0:
            raise ValueError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        parse_device(self.device)  # the spelling only: a GPU may be visible where the run runs
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.estimator not in models.BetaTCVAE.ESTIMATORS:
            raise ValueError(f"estimator must be one of "
                             f"{', '.join(models.BetaTCVAE.ESTIMATORS)}, got {self.estimator!r}")
        for name, valid in (("tcvae_objective", models.BetaTCVAE.OBJECTIVES),
                            ("update_order", UPDATE_ORDERS), ("data_order", DATA_ORDERS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got "
                                 f"{getattr(self, name)!r}")
        if not 0 < self.train_split <= 1:
            raise ValueError(f"train_split must be in (0, 1], got {self.train_split}")

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _strength_fields() -> list:
    """TrainConfig fields that are some registered model's strength (today beta and gamma)."""
    names = {k for defaults in models.MODELS.values() for k in defaults}
    return [name for name in _FIELDS if name in names]


def add_config_arguments(parser) -> None:
    """One ``wtc train`` flag per TrainConfig field (``--latent-dim`` sets ``latent_dim``), with
    its help and default. A flag not given is absent from the parsed arguments, so the value of
    ``--config``'s file (or the field's default) stands: see :func:`config_from_args`."""
    for name, f in _FIELDS.items():
        kind, _ = TrainConfig.field_kind(name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f.metadata.get("help", name)
        if name == "model":  # the registry's names, read when the parser is made
            text += ": " + ", ".join(models.MODELS)
        if name in _strength_fields():  # what it weighs in each model that takes it
            text += ". " + "; ".join(
                f"{model}: {cls.strength_help.get(name, 'a strength')}, default "
                f"{cls.defaults[name]:g}" for model, cls in models.REGISTRY.items()
                if name in cls.defaults)
        shown = json.dumps(default) if kind == "dict" else default
        if default is None:
            shown = f.metadata.get("unset") or "none"
        if kind == "tuple":
            shown = " ".join(map(str, default))
        kwargs = {"dest": name, "default": argparse.SUPPRESS,
                  "help": f"{text} (default: {shown})".replace("%", "%%")}
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind == "tuple":
            parser.add_argument(flag, nargs=len(default), type=float, metavar="X", **kwargs)
        elif kind == "dict":
            parser.add_argument(flag, type=_json_object, metavar="JSON", **kwargs)
        else:
            parser.add_argument(flag, type={"int": int, "float": float, "str": str}[kind],
                                **kwargs)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object is needed, got {text!r}")
    return value


def config_from_args(args, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with every field given on the command line replaced."""
    values = base.to_json() if base is not None else {}
    values.update({name: getattr(args, name) for name in _FIELDS if hasattr(args, name)})
    return TrainConfig.from_json(values, where="the command line")


def _plain(value):
    """A value as JSON holds it (tuples are lists), so a config read back from config.json
    compares equal to the one that wrote it."""
    return json.loads(json.dumps(value))


def parse_device(device: str | None) -> torch.device | None:
    """``device`` as a torch.device, or a DeviceError naming the spellings torch takes."""
    if not device:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device {device!r}: use cpu, cuda or cuda:N (N a GPU's "
                          "index), or leave --device out for cuda when a GPU is visible, "
                          "else cpu") from None


def pick_device(device: str | None) -> torch.device:
    """The device to run on (default: cuda if a GPU is visible, else cpu); a DeviceError when
    the one asked for is not visible."""
    dev = parse_device(device)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA device is visible to torch "
                              f"{torch.__version__}; --device cpu runs on the CPU")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"--device {device}: only {count} CUDA device(s) are visible "
                              f"(cuda:0 to cuda:{count - 1})")
    return dev


def build_model(config: TrainConfig, dataset) -> models.DisentanglingModel:
    # What the model declares it needs: TrainConfig fields and facts of the data set.
    cls = models.model_class(config.model)
    extra = {name: getattr(config, name) for name in cls.config_options}
    extra.update(cls.options_from_dataset(dataset))
    return models.build(config.model, in_channels=dataset.channels,
                        latent_dim=config.latent_dim, **config.strengths(), **extra)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unpickler_detail(err: BaseException) -> str:
    """The one line of torch's long weights-only error that says what was met."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else "")).split(" Please use")[0]
    return _first_line(err)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents. Loaded with ``weights_only=True``: a checkpoint holds tensors and
    plain data only (dicts, lists, tuples, numbers, strings), so a file crafted to run code when
    unpickled is refused before anything in it runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "global" in detail.lower() or "class" in detail.lower():
            # the weights-only unpickler met a function or class it will not call
            raise TrainingError(f"checkpoint {path} holds objects other than tensors and plain "
                                f"data and was refused unloaded: not a wtc checkpoint, or one "
                                f"crafted to run code ({detail}); nothing was overwritten"
                                ) from None
        raise TrainingError(f"checkpoint {path} is corrupt or unreadable ({detail}); nothing "
                            "was overwritten") from None
    except Exception as err:  # torch raises many types for damaged files
        raise TrainingError(f"checkpoint {path} is corrupt or unreadable ({err}); nothing was "
                            "overwritten") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingError(f"{path} is not a wtc checkpoint; nothing was overwritten")
    # Checkpoints written before checksums were stored have none: accepted as they are.
    if "sha256" in state:
        stored = state.pop("sha256")
        if stored != payload_digest(state):
            raise TrainingError(f"checkpoint {path} is damaged: its contents do not match the "
                                "checksum stored with them (flipped bytes on disk?); nothing "
                                "was overwritten")
    return state


def payload_digest(obj) -> str:
    """sha256 of a checkpoint's contents: every key, value, tensor dtype, shape and byte, in
    order. Taken of the objects rather than the file, so it is the same whatever torch.save's
    zip layout, and a flipped byte that still unpickles is caught."""
    h = hashlib.sha256()
    _digest(obj, h)
    return h.hexdigest()


def _digest(obj, h) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            h.update(f"K{key!r}".encode())
            _digest(value, h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for value in obj:
            _digest(value, h)
    else:  # numbers, strings, bools, None: their repr is exact
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


class Trainer:
    def __init__(self, config: TrainConfig, out: Path, resume: bool = False,
                 overwrite: bool = False):
        config.validate()
        self.out = Path(out)
        self.config = config
        self.device = pick_device(config.device)
        if self.out.exists() and not self.out.is_dir():
            raise TrainingError(f"{self.out} is a file; --out takes the run's folder")
        existing = ((self.out / CONFIG).exists() and not self._prepared()
                    or (self.out / CHECKPOINT).exists())
        if existing and not (resume or overwrite):
            raise TrainingError(f"{self.out} already holds a run; pass --resume to continue it "
                                "or --overwrite to replace it")
        self.resume_state = None
        self.saved_step = None  # the step of the checkpoint on disk, once there is one
        self._nonfinite = {}  # loss name -> device flag: not finite since the last check
        self._start, self._data_rng = 0, None
        if resume and (self.out / CHECKPOINT).exists():
            self.resume_state = load_checkpoint(self.out / CHECKPOINT)
            self._check_structure(self.resume_state)
            self._check_compatible(self.resume_state["config"])
            self.saved_step = int(self.resume_state["step"])
            if config.steps < self.saved_step:  # result.json would claim fewer steps than ran
                raise TrainingError(f"cannot resume: {self.out / CHECKPOINT} holds step "
                                    f"{self.saved_step}, beyond --steps {config.steps}; pass "
                                    f"--steps {self.saved_step} or more; nothing was "
                                    "overwritten")
        elif resume and existing:
            # Killed before its first checkpoint: nothing to continue, so it starts again from
            # step 0 - if it is the same run.
            saved = read_json(self.out / CONFIG)
            if isinstance(saved, dict):
                self._check_compatible(saved)
        self.dataset = load_data(config.data, root=config.data_root, **config.data_options)
        torch.manual_seed(config.seed)  # the initial weights too are the seed's
        self.model = build_model(config, self.dataset).to(self.device)
        betas = tuple(config.adam_betas)
        self.optimizers = {"main": torch.optim.Adam(self.model.main_parameters(), lr=config.lr,
                                                    betas=betas)}
        for name, module in self.model.adversaries.items():
            self.optimizers[name] = torch.optim.Adam(module.parameters(), lr=config.lr,
                                                     betas=betas)
        if self.resume_state is not None:
            # Everything is loaded and checked here, before run() writes a single file.
            self._start, self._data_rng = self._restore(self.resume_state)
            threads = self.resume_state.get("num_threads")
            if (self.device.type == "cpu" and threads is not None
                    and threads != torch.get_num_threads()):
                print(f"warning: {self.out} was checkpointed with {threads} CPU threads and "
                      f"resumes with {torch.get_num_threads()}: the continuation will not be "
                      "bit-identical to an uninterrupted run (torch.set_num_threads or "
                      "OMP_NUM_THREADS sets the count)", file=sys.stderr)
        self._fresh = resume and self.resume_state is None and existing
        if overwrite and not resume:
            for name in (CHECKPOINT, LOG, RESULT):
                (self.out / name).unlink(missing_ok=True)

    def _prepared(self) -> bool:
        """The folder holds only this run's config.json, written before it started (as a
        sweep does): not another run."""
        if any((self.out / name).exists() for name in (CHECKPOINT, LOG, RESULT)):
            return False
        saved = read_json(self.out / CONFIG)
        return isinstance(saved, dict) and not self._differences(saved)

    def _differences(self, saved: dict) -> list:
        current = self.config.to_json()
        return [f"{k}: {saved.get(k)!r} in the run, {v!r} now" for k, v in current.items()
                if k not in RESUMABLE_CHANGES and _plain(saved.get(k)) != _plain(v)]

    def _check_compatible(self, saved: dict) -> None:
        diffs = self._differences(saved)
        if diffs:
            raise TrainingError("cannot resume: the checkpoint belongs to a different run ("
                                + "; ".join(diffs) + "); nothing was overwritten. Resume with "
                                f"its own settings (--config {self.out / CONFIG}) or pass "
                                "--overwrite instead of --resume to replace it")

    # -- state ---------------------------------------------------------------------------------
    def _state(self, step: int, data_rng: np.random.Generator) -> dict:
        state = {
            "format": FORMAT,
            "step": step,
            "config": self.config.to_json(),
            "model": self.model.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            "data_rng": data_rng.bit_generator.state,
            # a resume with another count continues correctly but not bit-identically
            "num_threads": torch.get_num_threads(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        state["sha256"] = payload_digest(state)  # verified by load_checkpoint
        return state

    def _check_structure(self, state: dict) -> None:
        """The keys and types a checkpoint must hold, before any of it is used."""
        path = self.out / CHECKPOINT
        kinds = {"step": int, "config": dict, "model": dict, "optimizers": dict,
                 "torch_rng": torch.Tensor, "data_rng": dict}
        for key, kind in kinds.items():
            if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
                raise TrainingError(f"checkpoint {path} is damaged: {key!r} is missing or not "
                                    f"a {kind.__name__}; nothing was overwritten")
        if state["step"] < 0:
            raise TrainingError(f"checkpoint {path} is damaged: step {state['step']} < 0; "
                                "nothing was overwritten")

    def _restore(self, state: dict) -> tuple[int, np.random.Generator]:
        path = self.out / CHECKPOINT
        part = "the model's weights"
        try:
            self.model.load_state_dict(state["model"])
            for k, opt in self.optimizers.items():
                part = f"the {k} optimiser's state"
                if k not in state["optimizers"]:
                    raise KeyError(f"no state for the {k} optimiser")
                opt.load_state_dict(state["optimizers"][k])
                for param, values in opt.state.items():  # Adam's load checks no shapes
                    for name, value in values.items():
                        if (isinstance(value, torch.Tensor) and value.dim()
                                and value.shape != param.shape):
                            raise ValueError(f"{name} has shape {tuple(value.shape)}, its "
                                             f"parameter {tuple(param.shape)}")
            part = "the torch RNG state"
            torch.set_rng_state(state["torch_rng"])
            if "cuda_rng" in state and torch.cuda.is_available():
                part = "the CUDA RNG states"
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            part = "the data order's RNG state"
            data_rng = np.random.default_rng()
            data_rng.bit_generator.state = state["data_rng"]
        except Exception as err:  # noqa: BLE001  (torch and numpy raise many types here)
            raise TrainingError(f"checkpoint {path} does not fit this run: {part} could not "
                                f"be loaded ({_first_line(err)}); nothing was overwritten"
                                ) from None
        return int(state["step"]), data_rng

    # -- the loop ------------------------------------------------------------------------------
    def step(self, x: torch.Tensor) -> dict:
        model = self.model
        mean, logvar, z = model.encode(x)
        logged = {}
        for _ in range(self.config.adversary_steps):
            for name, (loss, terms) in model.adversary_losses(z.detach(), x).items():
                self._watch(loss, name)
                opt = self.optimizers[name]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                logged.update(terms)
                logged[f"{name}_loss"] = loss.detach()
        for p in model.adversaries.parameters():
            p.requires_grad_(False)
        try:
            terms = model.main_terms(x, mean, logvar, z)
            self._watch(terms["loss"], "main")
            opt = self.optimizers["main"]
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
        finally:
            for p in model.adversaries.parameters():
                p.requires_grad_(True)
        logged.update({k: v.detach() for k, v in terms.items()})
        return logged

    def _watch(self, loss, name):
        # Accumulated on the device: a per-step check would synchronise a GPU every step. The
        # flags are read before every log record and checkpoint, so nothing non-finite is saved.
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite[name] = bad if name not in self._nonfinite else self._nonfinite[name] | bad

    def _check_finite(self, first: int, last: int, terms: dict) -> None:
        """Raise if a loss was not finite in steps first..last (0-based), naming it."""
        for name, flag in self._nonfinite.items():
            if bool(flag):
                when = f"at step {last}" if first == last else f"between steps {first} and {last}"
                values = {k: float(v) for k, v in terms.items()}
                loss = values.get("loss") if name == "main" else values.get(f"{name}_loss")
                raise TrainingError(f"the {name} loss is {loss} {when} (terms: {values}); the "
                                    f"run stopped and its last good checkpoint "
                                    f"{self.out / CHECKPOINT} is kept")
        self._nonfinite.clear()

    def run(self) -> dict:
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)  # what a writer killed mid-write left
        if self.resume_state is not None:
            start, data_rng = self._start, self._data_rng
            torch.set_rng_state(self.resume_state["torch_rng"])  # as saved, whatever ran since
            _trim_log(self.out / LOG, start)
        else:
            data_rng = np.random.default_rng(config.seed)
            start = 0
            if self._fresh:  # killed before its first checkpoint: its records go
                for name in (LOG, RESULT):
                    (self.out / name).unlink(missing_ok=True)
        write_json_atomic(config.to_json(), self.out / CONFIG)
        checked = start
        log = open(self.out / LOG, "a")
        writer = bar = None
        try:  # the finally below closes whatever was opened
            writer = self._tensorboard(start)
            if config.progress:
                from tqdm import tqdm

                bar = tqdm(total=config.steps, initial=start, desc=config.model,
                           dynamic_ncols=True)
            self.model.train()
            t0, last_step = time.perf_counter(), start
            last_save = last_curves = _clock()
            every_s = config.checkpoint_minutes * 60
            for step in range(start, config.steps):
                indices = data_rng.integers(0, len(self.dataset), config.batch_size)
                x = self.dataset.batch(indices).to(self.device, non_blocking=True)
                terms = self.step(x)
                done = step + 1
                log_now = done % config.log_every == 0 or done == config.steps
                save_now = (done % config.checkpoint_every == 0 or done == config.steps
                            or _clock() - last_save >= every_s)
                if log_now or save_now:
                    self._check_finite(checked, step, terms)
                    checked = done
                if log_now:
                    rate = (done - last_step) / max(time.perf_counter() - t0, 1e-9)
                    t0, last_step = time.perf_counter(), done
                    record = {"step": done, **{k: float(v) for k, v in terms.items()},
                              "steps_per_s": rate}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if writer is not None:
                        for key, value in record.items():
                            if key != "step":
                                writer.add_scalar(key, value, done)
                    if bar is not None:
                        bar.set_postfix({k: f"{record[k]:.3g}" for k in
                                         ("loss", "reconstruction", "kl", "tc", "wtc", "w1")
                                         if k in record} | {"it/s": f"{rate:.1f}"})
                if save_now:
                    save_torch_atomic(self._state(done, data_rng), self.out / CHECKPOINT)
                    self.saved_step = done
                    last_save = _clock()
                    if last_save - last_curves >= CURVES_EVERY_S and done < config.steps:
                        log.flush()
                        self.draw_loss_curves()
                        last_curves = _clock()
                if bar is not None:
                    bar.update(1)
        finally:
            log.close()
            if writer is not None:
                writer.close()
            if bar is not None:
                bar.close()
        result = self.finish()
        return result

    def _tensorboard(self, start: int):
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard package is optional; log.jsonl has everything
            print(f"tensorboard is not installed: logs go to {self.out / LOG} only (pip install "
                  "'wtc[tensorboard]' for TensorBoard, or --no-tensorboard to silence this)",
                  file=sys.stderr)
            return None
        # purge_step drops events a killed run logged after its last checkpoint (all of them
        # when it was killed before its first and starts again from step 0)
        return SummaryWriter(log_dir=str(self.out / TENSORBOARD),
                             purge_step=start if start or self._fresh else None)

    def finish(self) -> dict:
        """Reconstruction error on a fixed sample and a reconstructions image."""
        from wtc.metrics.reconstruction import reconstruction_error
        from wtc.visualize import save_reconstructions

        rec = reconstruction_error(self.model, self.dataset,
                                   num_samples=self.config.eval_samples, seed=0)
        save_reconstructions(self.model, self.dataset, self.out / RECONSTRUCTIONS)
        self.draw_loss_curves()
        result = {"steps": self.config.steps, "reconstruction_error": rec}
        write_json_atomic(result, self.out / RESULT)
        return result

    def draw_loss_curves(self) -> None:
        """RUN/loss_curves.png from log.jsonl. A figure that fails is reported, never fatal:
        it must not cost a run its training."""
        from wtc.visualize import save_loss_curves

        try:
            save_loss_curves(self.out / LOG, self.out / LOSS_CURVES,
                             title=f"{self.config.model} on {self.config.data}")
        except Exception as err:  # noqa: BLE001  (matplotlib raises many types)
            print(f"could not draw {self.out / LOSS_CURVES}: {err}", file=sys.stderr)

    def interrupted(self) -> str:
        """What a stopped run kept and the command that continues it (wtc train's Ctrl-C)."""
        config = self.out / CONFIG
        if self.saved_step is None:
            return (f"interrupted before the first checkpoint (every "
                    f"{self.config.checkpoint_every} steps or "
                    f"{self.config.checkpoint_minutes:g} minutes): nothing to resume; start "
                    f"again with: wtc train --config {config} --out {self.out} --overwrite")
        return (f"interrupted; {self.out / CHECKPOINT} holds step {self.saved_step} of "
                f"{self.config.steps}; continue with: wtc train --config {config} --out "
                f"{self.out} --resume")


def _trim_log(path: Path, step: int) -> None:
    """Drop log records past ``step`` (a killed run logged them after its last checkpoint; the
    resumed run logs them again), atomically."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut by the kill
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and \
                record["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))


def train(config: TrainConfig, out, resume: bool = False, overwrite: bool = False) -> dict:
    return Trainer(config, Path(out), resume=resume, overwrite=overwrite).run()


def load_run(run_dir, device: str | None = None):
    """(model in eval mode, config, dataset) of a run folder's last checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise TrainingError(f"{run_dir.absolute()} does not exist: pass a run's folder (what "
                            "wtc train --out or a sweep wrote)")
    if not (run_dir / CHECKPOINT).exists():
        raise TrainingError(f"{run_dir} has no {CHECKPOINT}: not a finished or running wtc run "
                            "(a run writes its first checkpoint after checkpoint_every steps or "
                            "checkpoint_minutes)")
    state = load_checkpoint(run_dir / CHECKPOINT)
    config = TrainConfig.from_json(dict(state["config"]), where=f"{run_dir / CHECKPOINT}")
    dataset = load_data(config.data, root=config.data_root, **config.data_options)
    model = build_model(config, dataset)
    model.load_state_dict(state["model"])
    model.to(pick_device(device)).eval()
    return model, config, dataset


def train_runs(configs, outs, *, resume: bool = False, overwrite: bool = False,
               cuda_graph: bool = False) -> list:
    """Train several runs, one outcome each: ``{"status": "trained", "result": {...}}`` or
    ``{"status": "failed", "reason": "...", "step": int | None}``. (Interim: one after the
    other; the stacked trainer replaces this body.)"""
    outcomes = []
    for config, out in zip(configs, outs, strict=True):
        try:
            outcomes.append({"status": "trained",
                             "result": train(config, out, resume=resume, overwrite=overwrite)})
        except TrainingError as err:
            outcomes.append({"status": "failed", "reason": _first_line(err), "step": None})
    return outcomes
