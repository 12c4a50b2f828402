"""Crash safety through the real CLI: SIGKILL a training subprocess several times, resume, and end
bit-identical to an uninterrupted run; a diverging run stops with the last checkpoint intact."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training.resume import TrainingDiverged, checkpoint_dir
from highmodal.training.trainer import Trainer

CONFIG = {
    "name": "digits", "seed": 7,
    "tasks": [{"name": "digits", "source": "sklearn_digits"}, {"name": "cancer", "source": "breast_cancer"}],
    "model": {"preset": "tiny"},
    "train": {"epochs": 3, "checkpoint_every": 7, "lr": 0.003},
}


def start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "highmodal.cli", "train", *args, "--no-progress"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_and_resume_is_bit_identical(tmp_path, cli):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(CONFIG))
    cli("train", "--config", "exp.yaml", "--out", "ref", "--no-progress", cwd=tmp_path, check=True)

    partial = tmp_path / ".run.partial"
    rng = random.Random(0)
    proc = start("--config", "exp.yaml", "--out", "run", cwd=tmp_path)
    kills = 0
    while kills < 3:
        deadline = time.time() + 120
        while checkpoint_dir(partial) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        step = json.loads((checkpoint_dir(partial) / "progress.json").read_text())["step"]
        assert step > 0
        proc = start("--resume", "run", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    ref = (tmp_path / "ref" / "model.safetensors").read_bytes()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == ref, "resumed weights differ"
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, CONFIG["train"]["epochs"] + 1))
    assert not partial.exists()


def test_resume_without_checkpoint_and_stale_partial(tmp_path, cli):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(CONFIG))
    proc = cli("train", "--resume", "nothing", cwd=tmp_path)
    assert proc.returncode == 2 and "no interrupted run to resume" in proc.stderr
    (tmp_path / ".run.partial").mkdir()
    proc = cli("train", "--config", "exp.yaml", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 2 and "--resume" in proc.stderr and (tmp_path / ".run.partial").is_dir()


def test_nan_stops_with_task_step_batch_and_keeps_last_checkpoint(tmp_path):
    suite = build_suite(CONFIG["tasks"], LoadContext(seed=0))
    train = suite["cancer"].splits["train"]
    train.inputs["cell_nuclei"][5] = np.nan  # injected after validation, as a corrupt batch would arrive
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    cfg = TrainConfig(epochs=2, checkpoint_every=3)
    run = tmp_path / "run"
    run.mkdir()
    trainer = Trainer(model, suite, cfg, seed=0, run_dir=run, progress=False)
    pattern = r"non-finite loss in task cancer at epoch 1, step \d+, batch .*cancer#\d+"
    with pytest.raises(TrainingDiverged, match=pattern):
        trainer.fit()
    assert issubclass(TrainingDiverged, HighmodalError)
    ckpt = checkpoint_dir(run)
    assert ckpt is not None
    for name in ("model.safetensors", "optim.pt", "progress.json"):
        assert (ckpt / name).is_file()
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model.safetensors")).values())
