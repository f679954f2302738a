"""The projected wall time of a sweep preset on one device, from measured runs-per-hour records:

    python benchmarks/run.py -k "runs_per_hour and cpu" --out benchmarks/results/
    python benchmarks/study_time.py benchmarks/results/*runs-per-hour*.json --preset paper

The sweep's own code splits the preset into its stacks (``expand``, each run's config and
``stacks``: one model, data set and setting a stack, at most ``--stack`` runs; default the
sweep's, 1 on a CPU and 20 on CUDA). A stack of R runs of a model steps in the time the records
measured for that model at R = 1, 5 and 20 (the median over the records given; linear in R
between them, and beyond 20 from the last two), and trains the preset's steps; the stacks run one
after another on the one device, each with all its cores. Three projections are printed: every
run alone (R = 1), the eager stacks, and, where the records have them (CUDA), the stacks as
CUDA graphs. Evaluation is added at ``--eval-seconds`` a run when given.

The records were measured on ``dsprites-procedural`` (64x64, one channel); Shapes3D and Cars3D
have three channels, which changes only the first and last convolutions, so their steps are
taken to cost the same. ``--json`` writes the projection.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def step_times(records: list[dict]) -> dict:
    """{(device, model, impl): {R: median seconds of one step of R runs}}; impl is "stacked"
    (eager), "graphed" or "sequential" (R single runs one after another)."""
    samples = defaultdict(list)
    for record in records:
        for row in record["ratios"]:
            if row["op"] != "runs per hour":
                continue
            model, runs = row["size"].rsplit(" R=", 1)
            impl = {"wtc_ext": "stacked"}.get(row.get("impl", "wtc_ext"), row.get("impl"))
            samples[(row["device"], model, impl, int(runs))].append(row["wtc_ext_median_s"])
            if row["baseline"] is not None:
                samples[(row["device"], model, row["baseline"], int(runs))].append(
                    row["baseline_median_s"])
    times = defaultdict(dict)
    for (device, model, impl, runs), values in samples.items():
        # one value a record: an impl measured against two baselines appears twice in it
        times[(device, model, impl)][runs] = statistics.median(values)
    return dict(times)


def stack_step_seconds(measured: dict, runs: int) -> float:
    """Seconds of one step of a stack of ``runs``, linear between the measured stack sizes."""
    sizes = sorted(measured)
    if runs in measured:
        return measured[runs]
    if len(sizes) == 1:
        return measured[sizes[0]] * runs / sizes[0]
    lo, hi = sizes[0], sizes[1]
    for a, b in zip(sizes, sizes[1:]):
        lo, hi = a, b
        if runs <= b:
            break
    slope = (measured[hi] - measured[lo]) / (hi - lo)
    return max(0.0, measured[lo] + slope * (runs - lo))


def projection(spec, times: dict, device: str, stack: int, eval_seconds: float | None) -> dict:
    from wtc.experiments.jobs import stacks
    from wtc.experiments.sweep import expand, run_config

    runs = expand(spec)
    configs = [run_config(spec, run, device) for run in runs]
    groups = stacks(configs, stack)
    out = {"device": device, "runs": len(runs), "steps": spec.steps, "stack": stack,
           "stacks": len(groups), "hours": {}}
    for impl, size_of in (("alone", lambda g: [1] * len(g)), ("stacked", lambda g: [len(g)]),
                          ("graphed", lambda g: [len(g)])):
        key = "sequential" if impl == "alone" else impl
        total = 0.0
        for group in groups:
            model = configs[group[0]].model
            measured = times.get((device, model, key)) or (
                times.get((device, model, "stacked")) if impl == "alone" else None)
            if measured is None:
                total = None
                break
            total += sum(spec.steps * stack_step_seconds(measured, r) for r in size_of(group))
        if total is None:
            continue
        if eval_seconds:
            total += eval_seconds * len(runs)
        out["hours"][impl] = total / 3600
    if eval_seconds:
        out["eval_seconds_per_run"] = eval_seconds
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path,
                        help="benchmarks/run.py records holding the runs-per-hour benchmark")
    parser.add_argument("--preset", default="paper", help="a preset or spec file (wtc sweep's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="the records' device to project (default: cuda if they have it)")
    parser.add_argument("--stack", type=int, default=None,
                        help="runs a stack (default: the sweep's default for the device)")
    parser.add_argument("--eval-seconds", type=float, default=None,
                        help="seconds to evaluate one run, added to every run")
    parser.add_argument("--json", type=Path, default=None, help="write the projection here")
    args = parser.parse_args(argv)

    from wtc.experiments.spec import load_spec
    from wtc.experiments.sweep import STACK_CAP

    records = [json.loads(p.read_text()) for p in args.records]
    times = step_times(records)
    if not times:
        parser.error("the records hold no runs-per-hour benchmark (run benchmarks/run.py -k "
                     "runs_per_hour first)")
    devices = {device for device, _, _ in times}
    device = args.device or ("cuda" if "cuda" in devices else "cpu")
    if device not in devices:
        parser.error(f"the records have no {device} measurements (they have: "
                     f"{', '.join(sorted(devices))})")
    spec = load_spec(args.preset)
    stack = args.stack or (STACK_CAP if device == "cuda" else 1)
    result = projection(spec, times, device, stack, args.eval_seconds)
    result.update(preset=args.preset, records=[str(p) for p in args.records],
                  machines=[r.get("machine", {}) for r in records])

    print(f"{args.preset}: {result['runs']} runs x {result['steps']:,} steps on one {device}, "
          f"{result['stacks']} stacks of at most {stack}"
          + (f", evaluation {args.eval_seconds:.0f} s a run" if args.eval_seconds else
             ", training only"))
    for impl, hours in result["hours"].items():
        print(f"  {impl:<8} {hours:12,.1f} h  ({hours / 24:,.1f} days)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
