"""Deterministic splits: official ones where a dataset has them, else stratified with a fixed seed."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from highmodal.data.task import SplitData


def carve(data: SplitData, frac: float, seed: int, stratify: bool) -> tuple[SplitData, SplitData]:
    """Split off ``frac`` of ``data`` (stratified by label for classification); returns (rest, carved)."""
    idx = np.arange(len(data))
    labels = data.y if stratify else None
    if stratify:
        counts = np.bincount(data.y)
        n_carve = max(round(frac * len(data)), 1)
        if counts[counts > 0].min() < 2 or n_carve < (counts > 0).sum():
            labels = None
    rest, out = train_test_split(idx, test_size=frac, random_state=seed, stratify=labels)
    return data.subset(np.sort(rest)), data.subset(np.sort(out))


def three_way(
    train: SplitData, test: SplitData | None, val_frac: float, test_frac: float, seed: int, stratify: bool
) -> dict[str, SplitData]:
    """train/val/test: carve test (when no official one) and then val from train, both seeded."""
    if test is None:
        train, test = carve(train, test_frac, seed, stratify)
    train, val = carve(train, val_frac, seed + 1, stratify)
    return {"train": train, "val": val, "test": test}
