"""Uncertainty of test-set numbers: 95% intervals and paired comparisons over the same test rows.

Accuracy gets the Wilson score interval (exact enough at any n, never outside [0, 1]); every other
metric a percentile bootstrap over test rows. Two models are compared by a paired bootstrap: the
same resampled rows score both, and the difference counts as significant when its 95% interval
excludes zero.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from highmodal.metrics import METRICS, metric_names
from highmodal.tasks import Task

Z95 = 1.959963984540054
BOOTSTRAP = 2000


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def _resamples(n: int, seed: int, draws: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def _per_row(name: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
    """Each row's share of a metric that is a mean over rows (so a resample's value is a mean of
    these), or None for metrics that are not (AUROC, macro-F1)."""
    if name == "accuracy":
        return (pred == y).astype(np.float64)
    if name in ("mse", "mae"):
        err = np.asarray(pred, np.float64) - y
        err = err ** 2 if name == "mse" else np.abs(err)
        return err.reshape(len(y), -1).mean(1)
    return None


def _auroc(y: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Binary AUROC of every resample at once, as the Mann-Whitney U over average ranks (ties count
    one half): what ``roc_auc_score`` gives on each resample, NaN where a resample has one class."""
    out = np.empty(len(idx))
    for start in range(0, len(idx), 256):  # bounded memory on large test sets
        i = idx[start:start + 256]
        pos = y[i] == 1
        n_pos = pos.sum(1)
        n_neg = i.shape[1] - n_pos
        ranks = rankdata(scores[i], axis=1)
        u = (ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + 256] = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
    return out


def _macro_f1(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, classes: int) -> np.ndarray:
    """Macro-F1 of every resample at once from its confusion counts, averaged over the classes that
    occur in the resample's labels or predictions (as scikit-learn's ``f1_score`` does)."""
    draws = np.arange(len(idx))[:, None]
    cells = ((draws * classes + y[idx]) * classes + pred[idx]).ravel()
    confusion = np.bincount(cells, minlength=len(idx) * classes * classes).reshape(len(idx), classes, classes)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support = confusion.sum(2) + confusion.sum(1)  # 2tp + fp + fn
    present = support > 0
    f1 = np.divide(2 * tp, support, out=np.zeros(tp.shape), where=present)
    return f1.sum(1) / present.sum(1)


def _batched(name: str, task: Task, y: np.ndarray, pred: np.ndarray, probs: np.ndarray | None,
             idx: np.ndarray) -> np.ndarray | None:
    """The metric on every resample, vectorised, for metrics that are not row means; None for others."""
    if name == "auroc" and probs is not None:
        return _auroc(y, probs[:, 1], idx)
    if name == "macro_f1":
        return _macro_f1(np.asarray(y, np.int64), np.asarray(pred, np.int64), idx, task.out_dim)
    return None


def _bootstrap(task: Task, y: np.ndarray, models: list[tuple[np.ndarray, np.ndarray | None]], seed: int,
               draws: int) -> np.ndarray:
    """``(draws, len(models))``: the primary metric of each model on the same resampled rows."""
    name = metric_names(task)[0]
    idx = _resamples(len(y), seed, draws)
    rows = [_per_row(name, y, pred) for pred, _ in models]
    if all(r is not None for r in rows):
        return np.stack([r[idx].mean(1) for r in rows], 1)
    batched = [_batched(name, task, y, pred, probs, idx) for pred, probs in models]
    if all(b is not None for b in batched):
        return np.stack(batched, 1)
    fn = METRICS.get(name)[0]

    def value(i: np.ndarray, pred: np.ndarray, probs: np.ndarray | None) -> float:
        try:
            return fn(y[i], pred[i], None if probs is None else probs[i])
        except ValueError:  # e.g. AUROC of a resample holding one class
            return math.nan

    return np.array([[value(i, pred, probs) for pred, probs in models] for i in idx])


def interval(task: Task, y: np.ndarray, pred: np.ndarray, probs: np.ndarray | None, seed: int = 0,
             draws: int = BOOTSTRAP) -> tuple[float, float]:
    """95% interval of the task's primary metric on these test rows."""
    if metric_names(task)[0] == "accuracy":
        return wilson(int((pred == y).sum()), len(y))
    low, high = np.nanpercentile(_bootstrap(task, y, [(pred, probs)], seed, draws)[:, 0], [2.5, 97.5])
    return (float(low), float(high))


def paired(task: Task, y: np.ndarray, a: tuple[np.ndarray, np.ndarray | None], b: tuple[np.ndarray, np.ndarray | None],
           seed: int = 0, draws: int = BOOTSTRAP) -> dict:
    """A − B in the primary metric, oriented so that positive means A is better, with its paired
    bootstrap 95% interval and verdict ``above`` / ``below`` / ``tie`` for A."""
    name = metric_names(task)[0]
    sign = 1.0 if METRICS.get(name)[1] else -1.0
    fn = METRICS.get(name)[0]
    observed = sign * (fn(y, *a) - fn(y, *b))
    both = _bootstrap(task, y, [a, b], seed, draws)
    low, high = (float(v) for v in np.nanpercentile(sign * (both[:, 0] - both[:, 1]), [2.5, 97.5]))
    verdict = "above" if low > 0 else "below" if high < 0 else "tie"
    return {"difference": float(observed), "ci": [low, high], "verdict": verdict}


def sample_std(values: list[float]) -> float:
    """The seed-to-seed standard deviation (ddof 1; 0 for a single value)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def seed_summary(skills: list[dict[str, float]], forecasting: set[str] | frozenset[str] = frozenset()) -> dict:
    """Per-seed ``{task: skill points}`` → the suite's mean skill per seed with its mean and sample
    std over seeds, and the same without ``forecasting`` tasks: a forecaster far worse than the naive
    forecast scores minus hundreds of points, which would drown every other task's skill."""

    def mean(row: dict[str, float], keep) -> float:
        values = [v for t, v in row.items() if keep(t) and not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    scores = [mean(row, lambda t: True) for row in skills]
    others = [mean(row, lambda t: t not in forecasting) for row in skills]
    return {"scores": scores, "mean": float(np.mean(scores)), "std": sample_std(scores),
            "scores_without_forecasting": others, "mean_without_forecasting": float(np.mean(others)),
            "std_without_forecasting": sample_std(others), "forecasting": sorted(forecasting),
            "per_seed_skill": skills}
