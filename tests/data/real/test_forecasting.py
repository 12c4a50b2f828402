"""ETT on its real files: Informer's borders and window counts, train-only z-scoring, targets on the
right side of each border, options, corrupted/missing/unreadable files, a model forward pass."""

import numpy as np
import pandas as pd
import pytest
from conftest import assert_damage_is_named, assert_tiny_forward

import highmodal.data.real.forecasting as forecasting
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError

ENTRY = {"name": "ett", "source": "ett"}


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([ENTRY], LoadContext(data_root=data_root))


@pytest.fixture(scope="module")
def values(data_root) -> np.ndarray:
    return pd.read_csv(data_root / "ett_small" / "ETTh1.csv").iloc[:, 1:].to_numpy(np.float64)


@pytest.fixture(scope="module")
def z(values) -> np.ndarray:
    """ETTh1 z-scored independently of the loader, with the first 8,640 rows' mean and (population) std."""
    train = values[:8640]
    return (values - train.mean(axis=0)) / train.std(axis=0)


def test_window_counts_shapes_and_metric(suite):
    td = suite["ett"]
    # Informer: len = border2 - border1 - seq_len - pred_len + 1, with border1 = border - seq_len after train.
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 8640 - 96 - 24 + 1, "val": 2857, "test": 2857}
    assert td.specs["ett_history"].shape == (96, 7) and td.specs["ett_history"].kind == "time_series"
    assert td.specs["ett_history"].mean is None
    assert td.task.target == "regression" and td.task.out_dim == 24 and td.task.metric == "mse"
    assert all(v.y.dtype == np.float32 and v.y.shape[1] == 24 for v in td.splits.values())


def test_borders_and_train_statistics(suite, z, values):
    assert forecasting.BORDERS == (8640, 11520, 14400)  # 12/4/4 months of 30 days
    s = suite["ett"].splits
    # first/last window of each split, against rows computed here from the CSV
    assert np.allclose(s["train"].inputs["ett_history"][0], z[0:96], atol=1e-5)
    assert np.allclose(s["train"].y[0], z[96:120, 6], atol=1e-5)
    assert np.allclose(s["train"].y[-1], z[8616:8640, 6], atol=1e-5)  # train targets end at the border
    assert np.allclose(s["val"].inputs["ett_history"][0], z[8544:8640], atol=1e-5)  # look-back overlaps train
    assert np.allclose(s["val"].y[0], z[8640:8664, 6], atol=1e-5)
    assert np.allclose(s["val"].y[-1], z[11496:11520, 6], atol=1e-5)
    assert np.allclose(s["test"].inputs["ett_history"][0], z[11424:11520], atol=1e-5)
    assert np.allclose(s["test"].y[0], z[11520:11544, 6], atol=1e-5)  # test targets start after val's
    assert np.allclose(s["test"].y[-1], z[14376:14400, 6], atol=1e-5)
    # The rows above were z-scored with training rows only; statistics of all 14,400 rows would differ.
    used = values[:14400]
    leaky = (values - used.mean(axis=0)) / used.std(axis=0)
    assert not np.allclose(s["test"].y[0], leaky[11520:11544, 6], atol=1e-2)
    first_rows = s["train"].inputs["ett_history"][:, 0]  # rows 0..8520 of the training span
    assert np.abs(first_rows.mean(axis=0)).max() < 0.1 and np.abs(s["test"].y.mean()) > 0.1


def test_options_file_horizon_and_stride(data_root):
    ctx = LoadContext(data_root=data_root)
    td = build_suite([{**ENTRY, "file": "ETTh2", "horizon": 48, "stride": 4}], ctx)["ett"]
    train = 8640 - 96 - 48 + 1
    assert {k: len(v) for k, v in td.splits.items()} == {"train": -(-train // 4), "val": 2833, "test": 2833}
    assert td.task.out_dim == 48 and "ETTh2" in td.source
    with pytest.raises(HighmodalError, match="file 'ETTm1' is not one of ETTh1, ETTh2"):
        build_suite([{**ENTRY, "file": "ETTm1"}], ctx)
    with pytest.raises(HighmodalError, match="stride must be >= 1"):
        build_suite([{**ENTRY, "stride": 0}], ctx)


def test_corrupted_and_missing_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "ett_small", "ETTh1.csv", [ENTRY])


def test_unexpected_columns_without_checksums_name_the_file(data_root, tmp_path):
    (tmp_path / "ett_small").mkdir()
    table = pd.read_csv(data_root / "ett_small" / "ETTh1.csv").drop(columns="OT")
    table.to_csv(tmp_path / "ett_small" / "ETTh1.csv", index=False)
    with pytest.raises(HighmodalError, match=r"ETTh1.csv: expected the columns date,HUFL"):
        build_suite([ENTRY], LoadContext(data_root=tmp_path))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite, 'test')
