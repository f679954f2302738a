"""Run the benchmark suites and print the ratios baseline / wtc_ext, measured in the same run.

    python benchmarks/run.py                      # every suite, every device present
    python benchmarks/run.py -k permute_dims      # one op
    python benchmarks/run.py --out benchmarks/results/   # also write a JSON record there

The JSON record holds the machine (CPU or GPU name, threads), torch and CUDA versions, the
date, and for every (op, device, size) the median time of each implementation and its ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_info():
    import torch
    import wtc_ext

    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "wtc_ext_build": wtc_ext.build_info(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return info


# Implementations of ours: every other impl in a group is a baseline they are compared with.
# "graphed" is the eager stack ("wtc_ext") captured as one CUDA graph.
OURS = ("wtc_ext", "wtc", "graphed")


def ratios(results):
    """{(op, device, size): {impl: median_s}} -> rows with baseline / ours ratios, one row for
    each of our implementations and each baseline of the group."""
    groups = {}
    for bench in results["benchmarks"]:
        extra = bench["extra_info"]
        key = (extra["op"], extra["device"], extra["size"])
        groups.setdefault(key, {})[extra["impl"]] = bench["stats"]["median"]
    rows = []
    for (op, device, size), times in sorted(groups.items()):
        ours = {k: v for k, v in times.items() if k in OURS}
        baselines = {k: v for k, v in times.items() if k not in OURS}
        for impl, t_ours in ours.items():
            if not baselines:  # nothing to compare with in this group: the time alone
                rows.append({"op": op, "device": device, "size": size, "impl": impl,
                             "baseline": None, "wtc_ext_median_s": t_ours,
                             "baseline_median_s": None, "speedup": None})
            for baseline, t in sorted(baselines.items()):
                rows.append({"op": op, "device": device, "size": size, "impl": impl,
                             "baseline": baseline, "wtc_ext_median_s": t_ours,
                             "baseline_median_s": t,
                             "speedup": (t / t_ours) if t_ours else None})
    return rows


def print_table(rows, file=sys.stdout):
    print(f"{'op':<22} {'device':<6} {'size':<26} {'ours':<8} {'baseline':<26} {'ours':>11} "
          f"{'baseline':>11} {'speedup':>8}", file=file)
    for r in rows:
        ours = f"{r['wtc_ext_median_s'] * 1e6:9.1f}us" if r["wtc_ext_median_s"] else "-"
        base = (f"{r['baseline_median_s'] * 1e6:9.1f}us" if r["baseline_median_s"] is not None
                else "-")
        speed = f"{r['speedup']:7.1f}x" if r["speedup"] is not None else "-"
        print(f"{r['op']:<22} {r['device']:<6} {r['size']:<26} {r.get('impl', 'wtc_ext'):<8} "
              f"{r['baseline'] or '-':<26} "
              f"{ours:>11} {base:>11} {speed:>8}", file=file)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="pytest -k expression selecting benchmarks")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON record")
    parser.add_argument("--max-time", type=float, default=0.5,
                        help="seconds per benchmark (pytest-benchmark --benchmark-max-time)")
    args = parser.parse_args(argv)

    import pytest

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.json"
        pytest_args = [str(HERE), "-q", "-p", "no:cacheprovider", f"--benchmark-json={raw}",
                       f"--benchmark-max-time={args.max_time}", "--benchmark-min-rounds=5",
                       "--benchmark-disable-gc", "--benchmark-columns=median,iqr,rounds"]
        if args.k:
            pytest_args += ["-k", args.k]
        code = int(pytest.main(pytest_args))
        if not raw.exists():  # (5: no benchmark selected)
            return 0 if code == 5 else code or 1
        # Benchmarks that failed, or a run cut short (SIGINT: gpu_check.sh's time limit), still
        # leave the ones that finished: they are written, marked incomplete.
        results = json.loads(raw.read_text())

    rows = ratios(results)
    print()
    print_table(rows)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        info = machine_info()
        tag = "cuda" if "gpu" in info else "cpu"
        stamp = info["date"][:10]
        name = f"{stamp}-{tag}{'-' + args.k.replace(' ', '_') if args.k else ''}.json"
        record = {"machine": info, "ratios": rows}
        if code not in (0, 5):
            record["incomplete"] = (f"pytest exit code {code}: some benchmarks failed or were "
                                    f"cut short; these rows are the ones that finished")
        (args.out / name).write_text(json.dumps(record, indent=1))
        print(f"\nwrote {args.out / name}")
    return 0 if code in (0, 5) else code


if __name__ == "__main__":
    sys.exit(main())
