"""Per-task metrics (scikit-learn), the chance level of each, and one aggregate for model selection."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from highmodal.errors import HighmodalError
from highmodal.registry import Registry
from highmodal.tasks import Task

# name → (fn(y_true, pred, probs) -> value, higher_is_better)
METRICS: Registry[tuple[Callable[..., float], bool]] = Registry("metric")
METRICS.register("accuracy")((lambda y, p, probs: skm.accuracy_score(y, p), True))
METRICS.register("macro_f1")((lambda y, p, probs: skm.f1_score(y, p, average="macro", zero_division=0), True))
METRICS.register("auroc")((lambda y, p, probs: skm.roc_auc_score(y, probs[:, 1]), True))
METRICS.register("mae")((lambda y, p, probs: skm.mean_absolute_error(y, p), False))
METRICS.register("mse")((lambda y, p, probs: skm.mean_squared_error(y, p), False))


def metric_names(task: Task) -> list[str]:
    """Accuracy + macro-F1 for classification (AUROC too when binary); MAE + MSE for regression.
    The first is the task's primary metric (``task.metric`` moves its choice to the front)."""
    if task.is_classification:
        names = ["accuracy", "macro_f1"] + (["auroc"] if task.out_dim == 2 else [])
    else:
        names = ["mae", "mse"]
    if task.metric is not None:
        if task.metric not in names:
            raise HighmodalError(f"task {task.name!r}: metric {task.metric!r} is not one of {', '.join(names)}")
        names.remove(task.metric)
        names.insert(0, task.metric)
    return names


def compute_metrics(task: Task, y: np.ndarray, pred: np.ndarray, probs: np.ndarray | None) -> dict[str, float]:
    out = {}
    for name in metric_names(task):
        fn, _ = METRICS.get(name)
        if name == "auroc" and len(np.unique(y)) < 2:
            out[name] = float("nan")
            continue
        out[name] = float(fn(y, pred, probs))
    return out


def threshold_accuracy(y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray
                       ) -> tuple[float, float]:
    """Accuracy of a binary scorer at the threshold chosen on validation: the cut between two
    adjacent validation scores (or below all of them) with the highest validation accuracy, the
    lowest such cut on ties. Returns ``(threshold, test accuracy)``; how MedMNIST-style tables put
    accuracy beside AUROC without tuning on test."""
    scores = np.unique(p_val)
    cuts = np.concatenate([[scores[0] - 1e-12], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1e-12]])
    acc = [((p_val > c) == (y_val == 1)).mean() for c in cuts]
    cut = float(cuts[int(np.argmax(acc))])
    return cut, float(((p_test > cut) == (y_test == 1)).mean())


def naive_forecast(task: Task, inputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """The last observed value of ``task.forecast``'s channel, repeated over every target step."""
    modality, channel = task.forecast
    last = inputs[modality][:, -1, channel]
    return np.repeat(last[:, None], rows, axis=1) if rows else last


def chance_metrics(task: Task, y_train: np.ndarray, y: np.ndarray,
                   inputs: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Metrics of the predictor to beat: for a forecasting task (given its ``inputs``) the naive
    last-value forecast; else one that ignores the input: the training majority class (uniform
    scores for AUROC, so 0.5), or the training mean for regression."""
    if task.forecast is not None and inputs is not None:
        return compute_metrics(task, y, naive_forecast(task, inputs, y.shape[1] if y.ndim > 1 else 0), None)
    if task.is_classification:
        majority = np.bincount(y_train, minlength=task.out_dim).argmax()
        pred = np.full_like(y, majority)
        probs = np.full((len(y), task.out_dim), 1.0 / task.out_dim)
    else:
        pred = np.broadcast_to(y_train.mean(axis=0), y.shape)
        probs = None
    return compute_metrics(task, y, pred, probs)


def skill(task: Task, values: dict[str, float], chance: dict[str, float]) -> float:
    """One higher-is-better number per task for aggregating across tasks: the primary metric when
    higher is better (accuracy, AUROC, ...); for error metrics the fraction of the chance error
    removed (1 − error / error_chance)."""
    primary = metric_names(task)[0]
    _, higher_is_better = METRICS.get(primary)
    if higher_is_better:
        return values[primary]
    return 1.0 - values[primary] / max(chance[primary], 1e-12)
