"""A sweep's results: its runs collected into settings, table 1's rows, the best settings and
the rank correlations between metrics.

Each run's score is the mean over its evaluation repeats; a setting's (data set, model,
strength) score is the mean and the standard deviation (numpy's, ddof=0) of its runs' scores
over seeds; table 1 shows, per data set and model, the strength with the best mean of
``select_by`` (default: FactorVAE score). Runs without a complete evaluation are listed, and a
cell short of seeds is marked, never averaged silently. Which metrics are columns, their names,
directions and digits come from the metric registry (:mod:`wtc.metrics.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtc.experiments.jobs import eval_matches, is_trained
from wtc.experiments.spec import SweepSpec
from wtc.experiments.sweep import expected_eval, load_sweep
from wtc.metrics import registry
from wtc.runfiles import EVAL, read_json

CORRELATED = ("factor_vae", "mig", "wdg", "modularity")  # figure 5


def columns() -> dict:
    """metric -> display name of the table's columns, in column order (the registry's, read
    now so that metrics registered later count)."""
    return registry.columns()


def display(metric: str) -> str:
    return registry.metric(metric).display


def lower_is_better(metric: str) -> bool:
    return registry.metric(metric).lower_is_better


def digits(metric: str) -> int:
    return registry.metric(metric).digits


@dataclass
class Setting:
    data: str
    model: str
    strength: str
    value: float
    axes: tuple = ()  # ((TrainConfig field, value), ...) of the spec's [axes]
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
    metrics: list  # the table's metrics, in column order


def collect(sweep_dir) -> Collected:
    sweep_dir = Path(sweep_dir)
    spec, runs = load_sweep(sweep_dir)
    expected = expected_eval(spec)
    metrics = [m for m in columns() if m in spec.eval.metrics]
    settings: dict = {}
    evaluated, missing = [], {}
    for run in runs:
        key = (run.data, run.model, run.value, run.axes)  # runs that differ only in seed
        s = settings.setdefault(key, Setting(run.data, run.model, run.strength, run.value,
                                             run.axes))
        s.expected_seeds += 1
        run_dir = sweep_dir / run.id
        evaluation = read_json(run_dir / EVAL)
        if not is_trained(run_dir, spec.steps):
            missing[run.id] = ("not trained" if not run_dir.exists() else
                               "training not finished")
            continue
        if evaluation is None:
            missing[run.id] = "trained, not evaluated"
            continue
        if not eval_matches(evaluation, expected):
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


def setting_label(strength: str, value: float, axes: tuple = ()) -> str:
    """"gamma=10", or with the spec's axes "gamma=10, lr=0.0005"."""
    from wtc.experiments.sweep import axis_text

    return ", ".join([f"{strength}={value:g}"] + [f"{k}={axis_text(v)}" for k, v in axes])


def best_settings(c: Collected, select_by: str = "factor_vae") -> dict:
    """(data, model) -> the Setting with the best mean of ``select_by`` (None if no seeds)."""
    if select_by not in c.metrics:
        raise ValueError(f"select_by must be one of the sweep's metrics {c.metrics}, got "
                         f"{select_by!r}")
    sign = -1.0 if lower_is_better(select_by) else 1.0
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
                row.update(strength=None, value=None, axes=(), seeds=0,
                           expected_seeds=len(c.spec.seeds))
                for m in c.metrics:
                    row[m] = (float("nan"), float("nan"))
            else:
                row.update(strength=s.strength, value=s.value, axes=s.axes,
                           seeds=len(s.seeds),
                           expected_seeds=s.expected_seeds)
                for m in c.metrics:
                    row[m] = (s.mean(m), s.std(m))
            block.append(row)
        for m in c.metrics:
            ranks = _ranks([r[m][0] for r in block], lower_is_better(m))
            for r, rank in zip(block, ranks):
                r[f"{m}_rank"] = rank
        rows += block
    return rows


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


def best_run(c: Collected, data: str, select_by: str):
    sign = -1.0 if lower_is_better(select_by) else 1.0
    candidates = [r for r in c.runs if r["data"] == data and np.isfinite(r["scores"][select_by])]
    return max(candidates, key=lambda r: sign * r["scores"][select_by], default=None)
