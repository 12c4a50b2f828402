"""Samson on its real file: patch layout against the cube, spatially disjoint row bands, train-only
normalisation, options, corrupted/missing/unreadable files, a model forward pass."""

import numpy as np
import pytest
import scipy.io as sio
from conftest import assert_damage_is_named, assert_tiny_forward

import highmodal.data.real.hyperspectral as hyperspectral
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError

ENTRY = {"name": "samson", "source": "samson"}


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([ENTRY], LoadContext(data_root=data_root))


@pytest.fixture(scope="module")
def mat(data_root):
    return sio.loadmat(data_root / "samson_hsi" / hyperspectral.SAMSON_FILE)


def test_counts_shapes_targets(suite):
    td = suite["samson"]
    # rows 0-56 train, 57-75 val, 76-94 test; rows whose 3x3 patch crosses a border are dropped
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 56 * 95, "val": 17 * 95, "test": 18 * 95}
    assert td.specs["hsi_pixel"].shape == (3, 3, 12, 13) and td.specs["hsi_pixel"].kind == "hyperspectral"
    assert td.specs["hsi_pixel"].num_positions() == 108  # tokens per pixel
    assert td.task.target == "regression" and td.task.out_dim == 3 and td.task.metric == "mae"
    assert "rock, tree, water" in td.task.description
    for split in td.splits.values():
        assert np.allclose(split.y.sum(axis=1), 1, atol=1e-5)
    # every split sees water (the reason for row bands rather than column bands)
    assert min(v.y[:, 2].mean() for v in td.splits.values()) > 0.1


ROWS = {"train": range(0, 56), "val": range(58, 75), "test": range(77, 95)}  # band rows minus border rows


def test_patches_come_from_the_cube_and_splits_share_no_pixel(suite, mat):
    cube, abund = mat["SamSon"], mat["A"]
    padded = np.pad(cube, ((1, 1), (1, 1), (0, 0)), mode="edge")
    used = {}
    for name, split in suite["samson"].splits.items():
        centres = [(r, c) for r in ROWS[name] for c in range(95)]  # row-major
        expected = np.stack([padded[r : r + 3, c : c + 3] for r, c in centres])
        assert np.allclose(split.inputs["hsi_pixel"].reshape(len(centres), 3, 3, 156), expected, atol=1e-6)
        assert np.allclose(split.y, abund[tuple(np.array(centres).T)], atol=1e-6)
        used[name] = {(r + dr, c + dc) for r, c in centres for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    assert not used["train"] & used["val"] and not used["val"] & used["test"] and not used["train"] & used["test"]
    # Why a random pixel split would leak: 1,317 pairs of neighbouring pixels have identical spectra.
    flat = cube.reshape(-1, 156)
    assert len(flat) - len(np.unique(flat, axis=0)) == 1317


def test_normalisation_uses_train_only(suite):
    td = suite["samson"]
    x = {k: v.inputs["hsi_pixel"].reshape(len(v), -1) for k, v in td.splits.items()}
    assert len(td.specs["hsi_pixel"].mean) == 3 * 3 * 12 * 13  # per band and patch position
    assert np.allclose(td.specs["hsi_pixel"].mean, x["train"].mean(axis=0), atol=1e-6)
    assert not np.allclose(td.specs["hsi_pixel"].mean, np.concatenate(list(x.values())).mean(axis=0), atol=1e-3)


def test_options(data_root):
    ctx = LoadContext(data_root=data_root)
    td = build_suite([{**ENTRY, "patch": 1, "band_group": 12}], ctx)["samson"]
    assert td.specs["hsi_pixel"].shape == (1, 1, 13, 12)
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 57 * 95, "val": 19 * 95, "test": 19 * 95}
    with pytest.raises(HighmodalError, match="band_group 10 must divide the 156 bands"):
        build_suite([{**ENTRY, "band_group": 10}], ctx)
    with pytest.raises(HighmodalError, match="patch must be a positive odd number"):
        build_suite([{**ENTRY, "patch": 4}], ctx)


def test_corrupted_missing_and_unreadable_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "samson_hsi", "Samson.mat", [ENTRY])
    (tmp_path / "plain" / "samson_hsi").mkdir(parents=True)
    (tmp_path / "plain" / "samson_hsi" / "Samson.mat").write_bytes(b"not a MATLAB file" * 20)
    with pytest.raises(HighmodalError, match=r"Samson.mat: cannot read the MATLAB file"):
        build_suite([ENTRY], LoadContext(data_root=tmp_path / "plain"))
    sio.savemat(tmp_path / "plain" / "samson_hsi" / "Samson.mat", {"Y": np.zeros((4, 4))})
    with pytest.raises(HighmodalError, match=r"Samson.mat: variable\(s\) \['SamSon', 'A', 'cood'\] not found"):
        build_suite([ENTRY], LoadContext(data_root=tmp_path / "plain"))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite, 'val')
