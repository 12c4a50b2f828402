"""Features for the tabular baselines (``experiments/baselines.py``): what a practitioner hands to gradient
boosting or a linear model. Fixed-shape inputs of modest size are flattened; sequences, sets and
graphs (and inputs too large to flatten) are also summarised per channel over their real positions
(mean, std, min, max, mean absolute step, length).
"""

from __future__ import annotations

import numpy as np

from highmodal.tasks import SplitData, TaskData

MAX_FLAT = 1024  # flatten inputs up to this many values per sample, summarise larger ones
FLAT_KINDS = {"image", "xray", "infrared", "depth", "tabular", "hyperspectral"}


def features(td: TaskData, data: SplitData, modalities: tuple[str, ...] | None = None) -> np.ndarray:
    """One row per sample: flattened small fixed-shape inputs, pooled statistics otherwise
    (``modalities``: a subset of the task's, e.g. one for a late-fusion member)."""
    cols = []
    for m in modalities or td.task.modalities:
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
