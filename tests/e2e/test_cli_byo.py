"""End to end through the real CLI: package-shipped data written to an npz + YAML, then train,
evaluate, predict, and check the files a user gets."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sktime.datasets import load_basic_motions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """BasicMotions as a user would bring it: one npz, arrays channels-first, string labels, a split."""
    root = tmp_path_factory.mktemp("byo")
    xs, ys, splits = [], [], []
    for split in ("train", "test"):
        x, y = load_basic_motions(split=split, return_type="numpy3D")
        xs.append(x)
        ys.append(y)
        splits += [split] * len(y)
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    (root / "data").mkdir()
    np.savez(root / "data" / "motions.npz", accel=x[:, :3], gyro=x[:, 3:], y=y, split=np.array(splits))
    # The example config of docs/bring-your-own.md, made quick: tiny preset, fewer epochs.
    cfg = yaml.safe_load((REPO / "configs" / "byo_motions.yaml").read_text())
    cfg["seed"] = 3
    cfg["model"]["preset"] = "tiny"
    cfg["train"].update(epochs=12, lr=0.002)
    (root / "configs").mkdir()
    (root / "configs" / "exp.yaml").write_text(yaml.safe_dump(cfg))
    return root, x, y


def test_train_evaluate_predict(byo, cli):
    root, x, y = byo
    run = root / "runs" / "motions"
    train = cli("train", "--config", str(root / "configs" / "exp.yaml"), "--out", str(run), "--no-progress", check=True)
    for name in ("config.yaml", "model.safetensors", "model.json", "metrics.jsonl", "eval_test.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir()), "no TensorBoard events"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 12
    printed = json.loads((run / "eval_test.json").read_text())
    acc = printed["tasks"]["activity"]["metrics"]["accuracy"]
    assert acc > 0.5, f"BasicMotions accuracy {acc} not above chance 0.25"
    assert "activity" in train.stdout and "accuracy" in train.stdout

    cli("evaluate", str(run), "--split", "test", "--json", str(root / "again.json"), check=True)
    again = json.loads((root / "again.json").read_text())
    assert again["tasks"]["activity"]["metrics"] == printed["tasks"]["activity"]["metrics"]

    test = x[-40:]
    np.savez(root / "inputs.npz", accel=np.moveaxis(test[:, :3], 1, -1), gyro=np.moveaxis(test[:, 3:], 1, -1))
    cli("predict", str(run), "--task", "activity", "--input", str(root / "inputs.npz"),
        "--out", str(root / "preds.csv"), check=True)
    with open(root / "preds.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    classes = sorted(set(y))
    assert set(rows[0]) == {"index", "prediction", *[f"prob_{c}" for c in classes]}
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [r["prediction"] for r in rows] == [classes[i] for i in probs.argmax(1)]
    pred_acc = np.mean([r["prediction"] == t for r, t in zip(rows, y[-40:], strict=True)])
    assert pred_acc == pytest.approx(acc), "predict disagrees with evaluate on the same test samples"

    onnx = cli("predict", str(run), "--task", "activity", "--input", str(root / "inputs.npz"), "--runtime", "onnx",
               "--out", str(root / "onnx.csv"), check=True)
    assert "runtime onnx" in onnx.stdout
    with open(root / "onnx.csv") as f:
        onnx_rows = list(csv.DictReader(f))
    np.testing.assert_allclose([[float(r[f"prob_{c}"]) for c in classes] for r in onnx_rows], probs, atol=1e-4)
    bad = cli("predict", str(run), "--task", "activity", "--input", str(root / "inputs.npz"), "--runtime", "onx",
              "--out", str(root / "bad.csv"))
    assert bad.returncode == 2 and "did you mean 'onnx'" in bad.stderr and not (root / "bad.csv").exists()

    cli("evaluate", str(run), "--modalities", "accel", check=True)
    alone = json.loads((run / "eval_test-accel.json").read_text())["tasks"]["activity"]
    assert alone["withheld"] == ["gyro"] and alone["modalities"] == ["accel:imu"]
    assert json.loads((run / "eval_test.json").read_text()) == printed, "the full-input report was overwritten"
    bad = cli("evaluate", str(run), "--modalities", "sonar")
    assert bad.returncode == 2 and "sonar" in bad.stderr

    np.savez(root / "partial.npz", accel=np.moveaxis(test[:, :3], 1, -1))
    cli("predict", str(run), "--task", "activity", "--input", str(root / "partial.npz"), "--modalities", "accel",
        "--out", str(root / "accel.csv"), check=True)
    with open(root / "accel.csv") as f:
        accel_rows = list(csv.DictReader(f))
    accel_acc = np.mean([r["prediction"] == t for r, t in zip(accel_rows, y[-40:], strict=True)])
    assert accel_acc == pytest.approx(alone["metrics"]["accuracy"])
    bad = cli("predict", str(run), "--task", "activity", "--input", str(root / "partial.npz"),
              "--out", str(root / "bad.csv"))
    assert bad.returncode == 2 and "needs an array named 'gyro'" in bad.stderr
    assert not (root / "bad.csv").exists()
    again = cli("predict", str(run), "--task", "activty", "--input", str(root / "inputs.npz"),
                "--out", str(root / "bad.csv"))
    assert again.returncode == 2 and "did you mean 'activity'" in again.stderr

    again = cli("train", "--config", str(root / "configs" / "exp.yaml"), "--out", str(run), "--no-progress")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (run / "model.safetensors").is_file()
