"""OmniVec2's two masked pretraining stages on a suite's unlabelled training data: what each stage
iterates over and the stage loop (``highmodal pretrain`` itself: ``experiments/pretraining.py``).

Only training splits are read and labels are never used, except that a pairing task's negative pairs
are no pairs (``stage2.keep_target``). Stage 1 iterates over the modalities (one batch of one modality
per step, the order reshuffled each cycle: §3.2 "we iterate between modalities while keeping the
transformer network common"); stage 2 over the paired tasks (one batch of two modalities of the same
samples per step). Each stage has its own decoders and a step budget, and trains through the one
``Trainer`` (so it resumes, runs in bf16 and under torchrun as training does) with AdamW (MAE's betas
0.9/0.95), warm-up and cosine decay.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from highmodal.config import TrainConfig
from highmodal.errors import HighmodalError, did_you_mean
from highmodal.models.base import Piece
from highmodal.models.masked import MaskedModeling
from highmodal.tasks import TaskSuite
from highmodal.training import distributed
from highmodal.training.batching import TaskTensors
from highmodal.training.trainer import Trainer

PAIRS = ("paired", "any")
HEADS = ["heads", "unified_head"]  # never trained by pretraining: `train --init` starts them fresh


@dataclasses.dataclass
class StageConfig:
    """``steps``: optimizer steps (0 skips the stage). ``tasks``: stage 1, whose modalities are
    pretrained (None: every task's); stage 2, the paired tasks (None: every task with >= 2 modalities).
    ``keep_target``: stage 2 uses only the rows of that label (``{roadscene: 1}``: same-scene pairs).
    ``pairs`` (stage 2): ``paired`` trains on the paired tasks only; ``any`` also on every other pair
    of modalities with unrelated rows, as the paper's stage 2 does with its unpaired data sets.
    ``contrastive`` (stage 2): weight of a symmetric InfoNCE loss between the two streams' pooled
    embeddings on units of the same rows, at ``temperature`` (0: masked reconstruction only, the
    paper's objective; the paper does not align the streams' embeddings, so retrieval needs this);
    ``contrastive_tokens``: position-wise token similarity where the two token grids match."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    tasks: list[str] | None = None
    keep_target: dict[str, int] = dataclasses.field(default_factory=dict)
    pairs: str = "paired"
    contrastive: float = 0.0
    temperature: float = 0.07
    contrastive_tokens: bool = False

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS:
            raise HighmodalError(f"pretrain stage: pairs {self.pairs!r} is not one of {', '.join(PAIRS)}")
        for key, ok in {"steps": self.steps >= 0, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                        "weight_decay": self.weight_decay >= 0, "warmup_frac": 0 <= self.warmup_frac < 1,
                        "contrastive": self.contrastive >= 0, "temperature": self.temperature > 0}.items():
            if not ok:
                raise HighmodalError(f"pretrain stage: {key} = {getattr(self, key)!r} is out of range")

def require_tasks(given, names: list[str], field: str) -> None:
    for t in given:
        if t not in names:
            raise HighmodalError(f"{field}: unknown task {t!r}{did_you_mean(t, names)}; tasks: {', '.join(names)}")


def _check_tasks(stage: StageConfig, suite: TaskSuite, key: str) -> None:
    require_tasks([*(stage.tasks or ()), *stage.keep_target], [td.task.name for td in suite], f"pretrain.{key}")


Stream = tuple[TaskTensors, str]  # rows of one task, one of its modalities
Unit = tuple[Stream, ...]  # what one step trains on: one stream (stage 1) or two (stage 2)


def modality_streams(suite: TaskSuite, tasks: list[str] | None, device: str = "cpu") -> dict[str, TaskTensors]:
    """Each modality with the training split of the task holding the most rows of it."""
    best: dict[str, TaskTensors] = {}
    for td in suite:
        if tasks is not None and td.task.name not in tasks:
            continue
        tensors = TaskTensors(td.task, td.splits["train"], device)
        for m in td.task.modalities:
            if m not in best or len(tensors) > len(best[m]):
                best[m] = tensors
    return best


def stage1_units(suite: TaskSuite, stage: StageConfig, device: str = "cpu") -> list[Unit]:
    _check_tasks(stage, suite, "stage1.tasks")
    return [((t, m),) for m, t in modality_streams(suite, stage.tasks, device).items()]


def stage2_units(suite: TaskSuite, stage: StageConfig, device: str = "cpu") -> list[Unit]:
    """``pairs: paired``: every modality pair of each paired task, on the same rows (only rows of
    ``keep_target``). ``pairs: any`` adds every other pair of modalities, each with its own rows (§4:
    "we randomly select two modalities, and sample data from them"). The rows are held on ``device``."""
    _check_tasks(stage, suite, "stage2")
    units: list[Unit] = []
    paired: set[frozenset[str]] = set()
    for td in suite:
        chosen = stage.tasks is None or td.task.name in stage.tasks
        if not chosen or len(td.task.modalities) < 2:
            if stage.tasks is not None and chosen:
                raise HighmodalError(f"pretrain.stage2.tasks: {td.task.name!r} has one modality; stage 2 needs pairs")
            continue
        data = td.splits["train"]
        if td.task.name in stage.keep_target:
            data = data.subset(np.flatnonzero(data.y == stage.keep_target[td.task.name]))
        tensors = TaskTensors(td.task, data, device)
        for a, b in itertools.combinations(td.task.modalities, 2):
            units.append(((tensors, a), (tensors, b)))
            paired.add(frozenset((a, b)))
    if stage.pairs == "any":
        streams = modality_streams(suite, None, device)
        units += [((streams[a], a), (streams[b], b)) for a, b in itertools.combinations(streams, 2)
                  if frozenset((a, b)) not in paired]
    return units


class UnitSampler:
    """A stage's steps for the ``Trainer``: an epoch is ``steps`` steps, each one unit (drawn in a
    fresh random order, reshuffled each time every unit has had a step) with one batch per stream.
    Streams of the same rows share the draw (``Piece.rows`` says so); others get as many rows each.
    Rows are taken in order from one permutation per stream and pass, held on the data's device, so
    no index is copied in per step. Every draw comes from the epoch's ``rng``, so a resumed stage
    replays its batches exactly. Pieces are named by modality: the losses are logged per modality."""

    piece = "modality"

    def __init__(self, units: list[Unit], batch_size: int, steps: int, label: str = "") -> None:
        self.units, self.batch_size, self.steps, self.label = units, batch_size, steps, label
        self.sources = list({id(t): t for unit in units for t, _ in unit}.values())
        self.weights = {m: 1.0 for unit in units for _, m in unit}

    def __len__(self) -> int:
        return self.steps

    def epoch(self, rng: np.random.Generator, active: set[str] | None = None) -> Iterator[list[Piece]]:
        perms: dict[int, torch.Tensor] = {}
        cursor: dict[int, int] = {}

        def rows(source: int, n: int) -> torch.Tensor:
            tensors = self.sources[source]
            if cursor.get(source, math.inf) + n > len(perms.get(source, ())):
                perms[source] = torch.as_tensor(rng.permutation(len(tensors))).to(tensors.y.device)
                cursor[source] = 0
            cursor[source] += n
            return perms[source][cursor[source] - n : cursor[source]]

        index = {id(t): i for i, t in enumerate(self.sources)}
        order: list[int] = []
        for _ in range(self.steps):
            if not order:
                order = list(rng.permutation(len(self.units)))
            unit = self.units[order.pop()]
            n = min(self.batch_size, *(len(t) for t, _ in unit))
            drawn: dict[int, dict[str, torch.Tensor]] = {}
            for tensors, _ in unit:
                if index[id(tensors)] not in drawn:
                    drawn[index[id(tensors)]] = tensors.batch(rows(index[id(tensors)], n))
            yield [Piece(m, m, drawn[index[id(t)]], rows=f"{t.task.name}#{index[id(t)]}") for t, m in unit]


def stage_config(stage: StageConfig, steps_per_epoch: int, device: str, amp: str | None) -> TrainConfig:
    """The Trainer's settings for a stage: AdamW with MAE's betas (0.9, 0.95), warm-up and cosine
    decay to 0, gradients clipped at norm 1, one epoch per log record."""
    return TrainConfig(epochs=stage.steps // steps_per_epoch, batch_size=stage.batch_size, lr=stage.lr,
                       weight_decay=stage.weight_decay, betas=[0.9, 0.95], warmup_frac=stage.warmup_frac,
                       min_lr_ratio=0.0, grad_clip=1.0, device=device, memory_guard=False, amp=amp)


def run_stage(mm: MaskedModeling, units: list[Unit], stage: StageConfig, number: int, seed: int, log_every: int,
              run_dir: Path | None, log, progress: bool, resume: bool = False, amp: str | None = None) -> dict:
    """Train ``mm`` for ``stage.steps`` steps through the ``Trainer`` (an epoch every ``log_every``
    steps: one record in ``run_dir/metrics.jsonl``, a checkpoint to resume from); returns the stage
    summary."""
    if not units:
        raise HighmodalError(f"pretrain.stage{number}: no data to pretrain on (no "
                             f"{'modality' if number == 1 else 'paired task'} selected)")
    device = str(next(mm.parameters()).device)
    sampler = UnitSampler(units, stage.batch_size, log_every, f"pretrain stage {number}, ")
    trainer = Trainer(mm, None, stage_config(stage, log_every, device, amp), 1000 * seed + number,
                      run_dir, progress, sampler=sampler)
    t0 = time.perf_counter()
    trainer.fit(resume)
    seconds = time.perf_counter() - t0
    history = [] if run_dir is None or not distributed.is_main() else [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = history[-1]["train_loss"] if history else {}
    log(f"stage {number}: {stage.steps} steps in {seconds:.1f} s; last losses "
        + ", ".join(f"{m} {v:.3f}" for m, v in last.items()))
    return {"steps": stage.steps, "seconds": seconds, "history": history, "units": len(units)}
