"""PneumoniaMNIST chest X-rays on the real file: splits and class counts, patches, metric, damaged and
missing files, and a HighMMT forward pass."""

import numpy as np
import pytest
import torch
from conftest import assert_damage_is_named

import highmodal.data.real.vision  # noqa: F401  (registers the loader before the package imports it)
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training.batching import TaskTensors


def load(root, **options):
    return build_suite([{"name": "p", "source": "pneumoniamnist", **options}], LoadContext(data_root=root))


@pytest.fixture(scope="module")
def suite(data_root):
    return load(data_root)


def test_pneumoniamnist_splits_classes_and_metric(suite):
    td = suite["p"]
    s = td.specs["chest_xray"]
    assert (s.kind, s.shape) == ("xray", (7, 7, 16))  # 28x28 cut into 4x4 squares
    assert td.task.class_names == ("normal", "pneumonia")
    assert td.task.metric == "auroc"  # training is 90 % pneumonia: accuracy rewards the majority answer
    # The file's splits (README caveat A: train is a reduced copy, val and test are the official ones).
    counts = {k: np.bincount(d.y).tolist() for k, d in td.splits.items()}
    assert counts == {"train": [388, 3494], "val": [135, 389], "test": [234, 390]}
    assert not td.splits["train"].masks


def test_pneumoniamnist_patches_are_the_file_images(suite, data_root):
    with np.load(data_root / "pneumoniamnist" / "pneumoniamnist.npz") as f:
        image, label = f["test_images"][5], int(f["test_labels"][5, 0])
    d = suite["p"].splits["test"]
    np.testing.assert_array_equal(d.inputs["chest_xray"][5, 1, 2], image[4:8, 8:12].reshape(-1))
    assert d.y[5] == label


def test_pneumoniamnist_entry_metric_wins(data_root):
    assert load(data_root, metric="accuracy")["p"].task.metric == "accuracy"


def test_pneumoniamnist_forward(suite):
    td = suite["p"]
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task], preset="tiny").eval()
    with torch.no_grad():
        out = model(TaskTensors(td.task, td.splits["train"]).batch(slice(0, 4)), "p")
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_pneumoniamnist_corrupted_unreadable_and_missing_file(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "pneumoniamnist", "pneumoniamnist.npz",
                           [{"name": "p", "source": "pneumoniamnist"}])
    plain = tmp_path / "plain" / "pneumoniamnist"  # no CHECKSUMS.sha256: the reader meets the damage
    plain.mkdir(parents=True)
    (plain / "pneumoniamnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(HighmodalError, match=r"pneumoniamnist.npz: cannot read the npz file"):
        load(plain.parent)
    np.savez(plain / "pneumoniamnist.npz", train_images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(HighmodalError, match=r"pneumoniamnist.npz: expected arrays train_images .* found"):
        load(plain.parent)
