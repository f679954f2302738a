"""The metric registry: every fact about a metric, declared once beside its code.

An entry says how :func:`wtc.metrics.evaluate` computes the metric in one repeat (``function``,
called with the repeat's :class:`Repeat`), which of the repeat's samples it needs, and how the
report shows it (display name, direction, digits, whether it is a table column). Every list of
metrics - ``METRICS``, the default set, the ``wtc eval --metrics`` choices, the report's
columns - is derived from here. A metric from outside the package registers the same way::

    from wtc.metrics import register_metric

    @register_metric("code_mean", display="Code mean", needs=("train",), digits=2)
    def code_mean(r):
        return r.train_codes.mean()

The built-in metrics register when :mod:`wtc.metrics` is imported (which importing this module
does first), in the order of its imports: that order is the report's column order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: What a metric may need from a repeat: the shared train codes and factors, the test ones
#: (drawn after the train sample from the same stream), the data set and representation
#: function (metrics that draw their own samples), the model itself.
NEEDS = ("train", "test", "dataset", "model")


@dataclass(frozen=True)
class Metric:
    name: str
    function: Callable  #: Repeat -> float, the metric's value in one repeat
    needs: frozenset  #: a subset of NEEDS
    display: str  #: the report's column title
    lower_is_better: bool = False
    digits: int = 3  #: decimals in the report's table
    default: bool = False  #: in the default set of ``evaluate``, ``wtc eval`` and sweep specs
    column: bool = True  #: a column of the report's table when a sweep evaluates it


#: name -> Metric in registration order; ``wtc.metrics.METRICS`` is this dict.
METRICS: dict = {}


def register_metric(name: str, *, display: str, needs=(), lower_is_better: bool = False,
                    digits: int = 3, default: bool = False, column: bool = True,
                    function: Callable | None = None):
    """Register a metric. Used as a decorator of ``function(repeat) -> float`` or called with
    ``function=``; returns the function. Re-registering a name replaces its entry in place (a
    reloaded module, a test)."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"register_metric({name!r}): unknown needs {sorted(unknown)}; "
                         f"known: {', '.join(NEEDS)}")

    def add(fn):
        METRICS[name] = Metric(name, fn, frozenset(needs), display, bool(lower_is_better),
                               int(digits), bool(default), bool(column))
        return fn

    return add if function is None else add(function)


def unregister_metric(name: str) -> None:
    """Remove a registered metric (tests that register their own clean up with it)."""
    METRICS.pop(name, None)


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def default_metrics() -> list:
    return [m for m, e in METRICS.items() if e.default]


def metrics_needing(need: str) -> set:
    return {m for m, e in METRICS.items() if need in e.needs}


def columns() -> dict:
    """name -> display name of the report's table columns, in column order."""
    return {m: e.display for m, e in METRICS.items() if e.column}


@dataclass
class Repeat:
    """What one repeat of :func:`wtc.metrics.evaluate` gives a metric's function: the samples
    its metrics declared they need (None otherwise), the settings and the seed."""

    dataset: object
    represent: Callable  #: observations -> codes
    sizes: dict  #: the sample sizes (wtc.metrics.evaluate.SIZE_NAMES)
    protocol: dict  #: the protocol's settings (wtc.metrics.evaluate.PROTOCOLS)
    seed: int
    model: object = None
    train_codes: np.ndarray | None = None
    train_factors: np.ndarray | None = None
    test_codes: np.ndarray | None = None
    test_factors: np.ndarray | None = None
    _mi: np.ndarray | None = field(default=None, repr=False)

    @property
    def sampling(self) -> str:
        return self.protocol["sampling"]

    def train_mutual_information(self) -> np.ndarray:
        """The (d, K) MI of the train codes (20 histogram bins) with the factors, computed once
        per repeat: MIG and Modularity share it."""
        from wtc.metrics._utils import discretize, mutual_information

        if self._mi is None:
            self._mi = mutual_information(discretize(self.train_codes), self.train_factors)
        return self._mi
