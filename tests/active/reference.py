"""NumPy restatements of the published AIFT/ACFT formulas (reference part B), written independently of the JAX
code so the tests compare two implementations: a literal per-pair loop of the binary CVPR'17 demo, a vectorised
multi-class version of both conventions, and the randomised-selection probabilities."""

from __future__ import annotations

import math

import numpy as np

EPS = 2.220446049250313e-16  # Matlab eps

# CVPR'17 Table 1 patterns (11 patches, probability of the positive class), as in the official demo.
PATTERNS = {
    "A": [0.4, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6],
    "B": [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.6, 0.7, 0.8, 1.0, 1.0],
    "C": [0.0, 0.0, 0.0, 0.1, 0.1, 0.9, 0.9, 1.0, 1.0, 1.0, 1.0],
    "D": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.9, 0.9, 0.9],
    "E": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1],
    "F": [0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.9, 1.0],
    "G": [0.0, 0.1, 0.7, 0.8, 0.8, 0.9, 0.9, 0.9, 0.9, 1.0, 1.0],
}
# The reference's B9 table: (Ent, Ent^1/4, Div, Div^1/4, E+D, (E+D)^1/4); D/E and F/G share a row.
TABLE_B9 = {
    "A": (7.52, 2.02, 4.38, 0.00, 11.90, 2.02),
    "B": (4.57, 0.50, 1237, 27.73, 1242, 28.23),
    "C": (1.30, 0.00, 2817, 0.00, 2818, 0.00),
    "D": (1.30, 0.00, 190, 0.00, 191, 0.00),
    "E": (1.30, 0.00, 190, 0.00, 191, 0.00),
    "F": (3.24, 0.33, 1077, 13.54, 1080, 13.86),
    "G": (3.24, 0.33, 1077, 13.54, 1080, 13.86),
}
# (lambda1, lambda2, alpha) of each table column
TABLE_COLUMNS = [(1, 0, 1.0), (1, 0, 0.25), (0, 1, 1.0), (0, 1, 0.25), (1, 1, 1.0), (1, 1, 0.25)]


def matlab_round(x: float) -> int:
    return math.floor(x + 0.5)


def binary_demo_score(p: list[float], lambda1: float, lambda2: float, alpha: float) -> float:
    """The binary CVPR'17 score, one matrix entry at a time: majority by the mean, R(j,j) entropy, R(j,l)
    symmetric diversity, sum of R."""
    p = np.asarray(p, np.float64)
    top = matlab_round(len(p) * alpha)
    # The demo sorts for the positive class when mean(p) > 0.5; pattern B's mean is exactly 0.5 and the published
    # table sorts it for the positive class, so an exact tie counts as positive here.
    p = np.sort(p)[::-1] if p.mean() >= 0.5 - 1e-9 else np.sort(p)
    p = p[:top]
    total = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i == j:
                total += -lambda1 * (p[i] * math.log(p[i] + EPS) + (1 - p[i]) * math.log(1 - p[i] + EPS))
            else:
                total += lambda2 * (
                    (p[i] - p[j]) * math.log((p[i] + EPS) / (p[j] + EPS))
                    + (p[j] - p[i]) * math.log((1 - p[i] + EPS) / (1 - p[j] + EPS))
                )
    return total


def scores(probs: np.ndarray, alpha: float, lambda1: float, lambda2: float, convention: str) -> np.ndarray:
    """Multi-class scores of (n, m, K) probabilities in float64."""
    probs = np.asarray(probs, np.float64)
    n, m, _ = probs.shape
    k = matlab_round(alpha * m)
    out = np.empty(n)
    for i in range(n):
        p = probs[i]
        means = p.mean(axis=0)
        y = int(np.flatnonzero(means >= means.max() - 1e-6)[-1])  # ties: the highest class index
        q = p[np.argsort(-p[:, y], kind="stable")[:k]]
        logq = np.log(q + EPS)
        ent = -(q * logq).sum(axis=1)
        div = ((q[:, None, :] - q[None, :, :]) * (logq[:, None, :] - logq[None, :, :])).sum(axis=-1)
        if convention == "matlab":
            out[i] = lambda1 * ent.sum() + lambda2 * div.sum()
        else:
            iu = np.triu_indices(k, 1)
            out[i] = lambda1 * ent.mean() + lambda2 * div[iu].sum()
    return out


def selection_probabilities(scores_: np.ndarray, b: int, omega: int) -> tuple[np.ndarray, np.ndarray]:
    """B4: the top omega*b, min-max normalised, divided by their sum."""
    order = np.argsort(-np.asarray(scores_, np.float64), kind="stable")[: omega * b]
    a = np.asarray(scores_, np.float64)[order]
    a = (a - a[-1]) / (a[0] - a[-1])
    return order, a / a.sum()
