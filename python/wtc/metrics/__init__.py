"""Disentanglement metrics: pure functions of codes and factors (or of a ground-truth data set
and a representation function) returning named results. One metric a module."""

from wtc.metrics.dci import DCIResult, dci
from wtc.metrics.evaluate import METRICS, PROTOCOLS, evaluate
from wtc.metrics.factor_vae import (
           BetaVAEResult,
           FactorVAEResult,
           beta_vae_score,
           factor_vae_score,
)
from wtc.metrics.mig import MIGResult, mig
from wtc.metrics.modularity import ModularityResult, modularity, modularity_explicitness
from wtc.metrics.reconstruction import reconstruction_error
from wtc.metrics.sap import SAPResult, sap
from wtc.metrics.wdg import WDGResult, wdg

__all__ = [
           "METRICS",
           "PROTOCOLS",
           "BetaVAEResult",
           "DCIResult",
           "FactorVAEResult",
           "MIGResult",
           "ModularityResult",
           "SAPResult",
           "WDGResult",
           "beta_vae_score",
           "dci",
           "evaluate",
           "factor_vae_score",
           "mig",
           "modularity",
           "modularity_explicitness",
           "reconstruction_error",
           "sap",
           "wdg",
]
