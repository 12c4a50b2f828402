"""Bring-your-own CSV and npz loaders on real package-shipped data."""

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError


@pytest.fixture
def wine_csv(tmp_path):
    d = load_wine(as_frame=True)
    df = d.frame.copy()
    df["cultivar"] = np.array(["barolo", "grignolino", "barbera"])[d.target]
    df = df.drop(columns="target")
    df["split"] = np.where(np.arange(len(df)) % 5 == 0, "test", "train")
    df.to_csv(tmp_path / "wine.csv", index=False)
    return tmp_path, df


def csv_entry(**kw):
    entry = {"name": "wine", "source": "csv", "path": "wine.csv", "target": {"kind": "classification",
                                                                             "key": "cultivar"},
             "split_column": "split"}
    entry.update(kw)
    return entry


def test_csv_classification_uses_file_split(wine_csv):
    root, df = wine_csv
    td = build_suite([csv_entry()], LoadContext(config_dir=root))["wine"]
    assert td.task.class_names == ("barbera", "barolo", "grignolino")
    assert len(td.splits["test"]) == (df["split"] == "test").sum()
    assert len(td.splits["train"]) + len(td.splits["val"]) == (df["split"] == "train").sum()
    assert td.specs["table"].shape == (13, 1) and td.specs["table"].kind == "tabular"


def test_csv_missing_values_and_columns_are_errors(wine_csv):
    root, df = wine_csv
    df.loc[3, "alcohol"] = np.nan
    df.to_csv(root / "holes.csv", index=False)
    with pytest.raises(HighmodalError, match=r"holes.csv: column 'alcohol' has 1 missing values"):
        build_suite([csv_entry(path="holes.csv")], LoadContext(config_dir=root))
    with pytest.raises(HighmodalError, match=r"column 'colour' not found"):
        build_suite([csv_entry(features=["colour"])], LoadContext(config_dir=root))


def test_csv_categorical_columns_are_coded(tmp_path):
    df = pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0] * 10, "c": ["a", "b"] * 20, "y": [0.5, 1.5] * 20})
    df.to_csv(tmp_path / "t.csv", index=False)
    td = build_suite([{"name": "r", "source": "csv", "path": "t.csv",
                       "target": {"kind": "regression", "key": "y"}}], LoadContext(config_dir=tmp_path))["r"]
    x = np.concatenate([td.splits[s].inputs["table"] for s in td.splits])
    assert set(np.unique(x[:, 1, 0])) == {0.0, 1.0}
    assert td.task.target == "regression" and td.task.out_dim == 1


def test_npz_variable_length_with_mask(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=50)
    x = np.zeros((50, 12, 4), np.float32)
    mask = np.arange(12)[None] < lengths[:, None]
    x[mask] = rng.normal(size=(mask.sum(), 4))
    np.savez(tmp_path / "v.npz", x=x, m=mask, y=(lengths > 7).astype(int))
    td = build_suite([{"name": "v", "source": "npz", "path": "v.npz",
                       "modalities": {"seq": {"kind": "audio", "key": "x", "mask_key": "m"}},
                       "target": {"kind": "classification", "key": "y"}}], LoadContext(config_dir=tmp_path))["v"]
    spec = td.specs["seq"]
    assert spec.shape == (None, 4) and spec.max_len == 12
    total = sum(len(s) for s in td.splits.values())
    assert total == 50 and all("seq" in s.masks for s in td.splits.values())


def test_npz_bad_split_values(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.zeros((10, 5), np.float32), y=np.arange(10) % 2,
             split=np.array(["train"] * 8 + ["tset"] * 2))
    with pytest.raises(HighmodalError, match=r"s.npz: split values must be train/val/test, found \['tset'\]"):
        build_suite([{"name": "s", "source": "npz", "path": "s.npz",
                      "modalities": {"a": {"kind": "tabular", "key": "x"}},
                      "target": {"kind": "classification", "key": "y"}}], LoadContext(config_dir=tmp_path))


def _walk_npz(path) -> None:
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=1500)).astype(np.float32)
    starts = np.arange(0, 1500 - 40, 4)
    x = np.stack([np.stack([walk[s:s + 32], rng.normal(size=32)], -1) for s in starts]).astype(np.float32)
    np.savez(path, series=x, y=np.stack([walk[s + 32:s + 40] for s in starts]))


def test_npz_forecast_target_uses_the_naive_forecast_as_chance(tmp_path):
    from highmodal.data import LoadContext, build_suite
    from highmodal.errors import HighmodalError
    from highmodal.metrics import chance_metrics

    _walk_npz(tmp_path / "walk.npz")
    entry = {"name": "walk", "source": "npz", "path": str(tmp_path / "walk.npz"),
             "modalities": {"series": {"kind": "time_series", "key": "series"}},
             "target": {"kind": "regression", "key": "y", "forecast": {"modality": "series", "channel": 0}}}
    td = build_suite([entry], LoadContext(seed=0))["walk"]
    assert td.task.forecast == ("series", 0) and td.task.metric == "mse" and td.task.forecast_residual
    test = td.splits["test"]
    naive = np.mean((test.y - test.inputs["series"][:, -1, :1]) ** 2)
    assert chance_metrics(td.task, td.splits["train"].y, test.y, test.inputs)["mse"] == pytest.approx(naive, rel=1e-5)
    for forecast, message in (({"modality": "series", "channel": 5}, "channel 5 is not in 0..1"),
                              ({"modality": "other"}, "'other' must be a (N, steps, channels) input"),
                              ({"channel": 0}, "modality")):
        bad = {**entry, "target": {**entry["target"], "forecast": forecast}}
        with pytest.raises(HighmodalError, match=re.escape(message)):
            build_suite([bad], LoadContext(seed=0))
