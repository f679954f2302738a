"""Disentanglement metrics: pure functions of codes and factors returning named results."""

from wtc.metrics.wdg import WDGResult, wdg

__all__ = ["WDGResult", "wdg"]
