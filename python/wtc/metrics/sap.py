"""Separated attribute predictability (Kumar et al. 2018), as disentanglement_lib computes it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from wtc.metrics._utils import as_codes, as_factors
from wtc.metrics.registry import register_metric


class SAPResult(NamedTuple):
    score: float
    score_matrix: np.ndarray  #: (d, K)


def sap(train_codes, train_factors, test_codes=None, test_factors=None,
        continuous_factors: bool = False) -> SAPResult:
    """SAP = mean over factors of (best - second best) single-dim predictability.

    Discrete factors: S_ik = test accuracy of LinearSVC(C=0.01, class_weight="balanced") on code
    dim i alone. Continuous: squared correlation on the train set (ddof 1), 0 where the code's
    variance is <= 1e-12. No normalisation.
    """
    from sklearn.svm import LinearSVC

    ztr = as_codes(train_codes, "train_codes")
    ytr = as_factors(train_factors, len(ztr), "train_factors")
    d, K = ztr.shape[1], ytr.shape[1]
    if d < 2:
        raise ValueError("sap: needs at least 2 code dims")
    S = np.zeros((d, K))
    if continuous_factors:
        for i in range(d):
            for k in range(K):
                cov = np.cov(ztr[:, i], ytr[:, k], ddof=1)
                if cov[0, 0] > 1e-12 and cov[1, 1] > 0:
                    S[i, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
    else:
        zte = as_codes(test_codes, "test_codes")
        yte = as_factors(test_factors, len(zte), "test_factors")
        for i in range(d):
            for k in range(K):
                if len(np.unique(ytr[:, k])) < 2:
                    S[i, k] = np.mean(yte[:, k] == ytr[0, k])
                    continue
                clf = LinearSVC(C=0.01, class_weight="balanced")
                clf.fit(ztr[:, i:i + 1], ytr[:, k])
                S[i, k] = np.mean(clf.predict(zte[:, i:i + 1]) == yte[:, k])
    top = np.sort(S, axis=0)[::-1]
    return SAPResult(float(np.mean(top[0] - top[1])), S)


@register_metric("sap", display="SAP", needs=("train", "test"), column=False)
def _sap_in_evaluate(r) -> float:
    return sap(r.train_codes, r.train_factors, r.test_codes, r.test_factors).score
