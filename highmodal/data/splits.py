"""Deterministic splits: official ones where a dataset has them, else stratified with a fixed seed."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData


def carve(data: SplitData, frac: float, seed: int, stratify: bool, name: str = "split fraction"
          ) -> tuple[SplitData, SplitData]:
    """Split off ``frac`` of ``data`` (stratified by label for classification); returns (rest, carved).
    ``name`` names the option in the error for a fraction outside (0, 1)."""
    if not 0 < frac < 1:
        raise HighmodalError(f"{name}: {frac} must lie strictly between 0 and 1 (a share of the rows)")
    if len(data) < 2:
        raise HighmodalError(f"{name}: {len(data)} row(s) left, too few to carve a split from")
    idx = np.arange(len(data))
    if stratify:
        counts = np.bincount(data.y)
        n_carve = max(round(frac * len(data)), 1)
        if counts[counts > 0].min() < 2 or n_carve < (counts > 0).sum():
            return _carve_keeping_classes(data, n_carve, seed, name)
    rest, out = train_test_split(idx, test_size=frac, random_state=seed, stratify=data.y if stratify else None)
    return data.subset(np.sort(rest)), data.subset(np.sort(out))


def _carve_keeping_classes(data: SplitData, n_carve: int, seed: int, name: str) -> tuple[SplitData, SplitData]:
    """The fallback when classes are too small to stratify: a random carve that leaves one row of
    every class in the remainder, so no class vanishes from the split carved from (training)."""
    order = np.random.default_rng(seed).permutation(len(data))
    _, first = np.unique(data.y[order], return_index=True)
    kept = order[first]
    out = order[~np.isin(order, kept)][:n_carve]
    if not len(out):
        raise HighmodalError(f"{name}: {len(data)} rows of {len(kept)} classes: none left to carve a split from "
                             "without taking a class's only row")
    return data.subset(np.setdiff1d(order, out)), data.subset(np.sort(out))


def three_way(
    train: SplitData, test: SplitData | None, val_frac: float, test_frac: float, seed: int, stratify: bool
) -> dict[str, SplitData]:
    """train/val/test: carve test (when no official one) and then val from train, both seeded."""
    if test is None:
        train, test = carve(train, test_frac, seed, stratify, "test_frac")
    train, val = carve(train, val_frac, seed + 1, stratify, "val_frac")
    return {"train": train, "val": val, "test": test}
