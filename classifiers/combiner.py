"""Learn how structural signals and a fastText model's scores combine into one label distribution.

A multinomial logistic regression whose weights obey per-label sign priors
(``domain_signals.SIGNAL_PRIORS``): a signal may only raise the labels it is evidence for and
lower the ones it is evidence against. The fastText log-probability of a label may only raise
that label, by a learned trust weight. The fit is deterministic (L-BFGS-B from zeros), and the
whole model is a small JSON document, so its bytes, and so its content hash, follow from the
training data alone.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.optimize import minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

# fastText probabilities are floored before the log: a model sure of another label must not
# send a logit to minus infinity.
PROBABILITY_FLOOR = 1e-3


class SignalCombiner(BaseModel):
    """Weights of the combination; ``predict_proba`` turns signals and fastText scores into probabilities."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str]
    feature_names: list[str]
    scale: list[float]
    weights: list[list[float]]
    intercepts: list[float]
    fasttext_trust: list[float]
    l2: float

    def logits(self, features: np.ndarray, fasttext_scores: np.ndarray) -> np.ndarray:
        """Unnormalised log-probabilities (float64), shape (docs, labels)."""
        return (
            _transform(features.astype(np.float64)) / np.asarray(self.scale)
            @ np.asarray(self.weights)
            + np.asarray(self.intercepts)
            + np.log(np.maximum(fasttext_scores.astype(np.float64), PROBABILITY_FLOOR)) * np.asarray(self.fasttext_trust)
        )

    def predict_proba(self, features: np.ndarray, fasttext_scores: np.ndarray) -> np.ndarray:
        """Probabilities, shape (docs, labels); ``fasttext_scores`` columns in ``labels`` order."""
        logits = self.logits(features, fasttext_scores)
        return np.exp(logits - logsumexp(logits, axis=1, keepdims=True)).astype(np.float32)


def _transform(features: np.ndarray) -> np.ndarray:
    """Compress ratios (most are small, a few documents are extreme): log1p of percent."""
    return np.log1p(np.maximum(features, 0.0) * 100.0)


def fit_combiner(
    features: np.ndarray,
    fasttext_scores: np.ndarray,
    truth: list[str],
    sample_weight: np.ndarray,
    labels: list[str],
    feature_names: list[str],
    priors: dict[str, tuple[frozenset[str], frozenset[str]]],
    l2: float = 1.0,
) -> SignalCombiner:
    """Fit the sign-constrained multinomial logistic regression (weighted log-loss + L2 on weights)."""
    transformed = _transform(features.astype(np.float64))
    scale = transformed.std(axis=0) + 1e-6
    x = transformed / scale
    log_ft = np.log(np.maximum(fasttext_scores.astype(np.float64), PROBABILITY_FLOOR))
    n, d, k = len(x), x.shape[1], len(labels)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), [labels.index(label) for label in truth]] = 1.0
    weight = sample_weight / sample_weight.sum()
    penalty = 1.0 / (l2 * n)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b, trust = theta[: d * k].reshape(d, k), theta[d * k : d * k + k], theta[d * k + k :]
        logits = x @ w + b + log_ft * trust
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        loss = -(weight * (onehot * log_p).sum(axis=1)).sum() + 0.5 * penalty * ((w**2).sum() + (trust**2).sum())
        residual = (np.exp(log_p) - onehot) * weight[:, None]
        grad = [(x.T @ residual + penalty * w).ravel(), residual.sum(axis=0), (residual * log_ft).sum(axis=0) + penalty * trust]
        return loss, np.concatenate(grad)

    bounds = _weight_bounds(feature_names, labels, priors) + [(None, None)] * k + [(0.0, None)] * k
    # Thousands of small matrix products: BLAS threads only add overhead (16x the CPU time measured).
    with threadpool_limits(limits=1):
        result = minimize(
            loss_and_grad, np.zeros(d * k + 2 * k), jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": 5000},
        )
    theta = result.x
    return SignalCombiner(
        labels=list(labels),
        feature_names=list(feature_names),
        scale=[float(v) for v in scale],
        weights=[[float(v) for v in row] for row in theta[: d * k].reshape(d, k)],
        intercepts=[float(v) for v in theta[d * k : d * k + k]],
        fasttext_trust=[float(v) for v in theta[d * k + k :]],
        l2=l2,
    )


def _weight_bounds(
    feature_names: list[str], labels: list[str], priors: dict[str, tuple[frozenset[str], frozenset[str]]]
) -> list[tuple[float | None, float | None]]:
    """(low, high) per weight, row-major (feature, label): >= 0 for evidence for, <= 0 against, else 0."""
    bounds: list[tuple[float | None, float | None]] = []
    for name in feature_names:
        for label in labels:
            if label not in priors:
                bounds.append((None, None))
                continue
            raises, lowers = priors[label]
            bounds.append((0.0, None) if name in raises else (None, 0.0) if name in lowers else (0.0, 0.0))
    return bounds
