"""One trained run's metrics under each evaluation protocol (paper, authors, dlib): the README's
"How the protocol moves the metrics" table.

    PYTHONPATH=.:python python benchmarks/protocol_table.py RUN_DIR --paper-repeats 10 \
        --out docs/protocols/table.json

Every image is encoded once and the three evaluations look the codes up: each protocol's values
are what ``wtc eval RUN_DIR --protocol P [--repeats N]`` gives (which caches the same way for
these sizes on dSprites), up to float rounding, without encoding the data set three times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METRICS = ["factor_vae", "wdg", "modularity", "mig", "reconstruction"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--paper-repeats", type=int, default=None,
                        help="repeats of the paper protocol (default: its 50)")
    parser.add_argument("--authors-repeats", type=int, default=None,
                        help="repeats of the authors' protocol (default: its 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from wtc.metrics import evaluate
    from wtc.metrics.cache import CachedRepresentation
    from wtc.metrics.registry import metric
    from wtc.train import load_run

    model, config, dataset = load_run(args.run_dir, device="cpu")
    t0 = time.perf_counter()
    codes = CachedRepresentation.encode(model, dataset, progress=True)
    timings = {"encoding": time.perf_counter() - t0}
    results = {}
    for protocol, repeats in (("paper", args.paper_repeats), ("authors", args.authors_repeats),
                              ("dlib", None)):
        t0 = time.perf_counter()
        results[protocol] = evaluate(model, dataset, METRICS, protocol=protocol, repeats=repeats,
                                     seed=args.seed, cache=codes)
        timings[protocol] = time.perf_counter() - t0
    header = ["protocol", "repeats"] + [metric(m).display for m in METRICS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for protocol, r in results.items():
        cells = [f"`{protocol}`", str(r["repeats"])]
        for m in METRICS:
            v, d = r["metrics"][m]["mean"], metric(m).digits
            cells.append(f"{v:.{d}f} ({r['metrics'][m]['std']:.{d}f})")
        print("| " + " | ".join(cells) + " |")
    print({k: f"{v:.0f} s" for k, v in timings.items()})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"run": str(args.run_dir), "config": config.to_json(),
                                              "results": results, "seconds": timings},
                                             indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
