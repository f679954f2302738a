"""Disentanglement metrics: pure functions of codes and factors (or of a ground-truth data set
and a representation function) returning named results. One metric a module, each registering
its entry for :func:`evaluate` and the report beside its code (:mod:`wtc.metrics.registry`)."""

# isort: off
# The built-in metrics register on import, in this order: the order of METRICS and of the
# report's columns (the paper's table 1: FactorVAE, WDG, Modularity, MIG, Reconstruction).
from wtc.metrics.factor_vae import (
           BetaVAEResult,
           FactorVAEResult,
           beta_vae_score,
           factor_vae_score,
)
from wtc.metrics.wdg import WDGResult, wdg
from wtc.metrics.modularity import ModularityResult, modularity, modularity_explicitness
from wtc.metrics.mig import MIGResult, mig
from wtc.metrics.reconstruction import reconstruction_error
from wtc.metrics.dci import DCIResult, dci
from wtc.metrics.sap import SAPResult, sap
# isort: on
from wtc.metrics.evaluate import PROTOCOLS, evaluate
from wtc.metrics.registry import (
           METRICS,
           Metric,
           Repeat,
           default_metrics,
           register_metric,
           unregister_metric,
)
from wtc.metrics.sampling import Sampler, make_sampler

__all__ = [
           "METRICS",
           "PROTOCOLS",
           "BetaVAEResult",
           "DCIResult",
           "FactorVAEResult",
           "MIGResult",
           "Metric",
           "ModularityResult",
           "Repeat",
           "SAPResult",
           "Sampler",
           "WDGResult",
           "beta_vae_score",
           "dci",
           "default_metrics",
           "evaluate",
           "factor_vae_score",
           "make_sampler",
           "mig",
           "modularity",
           "modularity_explicitness",
           "reconstruction_error",
           "register_metric",
           "sap",
           "unregister_metric",
           "wdg",
]
