"""Classical per-task baselines (scikit-learn) on the same splits as the neural models.

Features are what a practitioner would hand to gradient boosting: fixed-shape inputs of modest
size are flattened; sequences, sets and graphs (and inputs too large to flatten) are also
summarised per channel over their real positions (mean, std, min, max, mean absolute step,
length). The model is HistGradientBoosting (one regressor per output for multi-output
regression) fit on train + validation, with sklearn's defaults except a
leaf size that shrinks for tiny data sets (the default 20 cannot split 40 samples): a strong,
untuned reference.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.multioutput import MultiOutputRegressor

from highmodal.data.task import SplitData, TaskData
from highmodal.training.metrics import chance_metrics, compute_metrics, skill

MAX_FLAT = 1024  # flatten inputs up to this many values per sample, summarise larger ones
FLAT_KINDS = {"image", "xray", "infrared", "depth", "tabular", "hyperspectral"}


def features(td: TaskData, data: SplitData) -> np.ndarray:
    """One row per sample: flattened small fixed-shape inputs, pooled statistics otherwise."""
    cols = []
    for m in td.task.modalities:
        x = data.inputs[m]
        spec = td.specs[m]
        n = len(x)
        flattened = not spec.variable and int(np.prod(x.shape[1:])) <= MAX_FLAT
        if flattened:
            cols.append(x.reshape(n, -1))
            if spec.kind in FLAT_KINDS:
                continue
        flat = x.reshape(n, -1, spec.channels)
        mask = data.masks.get(m)
        valid = np.ones(flat.shape[:2], bool) if mask is None else mask.reshape(n, -1).astype(bool)
        if valid.shape[1] != flat.shape[1]:  # a mask over the first axis only
            valid = np.repeat(valid, flat.shape[1] // valid.shape[1], axis=1)
        w = valid[..., None]
        count = w.sum(1).clip(min=1)
        mean = (flat * w).sum(1) / count
        std = np.sqrt(((flat - mean[:, None]) ** 2 * w).sum(1) / count)
        big = np.where(w, flat, -np.inf).max(1)
        small = np.where(w, flat, np.inf).min(1)
        step_w = w[:, 1:] & w[:, :-1]
        step = (np.abs(np.diff(flat, axis=1)) * step_w).sum(1) / step_w.sum(1).clip(min=1)
        cols += [mean, std, big, small, step, valid.sum(1, keepdims=True).astype(np.float32)]
    return np.concatenate(cols, axis=1)


def fit_classical(td: TaskData, seed: int = 0) -> dict:
    """Fit on train + val (no tuning, so validation data is just more training data); test on test."""
    t0 = time.perf_counter()
    train = {s: td.splits[s] for s in ("train", "val")}
    x = np.concatenate([features(td, d) for d in train.values()])
    y = np.concatenate([d.y for d in train.values()])
    common = dict(min_samples_leaf=int(np.clip(len(x) // 50, 2, 20)), random_state=seed)
    if td.task.is_classification:
        model = HistGradientBoostingClassifier(**common).fit(x, y)
        xt = features(td, td.splits["test"])
        probs = model.predict_proba(xt)
        full = np.zeros((len(xt), td.task.out_dim))
        full[:, model.classes_] = probs
        pred = full.argmax(1)
    else:
        model = MultiOutputRegressor(HistGradientBoostingRegressor(**common)).fit(x, y)
        pred, full = model.predict(features(td, td.splits["test"])), None
    y_test = td.splits["test"].y
    values = compute_metrics(td.task, y_test, pred, full)
    chance = chance_metrics(td.task, td.splits["train"].y, y_test)
    return {"metrics": values, "chance": chance, "skill": skill(td.task, values, chance),
            "seconds": time.perf_counter() - t0, "model": type(model).__name__}
