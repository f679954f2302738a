"""Studies: sweep specs (presets ``paper``, ``authors``, ``celeba`` and ``mini``), ``run_sweep`` (what ``wtc sweep``
runs, through the executors of ``executors``: local, Slurm, Ray; ``sweep_status`` is
``wtc sweep --status``) and ``make_report`` (``wtc report``: table 1 and figures 2-7; the numbers in
``results``, the pictures in ``figures``, the Markdown/HTML/CSV writer in ``report``)."""

from wtc.experiments.report import collect, make_report, table1
from wtc.experiments.spec import PRESETS, EvalSpec, SpecError, SweepSpec, load_spec
from wtc.experiments.sweep import (
    Run,
    SweepError,
    SweepResult,
    expand,
    load_sweep,
    run_sweep,
    sweep_status,
)

__all__ = ["PRESETS", "EvalSpec", "Run", "SpecError", "SweepError", "SweepResult", "SweepSpec",
           "collect", "expand", "load_spec", "load_sweep", "make_report", "run_sweep",
           "sweep_status", "table1"]
