"""DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018), as
disentanglement_lib computes them (gradient-boosted trees' importances)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.stats

from wtc.metrics._utils import as_codes, as_factors
from wtc.metrics.registry import register_metric


class DCIResult(NamedTuple):
    disentanglement: float
    completeness: float
    informativeness_train: float
    informativeness_test: float
    importance_matrix: np.ndarray  #: (d, K)


def disentanglement_from_importance(R: np.ndarray) -> float:
    """sum_i rho_i (1 - H_K(R_i)), rho_i = row i's share of R, entropies in log base K."""
    if R.sum() == 0:
        return 0.0
    per_code = 1.0 - scipy.stats.entropy(R.T + 1e-11, base=R.shape[1])
    return float(np.sum(per_code * R.sum(axis=1) / R.sum()))


def completeness_from_importance(R: np.ndarray) -> float:
    """sum_k rho_k (1 - H_d(R_.k)), entropies in log base d (number of codes)."""
    if R.sum() == 0:
        return 0.0
    per_factor = 1.0 - scipy.stats.entropy(R + 1e-11, base=R.shape[0])
    return float(np.sum(per_factor * R.sum(axis=0) / R.sum()))


def dci(train_codes, train_factors, test_codes, test_factors, seed: int = 0) -> DCIResult:
    """One default GradientBoostingClassifier per factor on the raw codes (seeded: the reference
    leaves it unseeded and jitters by about 1e-3); R = |feature importances|."""
    from sklearn.ensemble import GradientBoostingClassifier

    ztr, zte = as_codes(train_codes, "train_codes"), as_codes(test_codes, "test_codes")
    ytr = as_factors(train_factors, len(ztr), "train_factors")
    yte = as_factors(test_factors, len(zte), "test_factors")
    d, K = ztr.shape[1], ytr.shape[1]
    R = np.zeros((d, K))
    acc_train, acc_test = [], []
    for k in range(K):
        if len(np.unique(ytr[:, k])) < 2:
            acc_train.append(1.0)
            acc_test.append(float(np.mean(yte[:, k] == ytr[0, k])))
            continue
        clf = GradientBoostingClassifier(random_state=seed).fit(ztr, ytr[:, k])
        R[:, k] = np.abs(clf.feature_importances_)
        acc_train.append(float(np.mean(clf.predict(ztr) == ytr[:, k])))
        acc_test.append(float(np.mean(clf.predict(zte) == yte[:, k])))
    return DCIResult(disentanglement_from_importance(R), completeness_from_importance(R),
                     float(np.mean(acc_train)), float(np.mean(acc_test)), R)


@register_metric("dci", display="DCI disentanglement", needs=("train", "test"), column=False)
def _dci_in_evaluate(r) -> float:
    return dci(r.train_codes, r.train_factors, r.test_codes, r.test_factors,
               seed=r.seed).disentanglement
