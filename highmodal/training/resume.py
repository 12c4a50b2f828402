"""Crash-safe training state: ``checkpoints/last/`` holds everything needed to continue a run
bit-identically (model, best model, optimizer, scheduler, RNG streams, schedule position)."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from highmodal.errors import HighmodalError
from highmodal.training import fsdp
from highmodal.training.weightfile import read_weights


class TrainingDiverged(HighmodalError):
    """A non-finite loss or gradient: training stops before diverged weights are saved or scored
    (``training/divergence.py``); the last checkpoint stays."""


@dataclass
class Progress:
    """Where training stands. ``epoch_rng`` is the shuffling RNG's state at the start of ``epoch``;
    replaying the epoch's draws from it reproduces the exact batches of an uninterrupted run."""

    epoch: int = 1
    step_in_epoch: int = 0
    step: int = 0
    epoch_rng: dict = field(default_factory=dict)
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    balance: dict = field(default_factory=dict)
    best_score: float = -math.inf
    best_epoch: int = -1
    best_val: dict | None = None
    tasks: dict = field(default_factory=dict)  # per-task early stopping's statuses (training/task_stopping.py)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, weights: dict, optimizer: dict, scheduler, p: Progress, best_state: dict | None,
                    best_heads: dict | None = None) -> None:
    """Write to a fresh temporary folder, fsync, then swap it in as ``checkpoints/last``. ``weights``,
    ``optimizer`` and ``best_state`` are full state dicts (``fsdp.gather`` of a sharded model's);
    ``best_heads`` holds per-task early stopping's best heads (flat ``task/param`` keys)."""
    root = run_dir / "checkpoints"
    tmp, last, old = root / ".last.tmp", root / "last", root / ".last.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
    if best_state is not None:
        save_file({k: v.contiguous().cpu() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
    if best_heads:
        save_file({k: v.contiguous().cpu() for k, v in best_heads.items()}, str(tmp / "heads.safetensors"))
    progress = asdict(p) | {"sums": {n: float(v) for n, v in p.sums.items()}}
    torch.save({"optimizer": optimizer, "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "optim.pt")
    (tmp / "progress.json").write_text(json.dumps(progress))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if last.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(last, old)
    os.replace(tmp, last)
    _fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_dir(run_dir: Path) -> Path | None:
    """``last``, or ``.last.old`` when a crash fell between the two renames of a swap."""
    for name in ("last", ".last.old"):
        path = run_dir / "checkpoints" / name
        if (path / "progress.json").is_file():
            return path
    return None


def load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> tuple[Progress, dict | None, dict]:
    """Restore the training state in place (a sharded model and its optimizer take their shards of the
    full tensors); return the progress, the best epoch's full weights and the per-task best heads."""
    path = checkpoint_dir(run_dir)
    if path is None:
        raise HighmodalError(f"{run_dir}: no checkpoint to resume from (checkpoints/last is missing)")
    weights = read_weights(path / "model.safetensors")
    best = read_weights(path / "best.safetensors") if (path / "best.safetensors").exists() else None
    heads = read_weights(path / "heads.safetensors") if (path / "heads.safetensors").exists() else {}
    try:
        fsdp.load_model(model, weights)
        state = torch.load(path / "optim.pt", weights_only=True)
        fsdp.load_optimizer(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        p = Progress(**json.loads((path / "progress.json").read_text()))
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise HighmodalError(f"{path}: checkpoint is unreadable or does not fit this run: "
                             f"{str(e).splitlines()[0]}") from None
    return p, best, heads


def trim_log(path: Path, next_epoch: int) -> None:
    """Drop metrics lines of epochs that the resumed run will redo (written after the checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] < next_epoch]
    path.write_text("".join(line + "\n" for line in keep))
