"""ModelNet10 32³ voxels on the real file: official split, the block and point representations
(checked against the source grids), file errors, and a HighMMT forward pass."""

import numpy as np
import pytest
from conftest import assert_damage_is_named, assert_tiny_forward, corrupt_copy

from highmodal.data import LoadContext, build_suite
from highmodal.data.real.shapes import CLASSES, point_sets, voxel_blocks
from highmodal.errors import HighmodalError

TEST_COUNTS = [50, 100, 100, 86, 86, 100, 86, 100, 100, 100]  # official ModelNet10 test split per class


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([{"name": "voxels", "source": "modelnet10"},
                        {"name": "points", "source": "modelnet10", "representation": "points"}],
                       LoadContext(data_root=data_root))


@pytest.fixture(scope="module")
def test_grids(data_root):
    with np.load(data_root / "modelnet10_voxel32" / "modelnet10.npz") as f:
        return f["X_test"] != 0, f["y_test"]


def test_voxel_blocks_official_split(suite, test_grids):
    td = suite["voxels"]
    assert td.task.class_names == tuple(CLASSES) and CLASSES[0] == "bathtub" and CLASSES[-1] == "toilet"
    assert td.specs["shape_voxels"].shape == (4, 4, 4, 512) and td.specs["shape_voxels"].kind == "point_cloud"
    assert len(td.splits["train"]) + len(td.splits["val"]) == 3991 and len(td.splits["test"]) == 908
    test = td.splits["test"]
    assert np.bincount(test.y).tolist() == TEST_COUNTS
    grids, y = test_grids
    np.testing.assert_array_equal(test.y, y)  # official test order kept
    # Reassemble the blocks: the grid comes back voxel for voxel.
    x = test.inputs["shape_voxels"][:20].reshape(20, 4, 4, 4, 8, 8, 8).transpose(0, 1, 4, 2, 5, 3, 6)
    np.testing.assert_array_equal(x.reshape(20, 32, 32, 32), grids[:20])
    # Block (i, j, k) holds voxels [8i:8i+8, 8j:8j+8, 8k:8k+8].
    np.testing.assert_array_equal(voxel_blocks(grids[:1], 8)[0, 1, 2, 3], grids[0, 8:16, 16:24, 24:32].ravel())


def test_point_sets(suite, test_grids):
    td = suite["points"]
    assert td.specs["shape_points"].shape == (None, 3) and td.specs["shape_points"].max_len == 256
    assert len(td.splits["train"]) + len(td.splits["val"]) == 3991 - 27 and len(td.splits["test"]) == 908 - 7
    assert "empty grids dropped (27 train, 7 test)" in td.task.description
    grids, _ = test_grids
    nonempty = grids.reshape(len(grids), -1).any(1)
    test = td.splits["test"]
    x, mask = test.inputs["shape_points"], test.masks["shape_points"]
    for i, g in zip(range(0, len(x), 97), grids[nonempty][::97], strict=False):
        pts = x[i][mask[i]]
        assert len(pts) == min(256, g.sum())
        vox = np.rint((pts + 1) / 2 * 31).astype(int)  # back to voxel indices: all occupied, none twice
        assert g[tuple(vox.T)].all() and len(np.unique(vox, axis=0)) == len(vox)
        assert [tuple(v) for v in vox] == sorted(tuple(v) for v in vox)  # canonical order
    assert x.min() >= -1 and x.max() <= 1
    # Seeded: the same seed gives the same subsample, another seed another one.
    a = point_sets(grids[:3], 64, np.random.default_rng(0))[0]
    np.testing.assert_array_equal(a, point_sets(grids[:3], 64, np.random.default_rng(0))[0])
    assert not np.array_equal(a, point_sets(grids[:3], 64, np.random.default_rng(1))[0])


def test_bad_representation_is_a_clear_error(data_root):
    with pytest.raises(HighmodalError, match="representation must be 'voxels' or 'points'"):
        build_suite([{"name": "s", "source": "modelnet10", "representation": "mesh"}], LoadContext(data_root=data_root))


def test_corrupted_missing_and_unreadable_file(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path / "a", "modelnet10_voxel32", "modelnet10.npz",
                           [{"name": "s", "source": "modelnet10"}])
    bad = corrupt_copy(data_root, "modelnet10_voxel32", "modelnet10.npz", tmp_path / "b")
    (bad / "CHECKSUMS.sha256").unlink()  # no manifest: the reader is the last line of defence
    (bad / "modelnet10_voxel32" / "modelnet10.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(HighmodalError, match=r"modelnet10.npz: cannot read the arrays"):
        build_suite([{"name": "s", "source": "modelnet10"}], LoadContext(data_root=bad))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite)
