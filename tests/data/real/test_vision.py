"""Shared image datasets on their real files: sizes, labels, caching, corrupted/missing files."""

import os

import numpy as np
import pytest
from conftest import assert_damage_is_named

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError


def test_mnist_shapes_labels_and_split(data_root):
    td = build_suite([{"name": "m", "source": "mnist"}], LoadContext(data_root=data_root))["m"]
    assert td.specs["mnist_image"].shape == (7, 7, 16)  # 28x28 cut into 4x4 squares, as HighMMT's AV-MNIST
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 7200, "val": 800, "test": 2000}
    y = np.concatenate([s.y for s in td.splits.values()])
    # MNIST test-split label counts (t10k-labels): 980 zeros ... 1009 nines.
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_cache_hit_skips_preprocessing(data_root, monkeypatch, tmp_path):
    monkeypatch.setenv("HIGHMODAL_CACHE", str(tmp_path))
    build_suite([{"name": "m", "source": "mnist"}], LoadContext(data_root=data_root))
    entries = list(tmp_path.glob("mnist-*.npz"))
    assert len(entries) == 1
    stamp = os.stat(entries[0]).st_mtime_ns
    from highmodal.data.real import vision

    monkeypatch.setattr(vision, "_read_idx", lambda *a: pytest.fail("preprocessing ran on a cache hit"))
    build_suite([{"name": "m", "source": "mnist"}], LoadContext(data_root=data_root))
    assert os.stat(entries[0]).st_mtime_ns == stamp


def test_mnist_corrupted_and_missing_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "mnist_test", "t10k-labels-idx1-ubyte.gz",
                           [{"name": "m", "source": "mnist"}])


def test_no_data_root_is_a_clear_error():
    with pytest.raises(HighmodalError, match="--data-root"):
        build_suite([{"name": "m", "source": "mnist"}], LoadContext(data_root=None))
