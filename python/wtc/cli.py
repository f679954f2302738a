"""The ``wtc`` command (also ``python -m wtc``)."""

from __future__ import annotations

import argparse
import sys


def _add_data_options(parser) -> None:
    """One flag per data-set option in the registry (wtc.data.registry), shared by the data sets
    that take it; unset flags are None, so each loader's own default applies."""
    from wtc.data.registry import cli_options

    for name, (option, sets) in cli_options().items():
        flags = [option.flag] + ([f"--{name}"] if option.flag != f"--{name}" else [])
        default = f"; default {option.default}" if option.default is not None else ""
        parser.add_argument(*flags, dest=name, type=option.type, choices=option.choices,
                            default=None, help=f"{option.help} ({', '.join(sets)}{default})")


def _data_options(args) -> dict:
    from wtc.data import CLI_OPTIONS

    return {k: getattr(args, k) for k in CLI_OPTIONS if getattr(args, k, None) is not None}


def _cmd_data(args) -> int:

    from wtc.data import DataSetError, load

    options = _data_options(args)
    try:
        dataset = load(args.name, root=args.root, **options)
    except DataSetError as err:
        print(f"wtc data: {err}", file=sys.stderr)
        return 2
    print(dataset.describe())
    for name, size in zip(dataset.factor_names, dataset.factor_sizes):
        print(f"  {name:<18} {size}")
    if args.show:
        from wtc.visualize import save_examples

        save_examples(dataset, args.show, count=args.count, seed=args.seed)
        print(f"wrote {args.show}")
    return 0


def _cmd_train(args) -> int:
    from wtc.data import DataSetError
    from wtc.train import TrainConfig, TrainingError, config_from_args, train

    try:
        # --config's file, then every flag given over it: two views of the same fields
        base = TrainConfig.from_file(args.config) if args.config else None
        config = config_from_args(args, base)
        options = _data_options(args)
        if options:
            config.data_options = {**config.data_options, **options}
        if args.quiet:
            config.progress = False
        result = train(config, args.out, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TrainingError, DataSetError) as err:
        print(f"wtc train: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: reconstruction error {result['reconstruction_error']:.2f} after "
          f"{result['steps']} steps")
    return 0


def _cmd_traverse(args) -> int:
    from wtc.train import TrainingError, load_run
    from wtc.visualize import save_traversals

    try:
        model, config, dataset = load_run(args.run_dir, device=args.device)
    except TrainingError as err:
        print(f"wtc traverse: {err}", file=sys.stderr)
        return 2
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
    if args.seed < 0:
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
    from wtc.runfiles import EVAL, read_json, write_json_atomic
    from wtc.train import TrainingError, load_run

    bad = _check_eval_args(args)
    if bad:
        print(f"wtc eval: {bad}", file=sys.stderr)
        return 2
    path = Path(args.run_dir) / EVAL
    try:
        model, config, dataset = load_run(args.run_dir, device=args.device)
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
    write_json_atomic(result, path)  # a killed evaluation never leaves a half-written file
    print(f"{'metric':<14} {'mean':>9} {'std':>9}  ({result['protocol']}, "
          f"{result['repeats']} repeat(s))")
    for name, v in result["metrics"].items():
        print(f"{name:<14} {v['mean']:9.4f} {v['std']:9.4f}")
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

    try:
        spec = override(load_spec(args.spec), data=args.data, models=args.models,
                        seeds=args.seeds, steps=args.steps, data_root=args.data_root,
                        train=parse_assignments(args.train))
    except SpecError as err:
        print(f"wtc sweep: {err}", file=sys.stderr)
        return 2

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop the children too
    try:
        result = run_sweep(spec, args.out, jobs=args.jobs, devices=args.devices,
                           threads=args.threads)
    except (SpecError, SweepError) as err:
        print(f"wtc sweep: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wtc sweep: interrupted; run the same command again to continue",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if result.ok else 1


def _cmd_report(args) -> int:
    from wtc.experiments import SweepError, make_report

    try:
        make_report(args.sweep_dir, args.out, select_by=args.select_by, device=args.device)
    except (SweepError, ValueError) as err:
        print(f"wtc report: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_demo(args) -> int:
    from wtc.demo import run_demo

    run_demo(args.out, steps=args.steps, device=args.device, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wtc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="describe a data set and show example images")
    from wtc.data import NAMES
    from wtc.data.registry import DATASETS

    data.add_argument("name", choices=NAMES, metavar="NAME",
                      help="; ".join(n + (f" ({', '.join(o.flag for o in DATASETS[n].options)})"
                                          if DATASETS[n].options else "") for n in NAMES))
    data.add_argument("--root", default=None, help="folder holding the data set's file")
    data.add_argument("--show", default=None, metavar="OUT.png", help="save example images")
    data.add_argument("--count", type=int, default=16, help="how many examples to show")
    data.add_argument("--seed", type=int, default=0)
    _add_data_options(data)
    data.set_defaults(run=_cmd_data)

    from wtc.models import MODELS
    from wtc.train import add_config_arguments

    tr = sub.add_parser("train", help=f"train a model ({', '.join(MODELS)})",
                        description="Train one run. Its settings are TrainConfig's fields: "
                                    "from --config (a run's config.json), then each flag given.")
    tr.add_argument("--config", default=None, metavar="CONFIG.json",
                    help="start from this TrainConfig JSON (e.g. a run's config.json); flags "
                         "given as well override its values")
    add_config_arguments(tr)  # one flag per TrainConfig field
    _add_data_options(tr)
    tr.add_argument("--out", required=True, help="the run's folder")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar (--no-progress)")
    tr.set_defaults(run=_cmd_train)

    tv = sub.add_parser("traverse", help="latent traversals of a trained run")
    tv.add_argument("run_dir")
    tv.add_argument("--out", required=True, metavar="OUT.png")
    tv.add_argument("--steps", type=int, default=9)
    tv.add_argument("--seed", type=int, default=2)
    tv.add_argument("--device", default=None)
    tv.set_defaults(run=_cmd_traverse)

    from wtc.metrics import METRICS, PROTOCOLS, default_metrics

    ev = sub.add_parser("eval", help="evaluate a run's last checkpoint; writes RUN_DIR/eval.json")
    ev.add_argument("run_dir")
    # the registry's metrics, read when the parser is built (after any register_metric)
    ev.add_argument("--metrics", nargs="+", default=default_metrics(), choices=list(METRICS))
    ev.add_argument("--protocol", choices=list(PROTOCOLS), default="paper")
    ev.add_argument("--repeats", type=int, default=None, help="default: the protocol's")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--scale", type=float, default=1.0,
                    help="multiply every sample size (quick looks; 1 is the protocol)")
    ev.add_argument("--size", action="append", metavar="NAME=N",
                    help="set one sample size outright (num_train, num_test, votes_train, "
                         "votes_eval, variance_samples); repeatable")
    ev.add_argument("--device", default=None)
    ev.add_argument("--quiet", action="store_true",
                    help="no progress bars (encoding every image once, the repeats, the metrics)")
    ev.set_defaults(run=_cmd_eval)

    sw = sub.add_parser("sweep", help="train and evaluate every run of a study (resumable)")
    sw.add_argument("spec", help="a preset (paper, mini) or a .toml/.json spec file")
    sw.add_argument("--out", required=True, help="the sweep's folder")
    sw.add_argument("--jobs", type=int, default=1, help="runs at once")
    sw.add_argument("--devices", nargs="+", default=None,
                    help="devices cycled over the job slots (default: every GPU, else cpu)")
    sw.add_argument("--threads", type=int, default=None,
                    help="CPU threads per CPU job (default: the cores divided among the jobs)")
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

    rp = sub.add_parser("report", help="table 1 and figures 2-7 of a sweep folder")
    rp.add_argument("sweep_dir")
    rp.add_argument("--out", required=True, metavar="REPORT_DIR")
    rp.add_argument("--select-by", default="factor_vae",
                    choices=[m for m, entry in METRICS.items() if entry.column],
                    help="the metric that picks each model's best strength for table 1")
    rp.add_argument("--device", default=None, help="for the traversals (default: cuda if any)")
    rp.set_defaults(run=_cmd_report)

    demo = sub.add_parser("demo", help="train WTC-VAE and beta-VAE on procedural dSprites and "
                                       "write a small report")
    demo.add_argument("--out", default="wtc-demo")
    demo.add_argument("--steps", type=int, default=None,
                      help="training steps per model (default: 1200 on CPU, 30000 on a GPU)")
    demo.add_argument("--device", default=None)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv=None) -> int:
    from wtc.plugins import PluginError, load_plugins

    try:  # before the parser: plug-ins add models, metrics and data sets to its choices
        load_plugins()
    except PluginError as err:
        print(f"wtc: {err}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
