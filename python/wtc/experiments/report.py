"""`wtc report`: the paper's table 1 and figures 2-7 from a sweep folder.

Each run's score is the mean over its evaluation repeats; a setting's (data set, model,
strength) score is the mean and the standard deviation (numpy's, ddof=0) of its runs' scores
over seeds; table 1 shows, per data set and model, the strength with the best mean of
``select_by`` (default: FactorVAE score). Runs without a complete evaluation are listed, and a
cell short of seeds is marked, never averaged silently.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtc.experiments.spec import SweepSpec
from wtc.experiments.sweep import (
    eval_complete,
    expected_eval,
    is_trained,
    load_sweep,
)
from wtc.runfiles import EVAL, read_json
from wtc.visualize import pyplot

COLUMNS = {"factor_vae": "FactorVAE score", "wdg": "WDG", "modularity": "Modularity",
           "mig": "MIG", "reconstruction": "Reconstruction"}
LOWER_IS_BETTER = {"reconstruction"}
CORRELATED = ("factor_vae", "mig", "wdg", "modularity")  # figure 5


@dataclass
class Setting:
    data: str
    model: str
    strength: str
    value: float
    seeds: list = field(default_factory=list)  # seeds with a complete evaluation
    expected_seeds: int = 0
    scores: dict = field(default_factory=dict)  # metric -> per-seed run means
    repeats: dict = field(default_factory=dict)  # metric -> every repeat of every seed

    def mean(self, metric):
        return float(np.mean(self.scores[metric])) if self.scores.get(metric) else float("nan")

    def std(self, metric):
        return float(np.std(self.scores[metric])) if self.scores.get(metric) else float("nan")

    @property
    def complete(self) -> bool:
        return len(self.seeds) == self.expected_seeds


@dataclass
class Collected:
    spec: SweepSpec
    settings: list  # [Setting]
    runs: list  # [{"id", "data", "model", "strength", "value", "seed", "scores"}]
    missing: dict  # run id -> why it has no evaluation in the report
    metrics: list  # the table's metrics, in COLUMNS order


def collect(sweep_dir) -> Collected:
    sweep_dir = Path(sweep_dir)
    spec, runs = load_sweep(sweep_dir)
    expected = expected_eval(spec)
    metrics = [m for m in COLUMNS if m in spec.eval.metrics]
    settings: dict = {}
    evaluated, missing = [], {}
    for run in runs:
        key = (run.data, run.model, run.value)
        s = settings.setdefault(key, Setting(run.data, run.model, run.strength, run.value))
        s.expected_seeds += 1
        run_dir = sweep_dir / run.id
        evaluation = read_json(run_dir / EVAL)
        if not is_trained(spec, run_dir):
            missing[run.id] = ("not trained" if not run_dir.exists() else
                               "training not finished")
            continue
        if evaluation is None:
            missing[run.id] = "trained, not evaluated"
            continue
        if not eval_complete(evaluation, expected):
            missing[run.id] = "evaluated with other settings than the spec's"
            continue
        s.seeds.append(run.seed)
        scores = {}
        for m in metrics:
            entry = evaluation["metrics"][m]
            values = [v for v in entry["values"] if v is not None and np.isfinite(v)]
            scores[m] = float(np.mean(values)) if values else float("nan")
            s.scores.setdefault(m, []).append(scores[m])
            s.repeats.setdefault(m, []).extend(values)
        evaluated.append({"id": run.id, "data": run.data, "model": run.model,
                          "strength": run.strength, "value": run.value, "seed": run.seed,
                          "scores": scores})
    return Collected(spec, list(settings.values()), evaluated, missing, metrics)


def best_settings(c: Collected, select_by: str = "factor_vae") -> dict:
    """(data, model) -> the Setting with the best mean of ``select_by`` (None if no seeds)."""
    if select_by not in c.metrics:
        raise ValueError(f"select_by must be one of the sweep's metrics {c.metrics}, got "
                         f"{select_by!r}")
    sign = -1.0 if select_by in LOWER_IS_BETTER else 1.0
    best = {}
    for s in c.settings:
        score = s.mean(select_by)
        key = (s.data, s.model)
        if not np.isfinite(score):
            best.setdefault(key, None)
            continue
        current = best.get(key)
        if current is None or sign * score > sign * current.mean(select_by):
            best[key] = s
    return best


def _ranks(values: list, lower_better: bool) -> list:
    """0 for the best, 1 for the second, None otherwise (ties share a rank)."""
    finite = sorted({v for v in values if np.isfinite(v)}, reverse=not lower_better)
    return [finite.index(v) if np.isfinite(v) and finite.index(v) < 2 else None for v in values]


def table1(c: Collected, select_by: str = "factor_vae") -> list:
    """Rows {data, model, strength, value, seeds, expected_seeds, <metric>: (mean, std),
    <metric>_rank: 0 | 1 | None} in spec order."""
    best = best_settings(c, select_by)
    rows = []
    for data in c.spec.data:
        block = []
        for model in c.spec.models:
            s = best.get((data, model))
            row = {"data": data, "model": model}
            if s is None:
                row.update(strength=None, value=None, seeds=0,
                           expected_seeds=len(c.spec.seeds))
                for m in c.metrics:
                    row[m] = (float("nan"), float("nan"))
            else:
                row.update(strength=s.strength, value=s.value, seeds=len(s.seeds),
                           expected_seeds=s.expected_seeds)
                for m in c.metrics:
                    row[m] = (s.mean(m), s.std(m))
            block.append(row)
        for m in c.metrics:
            ranks = _ranks([r[m][0] for r in block], m in LOWER_IS_BETTER)
            for r, rank in zip(block, ranks):
                r[f"{m}_rank"] = rank
        rows += block
    return rows


def _cell(row, m, digits) -> str:
    mean, std = row[m]
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def _digits(m) -> int:
    return 1 if m == "reconstruction" else 3


def table1_markdown(c: Collected, rows: list, select_by: str) -> str:
    header = ["data set", "model", "strength"] + [COLUMNS[m] for m in c.metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r["strength"] is None:
            strength = "-"
        else:
            strength = f"{r['strength']}={r['value']:g}"
            if r["seeds"] < r["expected_seeds"]:
                strength += f" †({r['seeds']}/{r['expected_seeds']} seeds)"
        cells = []
        for m in c.metrics:
            text = _cell(r, m, _digits(m))
            if r.get(f"{m}_rank") == 0:
                text = f"**{text}**"
            elif r.get(f"{m}_rank") == 1:
                text = f"<u>{text}</u>"
            cells.append(text)
        lines.append("| " + " | ".join([r["data"], r["model"], strength] + cells) + " |")
    arrows = ", ".join(f"{COLUMNS[m]} {'lower' if m in LOWER_IS_BETTER else 'higher'}"
                       for m in c.metrics)
    lines += ["", f"Mean (std) over seeds at each model's best strength by "
                  f"{COLUMNS[select_by]}; best of each data set in bold, second underlined "
                  f"({arrows} is better). † marks a setting missing seeds."]
    return "\n".join(lines)


def write_csv(c: Collected, rows: list, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data", "model", "strength", "value", "seeds", "expected_seeds"]
                   + [f"{m}_{k}" for m in c.metrics for k in ("mean", "std")])
        for r in rows:
            w.writerow([r["data"], r["model"], r["strength"] or "", "" if r["value"] is None
                        else f"{r['value']:g}", r["seeds"], r["expected_seeds"]]
                       + [f"{x:.6g}" for m in c.metrics for x in r[m]])


def write_settings_csv(c: Collected, path: Path) -> None:
    """Every setting, not only the best strengths (what figures 2, 3, 6 and 7 plot)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data", "model", "strength", "value", "seeds", "expected_seeds"]
                   + [f"{m}_{k}" for m in c.metrics for k in ("mean", "std")])
        for s in c.settings:
            w.writerow([s.data, s.model, s.strength, f"{s.value:g}", len(s.seeds),
                        s.expected_seeds]
                       + [f"{x:.6g}" for m in c.metrics for x in (s.mean(m), s.std(m))])


# -- figures --------------------------------------------------------------------------------------

def scatter_vs_reconstruction(c: Collected, metric: str, path: Path) -> None:
    """Figures 2 and 6: each point one strength, averaged over seeds; upper left is better."""
    plt = pyplot()
    width = max(5.2 * len(c.spec.data), 6.5)
    fig, axes = plt.subplots(1, len(c.spec.data), figsize=(width, 4.6),
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, data in zip(axes[0], c.spec.data):
        for i, model in enumerate(c.spec.models):
            pts = [(s.mean("reconstruction"), s.mean(metric), s.value) for s in c.settings
                   if s.data == data and s.model == model and s.seeds]
            if not pts:
                continue
            x, y, v = zip(*sorted(pts, key=lambda p: p[2]))
            ax.plot(x, y, "o-", color=colors(i), label=model, alpha=0.85, lw=1)
            for xi, yi, vi in zip(x, y, v):
                ax.annotate(f"{vi:g}", (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_title(data)
        xs = [x for line in ax.get_lines() for x in line.get_xdata()]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 3:  # one collapsed setting squeezes the rest
            ax.set_xscale("log")
        ax.set_xlabel("reconstruction error (lower is better)")
        ax.set_ylabel(COLUMNS[metric])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{COLUMNS[metric]} against reconstruction, one point per strength\n"
                 "(mean over seeds; labels: strength; upper left is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def violins(c: Collected, metric: str, path: Path) -> None:
    """Figures 3 and 7: every evaluation (all repeats of all seeds) per strength."""
    plt = pyplot()
    rows, cols = len(c.spec.data), len(c.spec.models)
    fig, axes = plt.subplots(rows, cols, figsize=(max(2.6 * cols + 0.6, 7.0), 2.8 * rows),
                             squeeze=False, sharey="row")
    for i, data in enumerate(c.spec.data):
        for j, model in enumerate(c.spec.models):
            ax = axes[i][j]
            settings = sorted((s for s in c.settings if s.data == data and s.model == model),
                              key=lambda s: s.value)
            values = [s.repeats.get(metric, []) for s in settings]
            positions = [k for k, v in enumerate(values) if len(v) > 0]
            if positions:
                data_ = [values[k] for k in positions]
                if all(len(v) > 1 and np.ptp(v) > 0 for v in data_):
                    ax.violinplot(data_, positions=positions, showmeans=True)
                else:  # a violin needs spread; show the points instead
                    for k in positions:
                        ax.plot([k] * len(values[k]), values[k], "o", ms=3)
            ax.set_xticks(range(len(settings)))
            ax.set_xticklabels([f"{s.value:g}" for s in settings], fontsize=8)
            if settings:
                ax.set_xlabel(settings[0].strength, fontsize=8)
            ax.set_title(f"{model}" + (f" ({data})" if rows > 1 else ""), fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        axes[i][0].set_ylabel(COLUMNS[metric])
    fig.suptitle(f"{COLUMNS[metric]} per strength{'' if rows > 1 else ' on ' + c.spec.data[0]}"
                 " (every evaluation of every seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rank_correlations(c: Collected) -> dict:
    """data set -> (metric names, Spearman matrix over runs); NaN where undefined."""
    from scipy.stats import spearmanr

    names = [m for m in CORRELATED if m in c.metrics]
    out = {}
    for data in c.spec.data:
        table = np.array([[r["scores"][m] for m in names] for r in c.runs if r["data"] == data])
        k = len(names)
        matrix = np.full((k, k), np.nan)
        if len(table) >= 3:
            for a in range(k):
                for b in range(k):
                    x, y = table[:, a], table[:, b]
                    ok = np.isfinite(x) & np.isfinite(y)
                    if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
                        matrix[a, b] = spearmanr(x[ok], y[ok]).statistic
        out[data] = (names, matrix)
    return out


def correlation_heatmap(c: Collected, path: Path) -> dict:
    """Figure 5: Spearman rank correlation between metrics over every evaluated run."""
    plt = pyplot()
    corr = rank_correlations(c)
    fig, axes = plt.subplots(1, len(corr), figsize=(4.2 * len(corr), 3.9), squeeze=False)
    for ax, (data, (names, matrix)) in zip(axes[0], corr.items()):
        im = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        labels = [COLUMNS[m].replace(" score", "") for m in names]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(labels, rotation=30, fontsize=8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(labels, fontsize=8)
        for a in range(len(names)):
            for b in range(len(names)):
                text = "n/a" if np.isnan(matrix[a, b]) else f"{matrix[a, b]:.2f}"
                dark = not np.isnan(matrix[a, b]) and abs(matrix[a, b]) > 0.6
                ax.text(b, a, text, ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        n = sum(r["data"] == data for r in c.runs)
        ax.set_title(f"{data} ({n} runs)", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle("Spearman rank correlation between metrics over runs", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return corr


def best_run(c: Collected, data: str, select_by: str):
    sign = -1.0 if select_by in LOWER_IS_BETTER else 1.0
    candidates = [r for r in c.runs if r["data"] == data and np.isfinite(r["scores"][select_by])]
    return max(candidates, key=lambda r: sign * r["scores"][select_by], default=None)


# -- the report -----------------------------------------------------------------------------------

def make_report(sweep_dir, out, select_by: str = "factor_vae", device: str | None = None,
                echo=print) -> dict:
    """Write table1.md/.csv, settings.csv, the figures, report.md and index.html into ``out``.
    Returns {"table": rows, "missing": {...}, "figures": [...]}."""
    sweep_dir, out = Path(sweep_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = collect(sweep_dir)
    if not c.runs:
        raise ValueError(f"no run in {sweep_dir} has a complete evaluation yet "
                         f"({len(c.missing)} runs lack one); nothing to report")
    rows = table1(c, select_by)
    md_table = table1_markdown(c, rows, select_by)
    (out / "table1.md").write_text(md_table + "\n")
    write_csv(c, rows, out / "table1.csv")
    write_settings_csv(c, out / "settings.csv")

    figures = []  # (file, caption)
    for metric, number in (("factor_vae", 2), ("wdg", 6)):
        if metric in c.metrics and "reconstruction" in c.metrics:
            name = f"figure{number}_{metric}_vs_reconstruction.png"
            scatter_vs_reconstruction(c, metric, out / name)
            figures.append((name, f"Figure {number}: {COLUMNS[metric]} against reconstruction "
                                  "error, one point per strength (upper left is better)."))
    for metric, number in (("wdg", 3), ("factor_vae", 7)):
        if metric in c.metrics:
            name = f"figure{number}_{metric}_violins.png"
            violins(c, metric, out / name)
            figures.append((name, f"Figure {number}: {COLUMNS[metric]} per strength, every "
                                  "evaluation of every seed."))
    corr = {}
    if sum(m in c.metrics for m in CORRELATED) >= 2:
        name = "figure5_rank_correlation.png"
        corr = correlation_heatmap(c, out / name)
        figures.append((name, "Figure 5: Spearman rank correlation between the metrics over "
                              "all evaluated runs."))
    notes = []
    for data in c.spec.data:
        run = best_run(c, data, select_by)
        if run is None:
            notes.append(f"No traversals for {data}: no evaluated run.")
            continue
        name = f"figure4_traversals_{data}.png"
        try:
            _traversals(sweep_dir / run["id"], out / name, device,
                        f"{run['id']} (best {COLUMNS[select_by]} "
                        f"{run['scores'][select_by]:.3f})")
            figures.append((name, f"Figure 4: latent traversals of the best run on {data} by "
                                  f"{COLUMNS[select_by]}: {run['id']}."))
        except Exception as err:  # a report without one figure beats no report
            notes.append(f"No traversals for {data} ({run['id']}): {err}")

    missing_lines = [f"- {run_id}: {why}" for run_id, why in sorted(c.missing.items())]
    spec, settings = c.spec, expected_eval(c.spec)
    summary = (f"Sweep `{spec.name}`: {len(c.runs)} of {len(c.runs) + len(c.missing)} runs "
               f"evaluated; {spec.steps} steps, batch {spec.batch_size}, Adam {spec.lr:g}; "
               f"evaluation protocol `{spec.eval.protocol}` ({settings['repeats']} repeat(s), "
               f"sample sizes {settings['sample_sizes']}).")
    md = [f"# Report: sweep {spec.name}", "", summary, "", "## Table 1", "", md_table, ""]
    if missing_lines:
        md += ["## Runs without a complete evaluation (left out of every number above)", ""]
        md += missing_lines + [""]
    md += ["## Figures", ""]
    for name, caption in figures:
        md += [f"![{caption}]({name})", "", caption, ""]
    md += notes
    (out / "report.md").write_text("\n".join(md) + "\n")
    _write_html(out / "index.html", spec, summary, c, rows, figures, c.missing, notes, select_by)
    (out / "report.json").write_text(json.dumps(
        {"table": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()}
                   for r in rows],
         "missing": c.missing,
         "rank_correlation": {d: {"metrics": n, "matrix": np.where(np.isnan(m), None, m)
                                  .tolist()} for d, (n, m) in corr.items()},
         "figures": [f for f, _ in figures]}, indent=1, default=float))
    echo(md_table)
    if c.missing:
        echo(f"\n{len(c.missing)} run(s) lack a complete evaluation and are left out:")
        echo("\n".join(missing_lines))
    echo(f"\nwrote {out / 'index.html'} and {out / 'report.md'}")
    return {"table": rows, "missing": c.missing, "figures": [f for f, _ in figures]}


def _traversals(run_dir: Path, path: Path, device, title: str) -> None:
    from wtc.train import load_run
    from wtc.visualize import save_traversals

    model, _, dataset = load_run(run_dir, device=device)
    save_traversals(model, dataset, path, title=title)


def _write_html(path, spec, summary, c, rows, figures, missing, notes, select_by) -> None:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in
                   ["data set", "model", "strength"] + [COLUMNS[m] for m in c.metrics])
    body = []
    for r in rows:
        strength = "-" if r["strength"] is None else f"{r['strength']}={r['value']:g}"
        if r["strength"] is not None and r["seeds"] < r["expected_seeds"]:
            strength += f" &dagger;({r['seeds']}/{r['expected_seeds']} seeds)"
        cells = []
        for m in c.metrics:
            text = e(_cell(r, m, _digits(m)))
            rank = r.get(f"{m}_rank")
            text = f"<b>{text}</b>" if rank == 0 else f"<u>{text}</u>" if rank == 1 else text
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr><td>{e(r['data'])}</td><td>{e(r['model'])}</td><td>{strength}</td>"
                    + "".join(cells) + "</tr>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>wtc report: {e(spec.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}"
        "img{max-width:100%;border:1px solid #eee}</style></head><body>",
        f"<h1>Sweep {e(spec.name)}</h1><p>{e(summary)}</p>",
        f"<h2>Table 1</h2><table><tr>{head}</tr>{''.join(body)}</table>",
        f"<p>Mean (std) over seeds at each model's best strength by {e(COLUMNS[select_by])}; "
        "best of each data set in bold, second underlined. &dagger; marks a setting missing "
        "seeds. <a href='table1.csv'>table1.csv</a>, <a href='settings.csv'>settings.csv</a> "
        "(every strength).</p>",
    ]
    if missing:
        parts.append("<h2>Runs without a complete evaluation</h2><p>Left out of every number "
                     "on this page:</p><ul>" + "".join(
                         f"<li>{e(k)}: {e(v)}</li>" for k, v in sorted(missing.items()))
                     + "</ul>")
    parts.append("<h2>Figures</h2>")
    for name, caption in figures:
        parts.append(f"<figure><img src='{e(name)}' alt='{e(caption)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += [f"<p>{e(n)}</p>" for n in notes]
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))
