"""Deterministic, stratified train/val/test splitting."""

from __future__ import annotations

import numpy as np
import pytest

from highmodal.data.splits import carve, three_way
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData


def _data(counts=(60, 40), offset=0) -> SplitData:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    rng = np.random.default_rng(0)
    y = y[rng.permutation(len(y))]
    ids = np.arange(offset, offset + len(y))
    return SplitData({"x": ids[:, None].astype(np.float32)}, y, {"x": np.ones((len(y), 1), dtype=bool)})


def _ids(split: SplitData) -> np.ndarray:
    return split.inputs["x"][:, 0].astype(int)


def test_three_way_carves_disjoint_covering_stratified():
    data = _data()
    out = three_way(data, None, val_frac=0.2, test_frac=0.2, seed=0, stratify=True)
    assert set(out) == {"train", "val", "test"}
    ids = {k: _ids(v) for k, v in out.items()}
    all_ids = np.concatenate(list(ids.values()))
    assert len(all_ids) == len(set(all_ids)) == 100  # disjoint
    assert set(all_ids) == set(range(100))  # covering
    assert len(ids["test"]) == 20 and len(ids["val"]) == 16 and len(ids["train"]) == 64
    # stratified: 60/40 class balance kept
    assert np.bincount(out["test"].y).tolist() == [12, 8]
    assert abs(np.bincount(out["val"].y)[0] - 0.6 * 16) <= 1
    assert abs(np.bincount(out["train"].y)[0] - 0.6 * 64) <= 1
    # inputs, labels and masks stay aligned
    for split in out.values():
        assert np.array_equal(split.y, data.y[_ids(split)])
        assert split.masks["x"].shape == (len(split), 1)
        assert np.all(np.diff(_ids(split)) > 0)  # original order kept


def test_three_way_deterministic_for_seed():
    a = three_way(_data(), None, 0.2, 0.2, seed=7, stratify=True)
    b = three_way(_data(), None, 0.2, 0.2, seed=7, stratify=True)
    c = three_way(_data(), None, 0.2, 0.2, seed=8, stratify=True)
    for k in ("train", "val", "test"):
        assert np.array_equal(_ids(a[k]), _ids(b[k]))
    assert not np.array_equal(_ids(a["test"]), _ids(c["test"]))


def test_three_way_keeps_official_test():
    train, test = _data(), _data(counts=(5, 7), offset=1000)
    test_ids = _ids(test).copy()
    out = three_way(train, test, val_frac=0.25, test_frac=0.2, seed=0, stratify=True)
    assert out["test"] is test
    assert np.array_equal(_ids(out["test"]), test_ids)
    tr, va = _ids(out["train"]), _ids(out["val"])
    assert len(va) == 25 and len(tr) == 75
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(100))
    assert np.bincount(out["val"].y).tolist() == [15, 10]


def test_carve_without_stratify_for_regression_targets():
    n = 30
    data = SplitData({"x": np.arange(n, dtype=np.float32)[:, None]}, np.linspace(0, 1, n)[:, None])
    rest, out = carve(data, 0.2, seed=0, stratify=False)
    assert len(out) == 6 and len(rest) == 24
    assert set(_ids(rest)).isdisjoint(_ids(out))
    assert np.allclose(out.y[:, 0], np.linspace(0, 1, n)[_ids(out)])


@pytest.mark.parametrize("counts", [(20, 1), (3, 3, 3, 3)])
def test_carve_falls_back_when_stratification_impossible(counts):
    # a singleton class, or fewer carved samples than classes
    data = _data(counts)
    for seed in range(20):
        rest, out = carve(data, 0.2, seed=seed, stratify=True)
        assert len(rest) + len(out) == len(data) and len(out) == round(0.2 * len(data))
        assert set(_ids(rest)).isdisjoint(_ids(out))
        assert set(rest.y.tolist()) == set(data.y.tolist())  # no class leaves the remainder


def test_carve_refuses_when_every_row_is_a_class_of_its_own():
    with pytest.raises(HighmodalError, match="val_frac: 3 rows of 3 classes"):
        carve(_data((1, 1, 1)), 0.3, seed=0, stratify=True, name="val_frac")
