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
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wtc import models
from wtc.data import load as load_data
from wtc.models.networks import stack_state, unstack_state
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


def stacked_fields() -> list:
    """The TrainConfig fields that may differ between the runs of one stack: the seed and every
    registered model's strengths (beta, gamma). Everything else - model, data, steps, batch,
    learning rate, device - is shared by the stacked model."""
    return ["seed"] + sorted({name for defaults in models.MODELS.values() for name in defaults})


def stack_key(config: TrainConfig) -> str:
    """What must be equal for two configs to train in one stack (their JSON less the stacked
    fields), as one comparable string."""
    values = config.to_json()
    for name in stacked_fields():
        values.pop(name, None)
    return json.dumps(values, sort_keys=True, default=str)


def can_stack(configs) -> str | None:
    """None when ``configs`` can train as one stacked model, else why not: the first field that
    differs, naming the fields that may."""
    configs = list(configs)
    first = configs[0].to_json() if configs else {}
    free = stacked_fields()
    for config in configs[1:]:
        for name, value in config.to_json().items():
            if name not in free and _plain(value) != _plain(first.get(name)):
                return (f"the runs differ in {name} ({first.get(name)!r} and {value!r}); only "
                        f"{', '.join(free)} may differ within a stack")
    return None


def check_stackable(configs) -> None:
    reason = can_stack(configs)
    if reason is not None:
        raise ValueError(f"these runs cannot train as one stack: {reason}")


class BatchSampler:
    """A run's training batches: indices into the data set, from the run's seed.

    ``order="iid"`` draws each batch uniformly with replacement; ``"epochs"`` walks a fresh
    shuffle of the training split each epoch (the WTC authors' loader; a tail shorter than a
    batch is dropped). ``split < 1`` trains on that share of the data set only, the same share
    for every seed: the held-out rest is chosen by a permutation with seed 42, as the authors'
    split is, and never reaches training."""

    SPLIT_SEED = 42

    def __init__(self, size: int, batch_size: int, seed: int, split: float = 1.0,
                 order: str = "iid"):
        self.batch_size, self.order = batch_size, order
        self.rng = np.random.default_rng(seed)
        self.train = None
        if split < 1:
            n_train = round(size * split)
            if n_train < 1:
                raise ValueError(f"train_split {split} leaves no training image of {size}")
            self.train = np.sort(np.random.default_rng(self.SPLIT_SEED).permutation(size)
                                 [:n_train])
        self.size = size if self.train is None else len(self.train)
        if order == "epochs" and batch_size > self.size:
            raise ValueError(f"batch_size {batch_size} is larger than the training split "
                             f"({self.size} images): data_order 'epochs' cannot fill a batch")
        self._epoch, self._position, self._epoch_state = None, 0, None

    def held_out(self, size: int) -> np.ndarray:
        """The indices training never sees (empty without a split)."""
        if self.train is None:
            return np.zeros(0, dtype=np.int64)
        return np.setdiff1d(np.arange(size), self.train)

    def next(self) -> np.ndarray:
        if self.order == "iid":
            idx = self.rng.integers(0, self.size, self.batch_size)
        else:
            if self._epoch is None or self._position + self.batch_size > self.size:
                self._epoch_state = self.rng.bit_generator.state
                self._epoch, self._position = self.rng.permutation(self.size), 0
            idx = self._epoch[self._position:self._position + self.batch_size]
            self._position += self.batch_size
        return idx if self.train is None else self.train[idx]

    def state(self) -> dict:
        """What a checkpoint keeps: the generator's state (for epochs, as it was before the
        current epoch's shuffle) and the position in the epoch."""
        if self.order == "epochs" and self._epoch is not None:
            return {"data_rng": self._epoch_state, "data_position": self._position}
        return {"data_rng": self.rng.bit_generator.state}

    def load(self, state: dict) -> None:
        self.rng.bit_generator.state = state["data_rng"]
        self._epoch = None
        position = state.get("data_position")
        if self.order == "epochs" and position is not None:
            self._epoch_state = self.rng.bit_generator.state
            self._epoch, self._position = self.rng.permutation(self.size), int(position)


class RunFolder:
    """One run of a trainer: its config, its folder's checks and files, and its state. Made
    before anything is trained, so a folder that cannot take the run refuses it untouched."""

    def __init__(self, config: TrainConfig, out: Path, resume: bool = False,
                 overwrite: bool = False):
        config.validate()
        self.out = Path(out)
        self.config = config
        if self.out.exists() and not self.out.is_dir():
            raise TrainingError(f"{self.out} is a file; --out takes the run's folder")
        existing = ((self.out / CONFIG).exists() and not self._prepared()
                    or (self.out / CHECKPOINT).exists())
        if existing and not (resume or overwrite):
            raise TrainingError(f"{self.out} already holds a run; pass --resume to continue it "
                                "or --overwrite to replace it")
        self.resume_state = None
        self.saved_step = None  # the step of the checkpoint on disk, once there is one
        self.failed: str | None = None  # why the run stopped, when it did
        self.failed_step: int | None = None
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
        self.fresh = resume and self.resume_state is None and existing
        self.overwrite = overwrite and not resume

    @property
    def start(self) -> int:
        return 0 if self.resume_state is None else int(self.resume_state["step"])

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


def _slice_optimizer_state(state: dict, r: int | None, template: dict) -> dict:
    """Run r's optimiser state from a stacked optimiser's (each tensor's leading R sliced;
    ``r=None``: not stacked), on the CPU where a tensor is a step count, with the param groups'
    settings of a single run's eager optimiser (``template``)."""
    out = {}
    for i, values in state["state"].items():
        out[i] = {}
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                v = v[r] if v.dim() and r is not None else v
                v = v.clone() if v.dim() else v.detach().cpu().clone()
            out[i][k] = v
    return {"state": out, "param_groups": template["param_groups"]}


def _stack_optimizer_states(states: list, template: dict) -> dict:
    """The stacked optimiser's state from R single runs' (they must share the step count)."""
    out = {}
    for i in states[0]["state"]:
        values = {}
        for k, v in states[0]["state"][i].items():
            if isinstance(v, torch.Tensor) and v.dim():
                values[k] = torch.stack([s["state"][i][k] for s in states])
            else:
                values[k] = v
        out[i] = values
    return {"state": out, "param_groups": template["param_groups"]}


class Trainer:
    """Trains one run, or R runs of one model and data set as one stacked model (a leading run
    dim through every network and op): ``Trainer(config, out)`` or
    ``Trainer([config, ...], [out, ...])``. The runs may differ only in their seed and
    strengths. Each run draws its initial weights, batches and random numbers from its own seed
    in the order it would alone, and keeps its own folder, log, checkpoint and result, exactly
    as if trained alone: stacking changes speed, never results.

    A run whose loss turns non-finite stops (``failed``: the step range and the term) and keeps
    its last good checkpoint; the others go on. Alone, it raises :class:`TrainingError`.

    ``cuda_graph=True`` (CUDA only) captures the whole training step, adversary and main steps
    with their fused Adam updates, as one CUDA graph replayed every step: the per-run
    generators are registered with the graph and nothing synchronises the host within a step.
    """

    def __init__(self, config, out, resume: bool = False, overwrite: bool = False,
                 cuda_graph: bool = False):
        if isinstance(config, TrainConfig):
            runs = [RunFolder(config, Path(out), resume=resume, overwrite=overwrite)]
        elif config and all(isinstance(c, RunFolder) for c in config):
            runs = list(config)
        else:
            configs, outs = list(config), [Path(o) for o in out]
            if not configs or len(configs) != len(outs):
                raise ValueError(f"Trainer: expected as many run folders as configs (at least "
                                 f"one), got {len(configs)} configs and {len(outs)} folders")
            for c in configs:
                c.validate()
            check_stackable(configs)
            runs = [RunFolder(c, o, resume=resume, overwrite=overwrite)
                    for c, o in zip(configs, outs, strict=True)]
        check_stackable([r.config for r in runs])
        if len({r.out.resolve() for r in runs}) != len(runs):
            raise ValueError("Trainer: two runs of the stack share one folder")
        starts = {r.start for r in runs}
        if len(starts) > 1:
            raise TrainingError("the runs of a stack must resume from the same step; their "
                                f"checkpoints hold steps {sorted(starts)} (train_runs groups "
                                "them)")
        self.runs = runs
        self.config = config = runs[0].config
        self.stacked = len(runs) > 1
        if cuda_graph and config.adversary_steps > 1:  # refused now, not at the capture
            raise ValueError("cuda_graph takes adversary_steps 1 (the further adversary steps' "
                             f"fresh batches are drawn on the host), got {config.adversary_steps}")
        self.device = pick_device(config.device)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device, got {self.device}")
        self.cuda_graph = cuda_graph
        self._start = runs[0].start
        self._nonfinite = {}  # loss name -> device flags: not finite since the last check
        self._graph = None
        self.dataset = load_data(config.data, root=config.data_root, **config.data_options)
        singles, generators = [], []
        for run in runs:
            torch.manual_seed(run.config.seed)  # the initial weights too are the seed's
            singles.append(build_model(run.config, self.dataset))
            if self.device.type == "cpu":  # it goes on where its build left the CPU stream
                g = torch.Generator()
                g.set_state(torch.get_rng_state())
            else:  # what the device's global generator gives after manual_seed(seed)
                g = torch.Generator(device=self.device)
                g.manual_seed(run.config.seed)
            generators.append(g)
        self.generators = generators
        model = models.stack(singles) if self.stacked else singles[0]
        self.model = model.to(self.device)
        self.model.rng = models.RunGenerators(generators, self.stacked)
        self.samplers = [BatchSampler(len(self.dataset), config.batch_size, r.config.seed,
                                      config.train_split, config.data_order) for r in runs]
        betas = tuple(config.adam_betas)
        # capturable/fused Adam keeps its step count on the device: what a graph can replay
        extra = {"capturable": True, "fused": True} if cuda_graph else {}

        def adam(params):
            return torch.optim.Adam(params, lr=config.lr, betas=betas, **extra)

        self.optimizers = {"main": adam(self.model.main_parameters())}
        for name, module in self.model.adversaries.items():
            self.optimizers[name] = adam(module.parameters())
        # a single run's optimiser settings, which its checkpoint carries
        single = singles[0]
        self._optimizer_templates = {"main": torch.optim.Adam(
            single.main_parameters(), lr=config.lr, betas=betas).state_dict()}
        for name, module in single.adversaries.items():
            self._optimizer_templates[name] = torch.optim.Adam(
                module.parameters(), lr=config.lr, betas=betas).state_dict()
        del singles
        if self._start:
            # Everything is loaded and checked here, before run() writes a single file.
            self._restore()
            threads = runs[0].resume_state.get("num_threads")
            if (self.device.type == "cpu" and threads is not None
                    and threads != torch.get_num_threads()):
                print(f"warning: {runs[0].out} was checkpointed with {threads} CPU threads and "
                      f"resumes with {torch.get_num_threads()}: the continuation will not be "
                      "bit-identical to an uninterrupted run (torch.set_num_threads or "
                      "OMP_NUM_THREADS sets the count)", file=sys.stderr)
        for run in runs:
            if run.overwrite:
                for name in (CHECKPOINT, LOG, RESULT):
                    (run.out / name).unlink(missing_ok=True)

    # -- what a single-run caller reads ----------------------------------------------------------
    @property
    def out(self) -> Path:
        return self.runs[0].out

    @property
    def resume_state(self):
        return self.runs[0].resume_state

    @property
    def saved_step(self):
        return self.runs[0].saved_step

    def interrupted(self) -> str:
        return "\n".join(run.interrupted() for run in self.runs)

    # -- state ---------------------------------------------------------------------------------
    def _run_model_state(self, r: int) -> dict:
        state = self.model.state_dict()
        return state if not self.stacked else unstack_state(state, r)

    def _run_optimizer_state(self, r: int) -> dict:
        out = {}
        for name, opt in self.optimizers.items():
            state = opt.state_dict()
            if self.stacked or self.cuda_graph:  # as a single run's eager Adam keeps it
                state = _slice_optimizer_state(state, r if self.stacked else None,
                                               self._optimizer_templates[name])
            out[name] = state
        return out

    def _state(self, r: int, step: int) -> dict:
        run = self.runs[r]
        g = self.generators[r]
        state = {
            "format": FORMAT,
            "step": step,
            "config": run.config.to_json(),
            "model": self._run_model_state(r),
            "optimizers": self._run_optimizer_state(r),
            # the run's generator (CPU runs), as the single-run trainer kept the global one
            "torch_rng": g.get_state() if self.device.type == "cpu" else torch.get_rng_state(),
            **self.samplers[r].state(),
            # a resume with another count continues correctly but not bit-identically
            "num_threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = [g.get_state()]
        state["sha256"] = payload_digest(state)  # verified by load_checkpoint
        return state

    def _restore(self) -> None:
        part = "the model's weights"
        run = self.runs[0]
        try:
            states = [r.resume_state for r in self.runs]
            if self.stacked:
                self.model.load_state_dict(stack_state([s["model"] for s in states]))
            else:
                self.model.load_state_dict(states[0]["model"])
            for k, opt in self.optimizers.items():
                part = f"the {k} optimiser's state"
                for run, s in zip(self.runs, states, strict=True):
                    if k not in s["optimizers"]:
                        raise KeyError(f"no state for the {k} optimiser")
                # The optimiser's own param_groups, not the checkpoint's: a checkpoint holds
                # the eager settings, and loading them would drop capturable/fused from a
                # CUDA-graph run's Adam (its capture would then refuse the step).
                if self.stacked:
                    opt.load_state_dict(_stack_optimizer_states(
                        [s["optimizers"][k] for s in states], opt.state_dict()))
                else:
                    opt.load_state_dict({"state": states[0]["optimizers"][k]["state"],
                                         "param_groups": opt.state_dict()["param_groups"]})
                for param, values in opt.state.items():  # Adam's load checks no shapes
                    for name, value in values.items():
                        if (isinstance(value, torch.Tensor) and value.dim()
                                and value.shape != param.shape):
                            raise ValueError(f"{name} has shape {tuple(value.shape)}, its "
                                             f"parameter {tuple(param.shape)}")
            for run, s, g, sampler in zip(self.runs, states, self.generators, self.samplers,
                                          strict=True):
                if self.device.type == "cpu":
                    part = "the torch RNG state"
                    g.set_state(s["torch_rng"])
                elif s.get("cuda_rng"):
                    part = "the CUDA RNG state"
                    saved = s["cuda_rng"]
                    index = self.device.index or 0
                    g.set_state(saved[index] if len(saved) > index else saved[0])
                part = "the data order's RNG state"
                sampler.load(s)
        except Exception as err:  # noqa: BLE001  (torch and numpy raise many types here)
            raise TrainingError(f"checkpoint {run.out / CHECKPOINT} does not fit this run: "
                                f"{part} could not be loaded ({_first_line(err)}); nothing was "
                                "overwritten") from None

    # -- the loop ------------------------------------------------------------------------------
    def _next_batch(self) -> torch.Tensor:
        """Each run's next batch from its own sampler: (B, ...) alone, (R, B, ...) stacked."""
        images = [self.dataset.batch(s.next()) for s in self.samplers]
        x = torch.stack(images) if self.stacked else images[0]
        dtype = next(self.model.parameters()).dtype
        return x.to(self.device, dtype=dtype, non_blocking=True)

    def _adversary_steps(self, z: torch.Tensor, x: torch.Tensor, logged: dict) -> None:
        model = self.model
        for k in range(self.config.adversary_steps):
            if k:  # every further adversary step sees a fresh batch of codes
                x = self._next_batch()
                with torch.no_grad():
                    z = model.encode(x)[2]
            for name, (loss, terms) in model.adversary_losses(z.detach(), x).items():
                self._watch(loss, name)
                opt = self.optimizers[name]
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()  # runs are independent: each gets its own gradient
                opt.step()
                logged.update(terms)
                logged[f"{name}_loss"] = loss.detach()

    def _main_step(self, x, mean, logvar, z) -> dict:
        model = self.model
        for p in model.adversaries.parameters():
            p.requires_grad_(False)
        try:
            terms = model.main_terms(x, mean, logvar, z)
            self._watch(terms["loss"], "main")
            opt = self.optimizers["main"]
            opt.zero_grad(set_to_none=True)
            terms["loss"].sum().backward()
            opt.step()
        finally:
            for p in model.adversaries.parameters():
                p.requires_grad_(True)
        return {k: v.detach() for k, v in terms.items()}

    def step(self, x: torch.Tensor) -> dict:
        """One training step on batch x (the adversary steps and the main step, in the
        configured order); the logged terms, one value per run."""
        mean, logvar, z = self.model.encode(x)
        logged = {}
        if self.config.update_order == "authors":
            # the main step with the current adversary, then the adversary on the same codes
            main = self._main_step(x, mean, logvar, z)
            self._adversary_steps(z, x, logged)
        else:
            self._adversary_steps(z, x, logged)
            main = self._main_step(x, mean, logvar, z)
        logged.update(main)
        return logged

    def _watch(self, loss, name):
        # Accumulated on the device, in place: a per-step check would synchronise a GPU every
        # step (and a captured graph updates the same flags). The flags are read before every
        # log record and checkpoint, so nothing non-finite is saved.
        bad = ~torch.isfinite(loss.detach())
        if name not in self._nonfinite:
            self._nonfinite[name] = torch.zeros_like(bad)
        self._nonfinite[name].logical_or_(bad)

    def _check_finite(self, first: int, last: int, terms: dict) -> None:
        """Stop every run whose loss was not finite in steps first..last (0-based), naming the
        loss; alone, raise."""
        flags = {name: flag.reshape(-1).tolist() for name, flag in self._nonfinite.items()}
        for flag in self._nonfinite.values():
            flag.zero_()
        for r, run in enumerate(self.runs):
            if run.failed is not None:
                continue
            for name, bad in flags.items():
                if bad[r]:
                    when = (f"at step {last}" if first == last
                            else f"between steps {first} and {last}")
                    values = self._run_values(terms, r)
                    loss = values.get("loss") if name == "main" else values.get(f"{name}_loss")
                    message = (f"the {name} loss is {loss} {when} (terms: {values}); the run "
                               f"stopped and its last good checkpoint {run.out / CHECKPOINT} "
                               "is kept")
                    if not self.stacked:
                        raise TrainingError(message)
                    run.failed, run.failed_step = message, last
                    print(f"{run.out}: {message}", file=sys.stderr)
                    break

    def _run_values(self, terms: dict, r: int) -> dict:
        if not self.stacked:
            return {k: float(v) for k, v in terms.items()}
        return {k: float(v[r]) for k, v in terms.items()}

    def _graph_step(self, x: torch.Tensor) -> dict:
        """The step as a captured CUDA graph: the first three steps run eagerly on a side
        stream (they warm up the allocator and create the optimisers' state), the fourth is
        captured, and every later one replays it on a new batch copied into the same input."""
        if self._graph is None:
            if not hasattr(self, "_warm"):
                self._warm = 0
                self._side = torch.cuda.Stream(self.device)
            if self._warm < 3:
                self._warm += 1
                self._side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self._side):
                    terms = self.step(x)
                torch.cuda.current_stream(self.device).wait_stream(self._side)
                return terms
            self._static_x = x.clone()
            graph = torch.cuda.CUDAGraph()
            for g in self.generators:
                graph.register_generator_state(g)
            torch.cuda.synchronize(self.device)
            with torch.cuda.graph(graph):
                self._static_terms = self.step(self._static_x)
            self._graph = graph
        else:
            self._static_x.copy_(x, non_blocking=True)
        self._graph.replay()
        return self._static_terms

    def run(self) -> list | dict:
        """Train every run to its config's steps; one result (or, stacked, one outcome per run:
        see :func:`train_runs`)."""
        config, runs = self.config, self.runs
        for run in runs:
            run.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(run.out)  # what a writer killed mid-write left
            if run.resume_state is not None:
                _trim_log(run.out / LOG, run.start)
            elif run.fresh:  # killed before its first checkpoint: its records go
                for name in (LOG, RESULT):
                    (run.out / name).unlink(missing_ok=True)
            write_json_atomic(run.config.to_json(), run.out / CONFIG)
        start = self._start
        checked = start
        logs = [open(run.out / LOG, "a") for run in runs]  # noqa: SIM115  (closed below)
        writers, bar = [None] * len(runs), None
        step_fn = self._graph_step if self.cuda_graph else self.step
        try:  # the finally below closes whatever was opened
            writers = [self._tensorboard(run, start) for run in runs]
            if config.progress:
                from tqdm import tqdm

                desc = config.model + (f" x{len(runs)}" if self.stacked else "")
                bar = tqdm(total=config.steps, initial=start, desc=desc, dynamic_ncols=True)
            self.model.train()
            t0, last_step = time.perf_counter(), start
            last_save = last_curves = _clock()
            every_s = config.checkpoint_minutes * 60
            for step in range(start, config.steps):
                if all(run.failed is not None for run in runs):
                    break
                terms = step_fn(self._next_batch())
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
                    host = {k: v.detach().cpu() for k, v in terms.items()}
                    for r, run in enumerate(runs):
                        if run.failed is not None:
                            continue
                        record = {"step": done, **self._run_values(host, r),
                                  "steps_per_s": rate}
                        logs[r].write(json.dumps(record) + "\n")
                        logs[r].flush()
                        if writers[r] is not None:
                            for key, value in record.items():
                                if key != "step":
                                    writers[r].add_scalar(key, value, done)
                    if bar is not None:
                        record = self._run_values(host, 0)
                        bar.set_postfix({k: f"{record[k]:.3g}" for k in
                                         ("loss", "reconstruction", "kl", "tc", "wtc", "w1")
                                         if k in record} | {"it/s": f"{rate:.1f}"})
                if save_now:
                    for r, run in enumerate(runs):
                        if run.failed is None:
                            save_torch_atomic(self._state(r, done), run.out / CHECKPOINT)
                            run.saved_step = done
                    last_save = _clock()
                    if last_save - last_curves >= CURVES_EVERY_S and done < config.steps:
                        for log in logs:
                            log.flush()
                        self.draw_loss_curves()
                        last_curves = _clock()
                if bar is not None:
                    bar.update(1)
        finally:
            for log in logs:
                log.close()
            for writer in writers:
                if writer is not None:
                    writer.close()
            if bar is not None:
                bar.close()
        results = self.finish()
        if not self.stacked:
            return results[0]["result"]
        return results

    def _tensorboard(self, run: RunFolder, start: int):
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard package is optional; log.jsonl has everything
            print(f"tensorboard is not installed: logs go to {run.out / LOG} only (pip install "
                  "'wtc[tensorboard]' for TensorBoard, or --no-tensorboard to silence this)",
                  file=sys.stderr)
            return None
        # purge_step drops events a killed run logged after its last checkpoint (all of them
        # when it was killed before its first and starts again from step 0)
        return SummaryWriter(log_dir=str(run.out / TENSORBOARD),
                             purge_step=start if start or run.fresh else None)

    def run_model(self, r: int = 0) -> models.DisentanglingModel:
        """Run r's model as a single-run model (the model itself when there is one run)."""
        return self.model.unstack(r) if self.stacked else self.model

    def finish(self) -> list:
        """Per run: reconstruction error on a fixed sample and a reconstructions image;
        ``{"status": "trained", "result": ...}`` or ``{"status": "failed", ...}``."""
        from wtc.metrics.reconstruction import reconstruction_error
        from wtc.visualize import save_reconstructions

        outcomes = []
        for r, run in enumerate(self.runs):
            if run.failed is not None:
                outcomes.append({"status": "failed", "reason": run.failed,
                                 "step": run.failed_step})
                continue
            model = self.run_model(r).eval()
            rec = reconstruction_error(model, self.dataset, num_samples=run.config.eval_samples,
                                       seed=0)
            save_reconstructions(model, self.dataset, run.out / RECONSTRUCTIONS)
            self._draw_loss_curves(run)
            result = {"steps": run.config.steps, "reconstruction_error": rec}
            write_json_atomic(result, run.out / RESULT)
            outcomes.append({"status": "trained", "result": result})
        return outcomes

    def draw_loss_curves(self) -> None:
        for run in self.runs:
            if run.failed is None:
                self._draw_loss_curves(run)

    def _draw_loss_curves(self, run: RunFolder) -> None:
        """RUN/loss_curves.png from log.jsonl. A figure that fails is reported, never fatal:
        it must not cost a run its training."""
        from wtc.visualize import save_loss_curves

        try:
            save_loss_curves(run.out / LOG, run.out / LOSS_CURVES,
                             title=f"{run.config.model} on {run.config.data}")
        except Exception as err:  # noqa: BLE001  (matplotlib raises many types)
            print(f"could not draw {run.out / LOSS_CURVES}: {err}", file=sys.stderr)


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
               cuda_graph: bool = False, stack: int | None = None) -> list:
    """Train runs that differ only in seed and strengths as stacks of at most ``stack`` runs
    (default: all at once), one outcome per run, in order: ``{"status": "trained", "result":
    {...result.json...}}`` or ``{"status": "failed", "reason": "one line", "step": int | None}``.
    A run whose folder refuses it (occupied, another run's checkpoint, damaged) fails alone; a
    stack that raises a RuntimeError (out of GPU memory, say) fails its runs, and the other
    stacks still train; runs resuming from different steps train in separate stacks."""
    configs, outs = list(configs), [Path(o) for o in outs]
    if len(configs) != len(outs):
        raise ValueError(f"train_runs: {len(configs)} configs but {len(outs)} folders")
    if stack is not None and stack < 1:
        raise ValueError(f"train_runs: stack must be >= 1, got {stack}")
    outcomes: list = [None] * len(configs)
    ready = []
    for i, (config, out) in enumerate(zip(configs, outs, strict=True)):
        try:
            ready.append((i, RunFolder(config, out, resume=resume, overwrite=overwrite)))
        except (TrainingError, ValueError) as err:
            outcomes[i] = {"status": "failed", "reason": _first_line(err), "step": None}
    if ready:
        check_stackable([run.config for _, run in ready])
    groups: dict = {}
    for i, run in ready:  # one stack per resume step
        groups.setdefault(run.start, []).append((i, run))
    for members in groups.values():
        size = stack or len(members)
        for k in range(0, len(members), size):
            part = members[k:k + size]
            try:
                trainer = Trainer([run for _, run in part], None, cuda_graph=cuda_graph)
                result = trainer.run()
                results = [{"status": "trained", "result": result}] if len(part) == 1 \
                    else result
            except (TrainingError, ValueError) as err:  # (cuda_graph on a CPU device: a
                # ValueError) every run of the stack fails with the one reason
                results = [{"status": "failed", "reason": _first_line(err),
                            "step": None}] * len(part)
            except RuntimeError as err:  # out of GPU memory, a refused capture, ...: this
                # stack's runs fail (their checkpoints stay) and the other stacks still train
                traceback.print_exc()
                results = [{"status": "failed", "reason": f"{type(err).__name__}: "
                            f"{_first_line(err)}", "step": None}] * len(part)
            for (i, _), outcome in zip(part, results, strict=True):
                outcomes[i] = outcome
    return outcomes
