"""Sampling O(M) transfer entries and completing the rest by low-rank matrix completion.

HighMMT (§2.1, Appendix A.2) observes that heterogeneity matrices are close to rank 3 and proposes
measuring a random O(M) subset and imputing the others. The paper does not name its completion
algorithm; we use alternating ridge least squares (the textbook choice for small dense matrices)
on the known entries, with the mean of the known off-diagonal entries fitted first so that an
uninformative fit falls back to the mean predictor.
"""

from __future__ import annotations

import numpy as np


def sample_entries(m: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """``budget`` distinct directed off-diagonal entries ``(k, 2)``; every row and every column is
    hit at least once (a random cyclic permutation first), which completion needs."""
    budget = min(max(budget, m), m * (m - 1))
    order = rng.permutation(m)
    chosen = {(int(order[i]), int(order[(i + 1) % m])) for i in range(m)}
    rest = [(i, j) for i in range(m) for j in range(m) if i != j and (i, j) not in chosen]
    for k in rng.permutation(len(rest))[: budget - len(chosen)]:
        chosen.add(rest[k])
    return np.array(sorted(chosen), dtype=int).reshape(-1, 2)


REG_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def choose_reg(values: np.ndarray, known: np.ndarray, rank: int, folds: int = 5, seed: int = 0) -> float:
    """The ridge strength with the lowest ``folds``-fold cross-validated error on the known
    off-diagonal entries: few entries per row call for strong shrinkage towards the mean."""
    idx = np.argwhere(known & ~np.eye(*known.shape, dtype=bool))
    if len(idx) < 2 * folds:
        return REG_GRID[-1]
    parts = np.array_split(np.random.default_rng(seed).permutation(len(idx)), folds)
    errors = []
    for reg in REG_GRID:
        sse = 0.0
        for part in parts:
            out = idx[part]
            fit = known.copy()
            fit[out[:, 0], out[:, 1]] = False
            filled = complete(values, fit, rank, reg)
            sse += float(((filled[out[:, 0], out[:, 1]] - values[out[:, 0], out[:, 1]]) ** 2).sum())
        errors.append(sse)
    return REG_GRID[int(np.argmin(errors))]


def complete(values: np.ndarray, known: np.ndarray, rank: int = 3, reg: float | None = None, iters: int = 60,
             seed: int = 0) -> np.ndarray:
    """Fill the unknown entries of ``values`` (``known``: boolean mask; the diagonal is left as is).

    The model is ``T_ij ≈ μ + a_i + b_j + U_i·V_j`` of rank ≤ ``rank``: a row term (how well source i
    transfers anywhere) and a column term (how hard target j is to reach) take two of the rank's
    components, since they are the dominant structure of measured transfer matrices, and
    ``rank - 2`` free factors model the rest. Ridge ``reg`` (None: chosen by cross-validation on the
    known entries) shrinks every term towards the mean, which few observations per row need.
    """
    if reg is None:
        reg = choose_reg(values, known, rank, seed=seed)
    m, n = values.shape
    off = known & ~np.eye(m, n, dtype=bool)
    mu = float(values[off].mean()) if off.any() else 0.0
    k = max(rank - 2, 0)
    rng = np.random.default_rng(seed)
    u, v = rng.normal(scale=0.1, size=(m, k)), rng.normal(scale=0.1, size=(n, k))
    a, b = np.zeros(m), np.zeros(n)
    eye = reg * np.eye(k)
    weight = off.astype(float)
    for _ in range(iters):
        r = np.where(off, values - mu - b[None] - u @ v.T, 0.0)
        a = r.sum(1) / (off.sum(1) + reg)
        r = np.where(off, values - mu - a[:, None] - u @ v.T, 0.0)
        b = r.sum(0) / (off.sum(0) + reg)
        resid = np.where(off, values - mu - a[:, None] - b[None], 0.0)
        # Ridge solve for every row of one factor at once (rows are independent given the other
        # factor): row i's system is sum over its known j of y_j y_j^T + reg I, right side y^T t_i.
        for x, y, t, w in ((u, v, resid, weight), (v, u, resid.T, weight.T)):
            gram = np.einsum("ij,jk,jl->ikl", w, y, y) + eye
            x[:] = np.linalg.solve(gram, (t @ y)[..., None])[..., 0]
    return np.where(known, values, mu + a[:, None] + b[None] + u @ v.T)


def holdout_error(values: np.ndarray, measured: np.ndarray, frac: float, rank: int, rng: np.random.Generator,
                  repeats: int = 10) -> dict:
    """Hold ``frac`` of the measured off-diagonal entries out of the fit and score their completion
    against the mean predictor (the mean of the entries that were fitted); RMSEs are averaged over
    ``repeats`` random hold-outs, since one split of a few dozen entries is noisy."""
    m = values.shape[0]
    idx = np.argwhere(measured & ~np.eye(m, dtype=bool))
    n_out = max(1, round(frac * len(idx)))
    errors, baseline = [], []
    for _ in range(repeats):
        out = idx[rng.permutation(len(idx))[:n_out]]
        known = measured | np.eye(m, dtype=bool)
        known[out[:, 0], out[:, 1]] = False
        filled = complete(values, known, rank)
        truth = values[out[:, 0], out[:, 1]]
        mean = values[known & ~np.eye(m, dtype=bool)].mean()
        errors.append(np.sqrt(np.mean((filled[out[:, 0], out[:, 1]] - truth) ** 2)))
        baseline.append(np.sqrt(np.mean((mean - truth) ** 2)))
    return {"held_out": int(n_out), "repeats": repeats, "rmse_completion": float(np.mean(errors)),
            "rmse_mean_predictor": float(np.mean(baseline))}
