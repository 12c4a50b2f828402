"""From transfer difficulties to a distance and to parameter groups (HighMMT §2.1, Appendix A.3)."""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform


def distance(transfer: np.ndarray) -> np.ndarray:
    """d(i, j) = T(i→j)₊ + T(j→i)₊ with a zero diagonal (paper Eq. 5)."""
    pos = np.clip(transfer, 0.0, None)
    d = pos + pos.T
    np.fill_diagonal(d, 0.0)
    return d


def tree(d: np.ndarray, method: str = "average") -> np.ndarray:
    """Agglomerative clustering with units as nodes and heterogeneity as edges; average linkage
    (the paper does not name one; average suits a non-Euclidean distance)."""
    return linkage(squareform(d, checks=False), method=method)


def groups(d: np.ndarray, k: int, method: str = "average") -> list[int]:
    """Group index ``0..k'-1`` per unit (k' ≤ k when ties merge), numbered by first appearance."""
    m = d.shape[0]
    if m == 1 or k <= 1:
        return [0] * m
    if k >= m:
        return list(range(m))
    labels = fcluster(tree(d, method), k, criterion="maxclust")
    order: dict[int, int] = {}
    return [order.setdefault(int(c), len(order)) for c in labels]
