"""A run whose safetensors header length starts with 0x80 (pickle's first byte) or spells ``PK`` (a
zip's) is valid and must evaluate, predict, export, initialise and resume through the real CLI."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from highmodal.data import LoadContext, build_suite
from highmodal.fileio import sha256_file

CONFIG = {
    "name": "pad", "seed": 3,
    "tasks": [{"name": "digits", "source": "sklearn_digits"}, {"name": "cancer", "source": "breast_cancer"}],
    "model": {"name": "omnivec2", "preset": "tiny"},
    "train": {"epochs": 1},
}


def pad_header(path: Path, low: int, modulus: int = 256) -> None:
    """Pad the JSON header with spaces (as the safetensors format allows) to a length ≡ low."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    pad = (low - n) % modulus
    path.write_bytes(struct.pack("<Q", n + pad) + raw[8:8 + n] + b" " * pad + raw[8 + n:])


def pad_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    pad_header(weights, 0x80)
    meta = json.loads((dst / "model.json").read_text())
    meta["weights_sha256"] = sha256_file(weights)
    (dst / "model.json").write_text(json.dumps(meta, indent=2))
    assert weights.read_bytes()[0] == 0x80
    return dst


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("pad")
    (root / "exp.yaml").write_text(yaml.safe_dump(CONFIG))
    run_cli("train", "--config", "exp.yaml", "--out", "run", "--no-progress", cwd=root, check=True)
    test = build_suite(CONFIG["tasks"], LoadContext(seed=CONFIG["seed"]))["cancer"].splits["test"]
    np.savez(root / "in.npz", **test.inputs)
    return root


def test_padded_run_evaluates_predicts_exports_and_initialises(trained, cli):
    root = trained
    pad_run(root / "run", root / "padded")
    for run in ("run", "padded"):
        cli("evaluate", run, "--json", f"{run}.json", cwd=root, check=True)
        cli("predict", run, "--task", "cancer", "--input", "in.npz", "--out", f"{run}.csv", cwd=root, check=True)
    scores = [json.loads((root / f"{run}.json").read_text())["tasks"] for run in ("run", "padded")]
    assert scores[0] == scores[1]
    assert (root / "padded.csv").read_text() == (root / "run.csv").read_text()
    cli("export", "padded", "--format", "torchscript", "--task", "cancer", cwd=root, check=True)
    assert (root / "padded" / "export" / "cancer.pt").is_file()
    proc = cli("train", "--config", "exp.yaml", "--init", "padded", "--epochs", "1", "--out", "tuned",
               "--no-progress", cwd=root, check=True)
    assert "initialised from padded" in proc.stdout


def test_padded_checkpoint_resumes(trained, cli):
    """The finished run's last checkpoint, its weights padded to 0x80 and its best weights to ``PK``,
    resumes to the same final weights."""
    root = trained
    last = shutil.copytree(root / "run", root / ".again.partial") / "checkpoints" / "last"
    pad_header(last / "model.safetensors", 0x80)
    pad_header(last / "best.safetensors", 0x4B50, modulus=1 << 16)
    assert (last / "best.safetensors").read_bytes()[:2] == b"PK"
    (root / ".again.partial" / "model.safetensors").unlink()
    cli("train", "--resume", "again", "--no-progress", cwd=root, check=True)
    assert (root / "again" / "model.safetensors").read_bytes() == (root / "run" / "model.safetensors").read_bytes()


def test_pickle_in_a_checkpoint_is_refused(trained, cli):
    import torch

    root = trained
    last = shutil.copytree(root / "run", root / ".bad.partial") / "checkpoints" / "last"
    torch.save({"w": torch.zeros(2)}, last / "best.safetensors")
    proc = cli("train", "--resume", "bad", "--no-progress", cwd=root)
    assert proc.returncode == 2 and "best.safetensors: is a zip archive" in proc.stderr
    assert "Traceback" not in proc.stderr and (root / ".bad.partial" / "checkpoints" / "last").is_dir()
