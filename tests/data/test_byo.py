"""Bring-your-own CSV and npz loaders on real package-shipped data."""

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
