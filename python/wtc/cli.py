"""The ``wtc`` command (also ``python -m wtc``).

Every refusal is one line on stderr naming the problem and the fix, with exit status 2; a
Ctrl-C is one line saying what was kept and how to go on, with exit status 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# What `wtc --help` says (the module docstring is for readers of the code).
DESCRIPTION = """\
wtc: disentangled representation learning with Wasserstein total correlation. Trains the
paper's six models, evaluates them with its metrics, and runs its sweeps and report.

  wtc demo                                    # two short runs and a report: ~5 min on a CPU
  wtc data dsprites-procedural --show x.png   # look at a data set
  wtc train --model wtc-vae --gamma 10 --steps 2000 --out runs/a
  wtc eval runs/a --repeats 2 --scale 0.1     # a quick look at a run's metrics
  wtc COMMAND --help                          # a command's options, defaults and an example
"""

# Measured: the mini study (README, "Experiments") trained at a median 5.5 steps/s per run on
# the project's 2-core machine without a GPU, by its runs' log.jsonl.
CPU_STEPS_PER_S = 5.5


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and every option's default shown where its help does not
    already say it (an unset None or a False switch says nothing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False  # identity: 0 == False
        if "default" in text or unset or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with every usage error on one line (the problem, then where the options are)
    instead of the usage block; subcommands' parsers are made by this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _alias(parser, old: str, new: str, **kwargs) -> None:
    """``old``, a deprecated spelling of the flag ``new``: it still works, says so on stderr, and
    is left out of --help."""

    class Deprecated(argparse._StoreAction):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: {old} is deprecated, use {new}", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    parser.add_argument(old, action=Deprecated, help=argparse.SUPPRESS, default=None, **kwargs)


def _refuse(command: str, message) -> int:
    print(f"wtc {command}: {message}", file=sys.stderr)
    return 2


def _file_error(err: OSError) -> str:
    """An OSError as one line: what could not be done to which file (the file's own name, not
    its temporary's) and why."""
    import errno

    from wtc.runfiles import shown_name

    what = ("cannot write" if err.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES,
                                             errno.EPERM, errno.EDQUOT) else "cannot use")
    where = shown_name(err.filename) if err.filename else "a file"
    return f"{what} {where}: [Errno {err.errno}] {err.strerror or err}"


def _image_path_problem(path, flag: str) -> str | None:
    """Why ``path`` cannot be a figure's file, or None; its folders are made when it is written."""
    from wtc.visualize import image_formats

    path = Path(path)
    if path.is_dir():
        return f"{flag} {path} is a folder; name the image file to write, e.g. {path / 'x.png'}"
    if path.suffix[1:].lower() not in image_formats():
        return (f"{flag} {path}: name an image file ending in .png, .pdf, .svg or .jpg (or "
                f"another ending matplotlib writes), e.g. {path.with_suffix('.png')}")
    return None


def _add_data_options(parser) -> None:
    """One flag per data-set option in the registry (wtc.data.registry), shared by the data sets
    that take it; unset flags are None, so each loader's own default applies. A renamed option's
    old flag still works (deprecated)."""
    from wtc.data.registry import RENAMED_OPTIONS, cli_options

    for name, (option, sets) in cli_options().items():
        flags = [option.flag] + ([f"--{name}"] if option.flag != f"--{name}" else [])
        default = f"; default {option.default}" if option.default is not None else ""
        parser.add_argument(*flags, dest=name, type=option.type, choices=option.choices,
                            default=None, help=f"{option.help} ({', '.join(sets)}{default})")
    for old, new in RENAMED_OPTIONS.items():
        if new in cli_options():
            _alias(parser, "--" + old.replace("_", "-"), cli_options()[new][0].flag, dest=new,
                   type=cli_options()[new][0].type)


def _data_options(args) -> dict:
    from wtc.data import CLI_OPTIONS

    return {k: getattr(args, k) for k in CLI_OPTIONS if getattr(args, k, None) is not None}


def _cmd_data(args) -> int:
    import warnings

    from wtc.data import DataSetError, load

    if not 1 <= args.count <= 256:
        return _refuse("data", f"--count {args.count}: show between 1 and 256 images")
    if args.seed < 0:
        return _refuse("data", f"--seed {args.seed}: a seed is an integer >= 0")
    if args.show and (problem := _image_path_problem(args.show, "--show")):
        return _refuse("data", problem)
    options = _data_options(args)
    try:
        with warnings.catch_warnings():  # an old flag was reported once, when it was parsed
            warnings.simplefilter("ignore", FutureWarning)
            dataset = load(args.name, root=args.data_root, **options)
    except DataSetError as err:
        return _refuse("data", err)
    print(dataset.describe())
    for name, size in zip(dataset.factor_names, dataset.factor_sizes):
        print(f"  {name:<18} {size}")
    if args.show:
        from wtc.visualize import save_examples

        Path(args.show).parent.mkdir(parents=True, exist_ok=True)
        save_examples(dataset, args.show, count=args.count, seed=args.seed)
        print(f"wrote {args.show}")
    return 0


def _cmd_train(args) -> int:
    from wtc.experiments.jobs import stacked_fields

    if args.resume and args.overwrite:
        return _refuse("train", "--resume continues the run in --out and --overwrite replaces "
                                "it: pass one of them")
    # --seed/--seeds, --beta and --gamma take lists: the runs are their product
    lists = {name: getattr(args, name) for name in stacked_fields() if hasattr(args, name)}
    for name, values in lists.items():
        if len(set(values)) != len(values):
            flag = "--seeds" if name == "seed" else f"--{name}"
            return _refuse("train", f"{flag} lists a value twice ({' '.join(map(str, values))}): "
                                    "each value is one run")
    if all(len(v) == 1 for v in lists.values()) and not args.cuda_graph:
        for name, values in lists.items():
            setattr(args, name, values[0])
        return _train_one(args)
    return _train_many(args, lists)


def _train_config(args, base):
    """The TrainConfig of ``wtc train``'s flags: --config's file (``base``), then every flag
    given over it (two views of the same fields), the data options and --quiet."""
    from wtc.train import config_from_args

    config = config_from_args(args, base)
    options = _data_options(args)
    if options:
        config.data_options = {**config.data_options, **options}
    if args.quiet:
        config.progress = False
    return config


def _train_one(args) -> int:
    """One run in --out, as wtc train has always trained it."""
    from wtc.data import DataSetError
    from wtc.train import TrainConfig, Trainer, TrainingError

    trainer = None
    try:
        base = TrainConfig.from_file(args.config) if args.config else None
        config = _train_config(args, base)
        trainer = Trainer(config, Path(args.out), resume=args.resume, overwrite=args.overwrite)
        result = trainer.run()
    except (ValueError, TrainingError, DataSetError) as err:
        return _refuse("train", err)
    except OSError as err:  # a read-only folder, a full disk: one line, not a traceback
        return _refuse("train", _file_error(err))
    except KeyboardInterrupt:
        print("wtc train: " + (trainer.interrupted() if trainer is not None else
                               "interrupted before training started; nothing was written"),
              file=sys.stderr)
        return 130
    print(f"{args.out}: reconstruction error {result['reconstruction_error']:.2f} after "
          f"{result['steps']} steps")
    return 0


def run_folders(out, lists: dict) -> list:
    """The runs of ``wtc train``'s value lists: [(folder, {field: value})], the product of the
    lists. Each list of more than one value names a level of the folder, as a sweep's run id
    does (``OUT/gamma=10/seed=1``: strengths, then the seed); a single value names none, so one
    run trains in OUT itself."""
    import itertools

    from wtc.experiments.sweep import axis_text

    names = [n for n in lists if n != "seed"] + (["seed"] if "seed" in lists else [])
    runs = []
    for combo in itertools.product(*(lists[n] for n in names)):
        values = dict(zip(names, combo))
        folder = Path(out).joinpath(*(f"{n}={axis_text(values[n])}" for n in names
                                      if len(lists[n]) > 1))
        runs.append((folder, values))
    return runs


def _train_many(args, lists: dict) -> int:
    """Several runs (or one with --cuda-graph), trained as one stacked model by
    wtc.train.train_runs, each in its own folder under --out."""
    import copy

    from wtc.data import DataSetError
    from wtc.experiments.jobs import can_stack
    from wtc.runfiles import CHECKPOINT, LOG, RESULT
    from wtc.train import (
        TrainConfig,
        TrainingError,
        pick_device,
        train_runs,
    )

    runs = run_folders(args.out, lists)
    try:
        base = TrainConfig.from_file(args.config) if args.config else None
        configs = []
        for _, values in runs:
            one = copy.copy(args)
            for name, value in values.items():
                setattr(one, name, value)
            config = _train_config(one, base)
            config.validate()
            configs.append(config)
        if args.cuda_graph:
            if configs[0].adversary_steps > 1:
                return _refuse("train", "--cuda-graph takes --adversary-steps 1 (the further "
                                        "adversary steps' fresh batches are drawn on the host), "
                                        f"got {configs[0].adversary_steps}")
            device = pick_device(configs[0].device)
            if device.type != "cuda":
                return _refuse("train", f"--cuda-graph captures the training step as a CUDA "
                                        f"graph, but the runs train on {device}: drop "
                                        "--cuda-graph, or train on a GPU (--device cuda)")
    except (ValueError, TrainingError, DataSetError) as err:
        return _refuse("train", err)
    reason = can_stack(configs)
    if reason:  # the lists vary only stackable fields; a plug-in's odd config could not
        return _refuse("train", f"these runs cannot train as one stacked model: {reason}")
    for folder, _ in runs:  # before any run trains, as a single run is refused
        if folder.exists() and not folder.is_dir():
            return _refuse("train", f"{folder} is a file; --out takes the runs' folder")
        if (not (args.resume or args.overwrite)
                and any((folder / name).exists() for name in (CHECKPOINT, LOG, RESULT))):
            return _refuse("train", f"{folder} already holds a run; pass --resume to continue "
                                    "every run or --overwrite to replace them")
    outs = [folder for folder, _ in runs]
    try:
        outcomes = train_runs(configs, outs, resume=args.resume, overwrite=args.overwrite,
                              cuda_graph=args.cuda_graph)
    except (ValueError, TrainingError, DataSetError) as err:
        return _refuse("train", err)
    except OSError as err:
        return _refuse("train", _file_error(err))
    except KeyboardInterrupt:
        print(f"wtc train: interrupted; each of the {len(runs)} runs under {args.out} keeps its "
              "last checkpoint; continue them with the same command and --resume",
              file=sys.stderr)
        return 130
    failed = 0
    for folder, outcome in zip(outs, outcomes, strict=True):
        if outcome.get("status") == "trained":
            result = outcome["result"]
            print(f"{folder}: reconstruction error {result['reconstruction_error']:.2f} after "
                  f"{result['steps']} steps")
        else:
            failed += 1
            step = outcome.get("step")
            where = f" at step {step}" if step is not None else ""
            print(f"wtc train: {folder} failed{where}: {outcome.get('reason')}",
                  file=sys.stderr)
    if failed:
        print(f"wtc train: {failed} of {len(runs)} runs failed; the others are trained",
              file=sys.stderr)
        return 1
    return 0


def _cmd_traverse(args) -> int:
    from wtc.train import TrainingError, load_run
    from wtc.visualize import save_traversals

    if not 2 <= args.steps <= 25:
        return _refuse("traverse", f"--steps {args.steps}: a traversal has 2 to 25 columns "
                                   "(default 9)")
    if args.seed < 0:
        return _refuse("traverse", f"--seed {args.seed}: a seed is an integer >= 0")
    if problem := _image_path_problem(args.out, "--out"):
        return _refuse("traverse", problem)
    try:
        model, config, dataset = load_run(args.run_dir, device=args.device)
    except (TrainingError, ValueError) as err:
        return _refuse("traverse", err)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_traversals(model, dataset, args.out, steps=args.steps, seed=args.seed,
                    title=f"{config.model} on {config.data}")
    print(f"wrote {args.out}")
    return 0


def _check_eval_args(args) -> str | None:
    """The first bad ``wtc eval`` option as one line naming it and what it takes, or None:
    checked before the run is loaded, so nothing runs and no eval.json is touched."""
    import math

    from wtc.metrics.evaluate import protocol_settings

    if args.repeats is not None and args.repeats < 1:
        return f"--repeats must be an integer >= 1 (the number of evaluations), got {args.repeats}"
    if not (math.isfinite(args.scale) and args.scale > 0):
        return f"--scale must be a number > 0 (1 is the protocol's sample sizes), got {args.scale}"
    if args.seed is not None and args.seed < 0:
        return f"--seed must be an integer >= 0, got {args.seed}"
    try:
        protocol_settings(args.protocol, args.repeats, args.scale, _sizes(args.size))
    except ValueError as err:
        return f"--size: {err}"
    return None


def _cmd_eval(args) -> int:
    import platform
    from pathlib import Path

    import numpy as np
    import scipy
    import sklearn
    import torch

    from wtc.metrics import evaluate
    from wtc.metrics.evaluate import check_result, nan_metrics
    from wtc.runfiles import EVAL, check_writable, read_json, write_json_atomic
    from wtc.train import TrainingError, load_run

    bad = _check_eval_args(args)
    if bad:
        print(f"wtc eval: {bad}", file=sys.stderr)
        return 2
    path = Path(args.run_dir) / EVAL
    try:
        model, config, dataset = load_run(args.run_dir, device=args.device)
        try:  # before minutes of computing: results that cannot be written would be lost
            check_writable(args.run_dir)
        except OSError as err:
            return _refuse("eval", f"{_file_error(err)}; nothing was computed, since {path} "
                                   "could not be written")
        result = evaluate(model, dataset, metrics=args.metrics, protocol=args.protocol,
                          repeats=args.repeats, seed=args.seed, scale=args.scale,
                          sizes=_sizes(args.size), progress=not args.quiet)
    except (TrainingError, ValueError) as err:
        print(f"wtc eval: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = f"{path} is unchanged" if path.exists() else f"nothing was written to {path}"
        print(f"\nwtc eval: interrupted; {kept}; run the same `wtc eval {args.run_dir} ...` "
              "again to evaluate (it starts over)", file=sys.stderr)
        return 130
    result["versions"] = {"torch": torch.__version__, "numpy": np.__version__,
                          "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
                          "python": platform.python_version()}
    result["run"] = {"model": config.model, "data": config.data}
    # Never replace a good result with a worse-formed one: a malformed result is not written,
    # and one with NaN metrics does not overwrite a complete, finite eval.json.
    problems = check_result(result)
    if problems:
        print(f"wtc eval: not writing {path}: the result is malformed ({'; '.join(problems)})",
              file=sys.stderr)
        return 1
    undefined = nan_metrics(result)
    old = read_json(path) if path.exists() else None
    kept = False
    if undefined and isinstance(old, dict) and not check_result(old) and not nan_metrics(old):
        path, kept = path.with_name("eval.nan.json"), True
        print(f"wtc eval: {', '.join(undefined)} undefined (NaN) in every repeat; kept the "
              f"complete {path.with_name(EVAL)} and wrote this result to {path}",
              file=sys.stderr)
    print(f"{'metric':<14} {'mean':>9} {'std':>9}  ({result['protocol']}, "
          f"{result['repeats']} repeat(s))")
    for name, v in result["metrics"].items():
        print(f"{name:<14} {v['mean']:9.4f} {v['std']:9.4f}")
    try:
        write_json_atomic(result, path)  # a killed evaluation never leaves a half-written file
    except OSError as err:  # the disk filled while computing: the table above is what is left
        return _refuse("eval", f"{_file_error(err)}; the results are printed above only")
    print(f"wrote {path}")
    return 1 if kept else 0  # eval.json was not updated as asked


def _sizes(items) -> dict:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--size takes NAME=INTEGER, got {item!r}")
        out[key.strip()] = int(value)
    return out


def _cmd_sweep(args) -> int:
    import signal

    from wtc.experiments import SpecError, SweepError, load_spec, run_sweep
    from wtc.experiments.spec import override, parse_assignments
    from wtc.experiments.sweep import sweep_status

    if args.status:
        if args.spec is not None:
            print("wtc sweep: --status DIR takes no spec", file=sys.stderr)
            return 2
        try:
            print(sweep_status(args.status)["text"])
        except (SpecError, SweepError) as err:
            print(f"wtc sweep: {err}", file=sys.stderr)
            return 2
        return 0
    if args.spec is None or args.out is None:
        print("wtc sweep: give a spec and --out DIR (or --status DIR)", file=sys.stderr)
        return 2
    if args.stack is not None and args.stack < 1:
        return _refuse("sweep", f"--stack {args.stack}: a job trains at least 1 run (leave "
                                "--stack out for what fits)")
    try:
        spec = override(load_spec(args.spec), data=args.data, models=args.models,
                        seeds=args.seeds, steps=args.steps, data_root=args.data_root,
                        train=parse_assignments(args.train))
        sbatch = parse_assignments(args.sbatch, option="--sbatch")
    except SpecError as err:
        print(f"wtc sweep: {err}", file=sys.stderr)
        return 2
    executor = {"name": args.executor, "partition": args.partition, "account": args.account,
                "time": args.time, "gpus_per_job": args.gpus_per_job,
                "cpus_per_job": args.cpus_per_job, "mem_gb": args.mem_gb,
                "array_parallelism": args.array_parallelism, "sbatch": sbatch,
                "address": args.ray_address}

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop the local jobs too
    try:
        result = run_sweep(spec, args.out, jobs=args.jobs, devices=args.devices,
                           threads=args.threads, executor=executor, stack=args.stack)
    except (SpecError, SweepError, ImportError) as err:  # ImportError: a missing extra
        print(f"wtc sweep: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nwtc sweep: interrupted; each run keeps its last checkpoint (`wtc sweep "
              f"--status {args.out}` shows where each stands); run the same command again to "
              "continue",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if result.ok else 1


def _cmd_report(args) -> int:
    from wtc.experiments import SweepError, make_report
    from wtc.runfiles import remove_empty_tree
    from wtc.train import TrainingError, pick_device

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _refuse("report", f"--out {out} is a file; pass the folder to write the report in")
    if not Path(args.sweep_dir).is_dir():
        return _refuse("report", f"{Path(args.sweep_dir).absolute()} does not exist: pass a "
                                 "sweep's folder (what wtc sweep --out wrote)")
    existed, ok = out.exists(), False
    try:
        pick_device(args.device)  # before anything is written
        make_report(args.sweep_dir, out, select_by=args.select_by, device=args.device)
        ok = True
    except (SweepError, TrainingError, ValueError) as err:
        return _refuse("report", err)
    finally:
        if not (existed or ok):  # a report that failed leaves no empty folder behind
            remove_empty_tree(out)
    return 0


def _cmd_demo(args) -> int:
    from wtc.demo import run_demo
    from wtc.runfiles import remove_empty_tree
    from wtc.train import TrainingError

    out = Path(args.out)
    if args.steps is not None and args.steps < 1:
        return _refuse("demo", f"--steps {args.steps}: train at least 1 step per model (leave "
                               "--steps out for the default)")
    if out.exists() and not out.is_dir():
        return _refuse("demo", f"--out {out} is a file; pass the folder to write the demo in")
    existed, ok = out.exists(), False
    try:
        run_demo(out, steps=args.steps, device=args.device, progress=not args.quiet)
        ok = True
    except (TrainingError, ValueError) as err:
        return _refuse("demo", err)
    finally:
        if not (existed or ok):  # a demo that failed before writing leaves no empty folder
            remove_empty_tree(out)
    return 0


def _train_description() -> str:
    from wtc.train import TrainConfig

    steps = TrainConfig.steps
    hours = steps / CPU_STEPS_PER_S / 3600
    import textwrap

    return "\n\n".join(textwrap.fill(part, 88) for part in (
        "Train one run, or several: lists of seeds and strengths (--seeds 1 11 42 --gamma 10 "
        "40) train the product of the lists as one stacked model, each run in its own folder "
        "under --out. A run's settings are TrainConfig's fields: from --config (a run's "
        "config.json), then each flag given.",
        f"The defaults are the paper's: {steps:,} steps of batch {TrainConfig.batch_size}, Adam "
        f"{TrainConfig.lr:g}. On a CPU that costs about {hours:.0f} hours a run (one run trained "
        f"at {CPU_STEPS_PER_S} steps/s on a 2-core machine, by the mini study's logs); for a "
        "first look pass --steps 2000 (about 6 minutes there). A checkpoint is written every "
        f"{TrainConfig.checkpoint_every:,} steps or {TrainConfig.checkpoint_minutes:g} minutes, "
        "whichever comes first: Ctrl-C says how to resume."))


def _listed_flags(parser) -> None:
    """--seed and the strength flags take several values (one run each, trained together), and
    --seeds is --seed's plural."""
    from wtc.experiments.jobs import stacked_fields

    names = stacked_fields()
    for action in parser._actions:  # argparse has no public way to change a flag's nargs
        if action.dest in names and action.option_strings:
            action.nargs = "+"
            action.help = (action.help or "").replace(
                " (default:", "; several values train one run each, as one stacked model, in "
                "--out/NAME=VALUE/... (default:", 1)
    parser.add_argument("--seeds", dest="seed", nargs="+", type=int, default=argparse.SUPPRESS,
                        metavar="SEED", help="several seeds, one run each (same as --seed)")


def build_parser() -> argparse.ArgumentParser:
    from wtc import __version__

    parser = _Parser(prog="wtc", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"wtc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser(
        "data", help="describe a data set and show example images",
        description="Describe a data set (its images and factors) and save example images.",
        epilog="example:\n  wtc data dsprites-procedural --grid-step 2 --show examples.png\n"
               "  wtc data dsprites --data-root ~/data")
    from wtc.data import NAMES
    from wtc.data.registry import DATASETS

    data.add_argument("name", choices=NAMES, metavar="NAME",
                      help="; ".join(n + (f" ({', '.join(o.flag for o in DATASETS[n].options)})"
                                          if DATASETS[n].options else "") for n in NAMES))
    data.add_argument("--data-root", default=None, metavar="FOLDER",
                      help="folder holding the data set's file (default: $WTC_DATA, then the "
                           "usual places)")
    _alias(data, "--root", "--data-root", dest="data_root")  # its name before 0.1
    data.add_argument("--show", default=None, metavar="OUT.png",
                      help="save example images to this file (its folders are made)")
    data.add_argument("--count", type=int, default=16, help="how many examples to show (1-256)")
    data.add_argument("--seed", type=int, default=0, help="which examples")
    _add_data_options(data)
    data.set_defaults(run=_cmd_data)

    from wtc.models import MODELS
    from wtc.train import add_config_arguments

    tr = sub.add_parser(
        "train", help=f"train a model ({', '.join(MODELS)})", description=_train_description(),
        epilog="examples:\n"
               "  wtc train --model wtc-vae --gamma 10 --steps 2000 --out runs/wtc\n"
               "  wtc train --config runs/wtc/config.json --out runs/wtc --resume --steps 4000\n"
               "  wtc train --model wtc-vae --gamma 10 20 40 80 --seeds 1 11 42 73 89 "
               "--steps 2000 --out runs/wtc20   # 20 runs, runs/wtc20/gamma=10/seed=1 ...")
    tr.add_argument("--config", default=None, metavar="CONFIG.json",
                    help="start from this TrainConfig JSON (e.g. a run's config.json); flags "
                         "given as well override its values")
    add_config_arguments(tr)  # one flag per TrainConfig field
    _listed_flags(tr)
    _add_data_options(tr)
    tr.add_argument("--out", required=True,
                    help="the run's folder (several runs: the folder of their folders)")
    tr.add_argument("--resume", action="store_true", help="continue the run(s) in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace the run(s) in --out")
    tr.add_argument("--cuda-graph", action="store_true",
                    help="capture the (stacked) training step as one CUDA graph (CUDA only)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar (--no-progress)")
    tr.set_defaults(run=_cmd_train)

    tv = sub.add_parser(
        "traverse", help="latent traversals of a trained run",
        description="Decode each latent dimension swept from its 2nd to its 98th percentile over "
                    "the data around one image's code (rows: dimensions; columns: percentiles).",
        epilog="example:\n  wtc traverse runs/wtc --out runs/wtc/traversals.png")
    tv.add_argument("run_dir", help="a run's folder (wtc train --out)")
    tv.add_argument("--out", required=True, metavar="OUT.png",
                    help="the image to write (its folders are made)")
    tv.add_argument("--steps", type=int, default=9, help="columns per dimension (2-25)")
    tv.add_argument("--seed", type=int, default=2, help="which image's code is swept")
    tv.add_argument("--device", default=None, help="default: cuda if a GPU is visible, else cpu")
    tv.set_defaults(run=_cmd_traverse)

    from wtc.metrics import METRICS, PROTOCOLS, default_metrics

    ev = sub.add_parser("eval", help="evaluate a run's last checkpoint; writes RUN_DIR/eval.json")
    ev.add_argument("run_dir")
    # the registry's metrics, read when the parser is built (after any register_metric)
    ev.add_argument("--metrics", nargs="+", default=default_metrics(), choices=list(METRICS))
    ev.add_argument("--protocol", choices=list(PROTOCOLS), default="paper")
    ev.add_argument("--repeats", type=int, default=None, help="default: the protocol's")
    ev.add_argument("--seed", type=int, default=None,
                    help="the first repeat's seed (repeat i: seed + 73 i); default the "
                         "protocol's: 1 for authors (their evaluate.py's), else 0")
    ev.add_argument("--scale", type=float, default=1.0,
                    help="multiply every sample size (quick looks; 1 is the protocol)")
    ev.add_argument("--size", action="append", metavar="NAME=N",
                    help="set one sample size outright (num_train, num_test, votes_train, "
                         "votes_eval, variance_samples); repeatable")
    ev.add_argument("--device", default=None)
    ev.add_argument("--quiet", action="store_true",
                    help="no progress bars (encoding every image once, the repeats, the metrics)")
    ev.set_defaults(run=_cmd_eval)

    sw = sub.add_parser("sweep", help="train and evaluate every run of a study (resumable), "
                        "here, on Slurm or on Ray")
    sw.add_argument("spec", nargs="?", default=None,
                    help="a preset (paper, mini) or a .toml/.json spec file")
    sw.add_argument("--out", default=None, help="the sweep's folder")
    sw.add_argument("--status", metavar="DIR", default=None,
                    help="print the state of every run of the sweep folder DIR and exit")
    sw.add_argument("--executor", choices=["local", "slurm", "ray"], default=None,
                    help="where the runs train (default: the spec's [executor] name, else "
                         "local); rerunning submits only what is neither finished nor running")
    sw.add_argument("--jobs", type=int, default=None, help="local: runs at once (default 1)")
    sw.add_argument("--devices", nargs="+", default=None,
                    help="local: devices cycled over the jobs (default: every GPU, else cpu)")
    sw.add_argument("--stack", type=int, default=None, metavar="N",
                    help="the most runs of a cell (its strengths and seeds) a job trains as one "
                         "stacked model (default: the spec's stack, else 1 on a CPU and up to 20 "
                         "on CUDA, fewer when a local GPU's memory holds fewer at 1 GiB a run)")
    sw.add_argument("--threads", type=int, default=None,
                    help="CPU threads per job (default: local, the cores divided among the "
                         "jobs; slurm and ray, --cpus-per-job)")
    cl = sw.add_argument_group("cluster options (over the spec's [executor] table)")
    cl.add_argument("--partition", default=None, help="slurm: partition")
    cl.add_argument("--account", default=None, help="slurm: account")
    cl.add_argument("--time", default=None, help="slurm: time limit per job, e.g. 12:00:00")
    cl.add_argument("--gpus-per-job", type=int, default=None)
    cl.add_argument("--cpus-per-job", type=int, default=None)
    cl.add_argument("--mem-gb", type=float, default=None, help="slurm: memory per job")
    cl.add_argument("--array-parallelism", type=int, default=None,
                    help="slurm: array tasks running at once")
    cl.add_argument("--sbatch", action="append", metavar="KEY=VAL", default=None,
                    help="slurm: an extra sbatch option, e.g. --sbatch qos=high; repeatable")
    cl.add_argument("--ray-address", default=None,
                    help="ray: a running cluster (auto, or ray://HOST:10001); default: start a "
                         "local one")
    sw.add_argument("--data", nargs="+", default=None, help="override the spec's data sets")
    sw.add_argument("--models", nargs="+", default=None, help="override the spec's models")
    sw.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="override the spec's seeds")
    sw.add_argument("--steps", type=int, default=None, help="override the spec's steps")
    sw.add_argument("--data-root", default=None, help="where the data sets' files are")
    sw.add_argument("--train", action="append", metavar="FIELD=VALUE", default=None,
                    help="set a TrainConfig field for every run, as the spec's [train] does "
                         "(VALUE read as JSON, else text), e.g. --train latent_dim=6; "
                         "repeatable")
    sw.set_defaults(run=_cmd_sweep)

    rp = sub.add_parser("report", help="table 1 and figures 2-7 of a sweep folder",
                        epilog="example:\n  wtc report runs/mini --out reports/mini")
    rp.add_argument("sweep_dir", help="a sweep's folder (wtc sweep --out)")
    rp.add_argument("--out", required=True, metavar="REPORT_DIR",
                    help="the report's folder (made; left out when the report fails)")
    rp.add_argument("--select-by", default="factor_vae",
                    choices=[m for m, entry in METRICS.items() if entry.column],
                    help="the metric that picks each model's best strength for table 1")
    rp.add_argument("--device", default=None, help="for the traversals (default: cuda if any)")
    rp.set_defaults(run=_cmd_report)

    demo = sub.add_parser("demo", help="train WTC-VAE and beta-VAE on procedural dSprites and "
                                       "write a small report",
                          epilog="examples:\n  wtc demo                 # about 5 minutes on a "
                                 "2-core CPU\n  wtc demo --steps 300 --out /tmp/demo")
    demo.add_argument("--out", default="wtc-demo", help="the demo's folder")
    demo.add_argument("--steps", type=int, default=None,
                      help="training steps per model (default: 1200 on CPU, 30000 on a GPU)")
    demo.add_argument("--device", default=None, help="default: cuda if a GPU is visible, else cpu")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv=None) -> int:
    from wtc.plugins import PluginError, load_plugins

    try:  # before the parser: plug-ins add models, metrics and data sets to its choices
        load_plugins()
    except PluginError as err:
        print(f"wtc: {err}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error, already said in one line; --help goes on out
        if stop.code in (0, None):
            raise
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return args.run(args)
    except KeyboardInterrupt:  # commands with more to say (train, sweep) catch it themselves
        print(f"wtc {args.command}: interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130


def _interrupted(args) -> str:
    """What a Ctrl-C left, for the commands that do not say it themselves."""
    if args.command == "eval":
        from wtc.runfiles import EVAL

        return (f"nothing was written ({Path(args.run_dir) / EVAL} is replaced only when an "
                "evaluation finishes); run the same command again to evaluate")
    if args.command == "demo":
        return (f"each run in {args.out} keeps its last checkpoint; run the same command again "
                "to continue")
    return "nothing more will be written; run the same command again"


if __name__ == "__main__":
    sys.exit(main())
