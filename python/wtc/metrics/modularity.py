"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib computes them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from wtc.metrics._utils import as_codes, as_factors, discretize, mutual_information
from wtc.metrics.registry import register_metric


class ModularityResult(NamedTuple):
    modularity: float
    explicitness_train: float
    explicitness_test: float
    per_code_modularity: np.ndarray  #: (d,)
    mutual_information: np.ndarray  #: (d, K)


def modularity_score(mi: np.ndarray) -> np.ndarray:
    """Per code: 1 - (sum_k m_k^2 - max_k m_k^2) / (max_k m_k^2 (K - 1)); 0 where all m_k = 0."""
    sq = mi ** 2
    theta = sq.max(axis=1)
    K = mi.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (sq.sum(axis=1) - theta) / (theta * (K - 1)) if K > 1 else np.zeros_like(theta)
    score = 1.0 - delta
    score[theta == 0] = 0.0
    return score


def modularity(codes, factors, num_bins: int = 20) -> float:
    """Modularity alone (what the WTC authors report): the mean per-code score."""
    z = as_codes(codes)
    y = as_factors(factors, len(z))
    return float(modularity_score(mutual_information(discretize(z, num_bins), y)).mean())


def explicitness(train_codes, train_factors, test_codes, test_factors, seed: int = 0):
    """Mean over factors of the macro one-vs-rest ROC-AUC of a default LogisticRegression on
    codes standardised with the train mean and std (ddof 0; constant dims left unscaled, where
    the reference divides by zero)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    mean, std = train_codes.mean(0), train_codes.std(0)
    std = np.where(std > 0, std, 1.0)
    xtr, xte = (train_codes - mean) / std, (test_codes - mean) / std
    train_scores, test_scores = [], []
    for k in range(train_factors.shape[1]):
        ytr, yte = train_factors[:, k], test_factors[:, k]
        classes = np.unique(ytr)
        if len(classes) < 2:
            continue  # a constant factor: nothing to predict
        clf = LogisticRegression(random_state=seed).fit(xtr, ytr)

        def auc(x, y):
            probs = clf.predict_proba(x)
            onehot = (y[:, None] == clf.classes_[None, :]).astype(int)
            keep = onehot.sum(0) > 0  # classes absent from this split have no ROC curve
            if onehot.shape[1] == 2:
                return roc_auc_score(onehot[:, 1], probs[:, 1]) if keep.all() else np.nan
            return roc_auc_score(onehot[:, keep], probs[:, keep], average="macro")

        train_scores.append(auc(xtr, ytr))
        test_scores.append(auc(xte, yte))
    return float(np.nanmean(train_scores)), float(np.nanmean(test_scores))


def modularity_explicitness(train_codes, train_factors, test_codes, test_factors,
                            num_bins: int = 20, seed: int = 0) -> ModularityResult:
    """Modularity from the discretised train codes' MI with the factors (mean over all codes,
    collapsed ones included), and explicitness on train and test."""
    ztr, zte = as_codes(train_codes, "train_codes"), as_codes(test_codes, "test_codes")
    ytr = as_factors(train_factors, len(ztr), "train_factors")
    yte = as_factors(test_factors, len(zte), "test_factors")
    if ztr.shape[1] != zte.shape[1]:
        raise ValueError("train_codes and test_codes must have the same number of dims")
    mi = mutual_information(discretize(ztr, num_bins), ytr)
    per_code = modularity_score(mi)
    exp_train, exp_test = explicitness(ztr, ytr, zte, yte, seed=seed)
    return ModularityResult(float(per_code.mean()), exp_train, exp_test, per_code, mi)


# -- in evaluate: the repeat's shared train (and test) codes ------------------------------------

@register_metric("modularity", display="Modularity", needs=("train",), default=True)
def _modularity_in_evaluate(r) -> float:
    return modularity_score(r.train_mutual_information()).mean()


@register_metric("explicitness", display="Explicitness", needs=("train", "test"), column=False)
def _explicitness_in_evaluate(r) -> float:
    return explicitness(r.train_codes, r.train_factors, r.test_codes, r.test_factors,
                        seed=r.seed)[1]
