"""wtc: models, trainers, metrics and experiments for disentangled representation learning with
Wasserstein total correlation, built on the ops of :mod:`wtc_ext`."""

__version__ = "0.1.0"
