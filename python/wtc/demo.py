"""`wtc demo`: the README's main command. Trains WTC-VAE and a beta-VAE baseline on procedural
dSprites (no files needed), evaluates reconstruction and WDG, and writes a small report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

# A short budget learns faster with a larger step than the paper's 1e-4 (300,000 steps).
DEMO_LR = 5e-4
# Images behind the one reconstruction number (result.json, metrics.json and the report).
RECONSTRUCTION_SAMPLES = 4096


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _expectations(steps: int, dev, cache: Path) -> list:
    """What the report's numbers and pictures mean, and what they do not show yet."""
    size = _folder_size(cache) / 1e6
    short = steps < 30_000
    return [
        "## How to read this", "",
        "- **WDG** (Wasserstein dependency gap, the paper's metric): for each factor of variation, "
        "how much more the latent dimension that depends most on it depends on it than the "
        "second one (W1 between a dimension's distribution given the factor and its marginal), "
        "averaged over factors. **Higher is better**: one dimension per factor. It is >= 0; "
        "near 0, no dimension singles a factor out.",
        f"- **reconstruction**: the Bernoulli negative log-likelihood of an image summed over its "
        f"64x64 pixels, decoding posterior means, averaged over {RECONSTRUCTION_SAMPLES:,} images "
        "(the same number as each run's `result.json`). **Lower is better**; 0 is perfect.",
        "- **traversals**: each row is one latent dimension, swept from its 2nd to its 98th "
        "percentile over the data (the values at the row's left) around one image's code; the "
        "columns are those percentiles. A disentangled dimension changes one factor (position, "
        "scale, shape, rotation) along its row; a row that does not change is an unused "
        "dimension.",
        "- **loss curves**: every logged term against the step, from each run's `log.jsonl`.",
        "",
        (f"{steps:,} steps is a short run: expect blurry blobs whose shape and rotation are not "
         "yet learned (what 1,200 CPU steps give). The paper trains 300,000 steps; what that "
         "run gives on a GPU is not measured yet." if short else
         f"{steps:,} steps is a tenth of the paper's 300,000; what the paper-length run gives "
         "is not measured yet."),
        "",
        f"Cache: the rendered data set is kept in `{cache}` ({size:,.0f} MB now) so the next run "
        "starts at once; delete that folder to free the space (it is re-rendered when needed), "
        "or set `WTC_CACHE` to keep it elsewhere.", "",
    ]


def run_demo(out="wtc-demo", steps: int | None = None, device: str | None = None,
             progress: bool = True, data_options: dict | None = None) -> dict:
    from wtc.data.base import cache_root
    from wtc.metrics import wdg
    from wtc.representation import dataset_means
    from wtc.runfiles import CHECKPOINT, LOSS_CURVES
    from wtc.train import TrainConfig, Trainer, pick_device
    from wtc.visualize import save_reconstructions, save_traversals

    if steps is not None and steps < 1:  # before anything is written
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = Path(out)
    dev = pick_device(device)
    if steps is None:
        steps = 30_000 if dev.type == "cuda" else 1_200
    out.mkdir(parents=True, exist_ok=True)
    runs = [("wtc-vae", {"gamma": 10.0}), ("beta-vae", {"beta": 4.0})]
    rows = []
    for name, strengths in runs:
        config = TrainConfig(model=name, data="dsprites-procedural", steps=steps,
                             data_options=dict(data_options or {}),
                             checkpoint_every=max(steps // 4, 1), log_every=50, seed=0,
                             lr=DEMO_LR, eval_samples=RECONSTRUCTION_SAMPLES,
                             device=str(dev), progress=progress, **strengths)
        run_dir = out / name
        trainer = Trainer(config, run_dir, resume=(run_dir / CHECKPOINT).exists(),
                          overwrite=True)
        t0 = time.perf_counter()
        result = trainer.run()
        seconds = time.perf_counter() - t0
        model, dataset = trainer.model, trainer.dataset
        rng = np.random.default_rng(0)
        indices = rng.integers(0, len(dataset), min(12_800, 4 * len(dataset)))
        codes = dataset_means(model, dataset, indices)
        factors = dataset.index_to_factors(indices)
        score = wdg(codes, factors, variant="paper", seed=0)
        rec = result["reconstruction_error"]  # the run's own: one number, not two
        save_reconstructions(model, dataset, out / f"{name}-reconstructions.png")
        save_traversals(model, dataset, out / f"{name}-traversals.png",
                        title=f"{name} ({', '.join(f'{k}={v:g}' for k, v in strengths.items())}),"
                              f" {steps} steps")
        rows.append({"model": name, **strengths, "steps": steps,
                     "steps_per_s": steps / seconds, "reconstruction": rec,
                     "reconstruction_samples": RECONSTRUCTION_SAMPLES, "wdg": score.score,
                     "wdg_per_factor": dict(zip(dataset.factor_names,
                                                [None if np.isnan(g) else float(g)
                                                 for g in score.gaps]))})
    (out / "metrics.json").write_text(json.dumps(rows, indent=1))
    lines = ["# wtc demo", "",
             f"Procedural dSprites, {steps} training steps per model (Adam {DEMO_LR:g}) on "
             f"{dev.type} "
             f"(torch {torch.__version__}). WDG: paper variant on 12,800 posterior means "
             "(higher is better); reconstruction: summed Bernoulli NLL per image over "
             f"{RECONSTRUCTION_SAMPLES:,} images (lower is better).", "",
             "| model | strength | steps/s | reconstruction (lower is better) | WDG (higher is "
             "better) |", "|---|---|---|---|---|"]
    for r in rows:
        strength = ", ".join(f"{k}={r[k]:g}" for k in ("beta", "gamma") if k in r)
        lines.append(f"| {r['model']} | {strength} | {r['steps_per_s']:.1f} | "
                     f"{r['reconstruction']:.1f} | {r['wdg']:.3f} |")
    lines += [""]
    table_end = len(lines)
    lines += _expectations(steps, dev, cache_root().absolute())
    for r in rows:
        lines += [f"## {r['model']}", "", f"![reconstructions]({r['model']}-reconstructions.png)",
                  "", f"![traversals]({r['model']}-traversals.png)", "",
                  f"![loss curves]({r['model']}/{LOSS_CURVES})", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines[:table_end]))
    print(f"\nreport: {out / 'report.md'}")
    print(f"cache: {cache_root().absolute()} ({_folder_size(cache_root()) / 1e6:,.0f} MB); "
          "delete it to free the space")
    return {"rows": rows}
