"""The report's figures (the paper's figures 2-7) from a sweep's collected results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wtc.experiments.results import Collected, display, rank_correlations, setting_label
from wtc.visualize import pyplot


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
        ax.set_ylabel(display(metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{display(metric)} against reconstruction, one point per strength\n"
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
            ax.set_xticklabels([setting_label(s.strength, s.value, s.axes) if s.axes
                                else f"{s.value:g}" for s in settings], fontsize=8)
            if settings:
                ax.set_xlabel(settings[0].strength, fontsize=8)
            ax.set_title(f"{model}" + (f" ({data})" if rows > 1 else ""), fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        axes[i][0].set_ylabel(display(metric))
    fig.suptitle(f"{display(metric)} per strength{'' if rows > 1 else ' on ' + c.spec.data[0]}"
                 " (every evaluation of every seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def correlation_heatmap(c: Collected, path: Path) -> dict:
    """Figure 5: Spearman rank correlation between metrics over every evaluated run."""
    plt = pyplot()
    corr = rank_correlations(c)
    fig, axes = plt.subplots(1, len(corr), figsize=(4.2 * len(corr), 3.9), squeeze=False)
    for ax, (data, (names, matrix)) in zip(axes[0], corr.items()):
        im = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        labels = [display(m).replace(" score", "") for m in names]
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


def traversals(run_dir: Path, path: Path, device, title: str) -> None:
    from wtc.train import load_run
    from wtc.visualize import save_traversals

    model, _, dataset = load_run(run_dir, device=device)
    save_traversals(model, dataset, path, title=title)
