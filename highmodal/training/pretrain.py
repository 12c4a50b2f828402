"""OmniVec2's two masked pretraining stages on a suite's unlabelled training data: what each stage
iterates over and the stage loop (``highmodal pretrain`` itself: ``experiments/pretraining.py``).

Only training splits are read and labels are never used, except that a pairing task's negative pairs
are no pairs (``stage2.keep_target``). Stage 1 iterates over the modalities (one batch of one modality
per step, the order reshuffled each cycle: §3.2 "we iterate between modalities while keeping the
transformer network common"); stage 2 over the paired tasks (one batch of two modalities of the same
samples per step). Each stage has its own decoders, AdamW (MAE's betas 0.9/0.95) with warm-up and
cosine decay, and a step budget.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from highmodal.errors import HighmodalError, did_you_mean
from highmodal.models.masked import MaskedModeling
from highmodal.tasks import TaskSuite
from highmodal.training.batching import TaskTensors
from highmodal.training.divergence import FiniteWatch
from highmodal.training.trainer import warmup_cosine

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


def draw_batches(unit: Unit, size: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """One batch per stream; streams of the same rows share the draw, others get as many rows each.
    Rows are drawn by ``gen`` on the data's device, so no index is copied in per step."""
    n = min(size, *(len(t) for t, _ in unit))
    drawn: dict[int, dict[str, torch.Tensor]] = {}
    for tensors, _ in unit:
        if id(tensors) not in drawn:
            drawn[id(tensors)] = tensors.batch(torch.randperm(len(tensors), generator=gen, device=gen.device)[:n])
    return [drawn[id(t)] for t, _ in unit]


def run_stage(mm: MaskedModeling, units: list[Unit], stage: StageConfig, number: int, seed: int, log_every: int,
              metrics: Path, log, progress: bool) -> dict:
    """Train ``mm`` for ``stage.steps`` steps, appending a record to ``metrics`` every ``log_every``;
    returns the stage summary. Losses are summed on the device and non-finite losses or gradients
    are read by ``FiniteWatch``, so between log records no step waits for the device."""
    if not units:
        raise HighmodalError(f"pretrain.stage{number}: no data to pretrain on (no "
                             f"{'modality' if number == 1 else 'paired task'} selected)")
    rng = np.random.default_rng([seed, number])
    device = next(mm.parameters()).device
    gen = torch.Generator(device).manual_seed(int(rng.integers(2**63)))
    watch = FiniteWatch(device, piece="modality", advice="; lower the learning rate")
    opt = torch.optim.AdamW(mm.parameters(), lr=stage.lr, weight_decay=stage.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(stage.steps, stage.warmup_frac, 0.0))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    history = []
    order: list[int] = []
    t0 = time.perf_counter()
    mm.train()
    for step in tqdm(range(stage.steps), desc=f"stage {number}", unit="step", disable=not progress, leave=False):
        if not order:
            order = list(rng.permutation(len(units)))
        unit = units[order.pop()]
        batches = draw_batches(unit, stage.batch_size, gen)
        mods = [m for _, m in unit]
        if number == 1:
            losses = {mods[0]: mm.stage1_loss(batches[0], mods[0])}
        else:
            losses = mm.stage2_loss(batches[0], mods[0], batches[1], mods[1])
            if stage.contrastive and batches[0] is batches[1]:
                losses[f"{mods[0]}~{mods[1]}"] = stage.contrastive * mm.contrastive_loss(
                    batches[0], mods[0], batches[1], mods[1], stage.temperature, stage.contrastive_tokens)
        total = sum(losses.values())
        nonfinite = ~torch.isfinite(torch.stack([*losses.values(), total]).detach())
        opt.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(mm.parameters(), 1.0)
        tasks = ", ".join(sorted({t.task.name for t, _ in unit}))
        watch.add(f"pretrain stage {number}, step {step + 1} (task {tasks})", list(losses), nonfinite[None], norm)
        watch.poll()
        opt.step()
        sched.step()
        for m, v in losses.items():
            sums[m] = sums.get(m, 0) + v.detach()
            counts[m] = counts.get(m, 0) + 1
        if (step + 1) % log_every == 0 or step + 1 == stage.steps:
            watch.drain()
            record = {"stage": number, "step": step + 1, "seconds": time.perf_counter() - t0,
                      "loss": {m: float(sums[m]) / counts[m] for m in sorted(sums)}}
            history.append(record)
            with metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")
            sums, counts = {}, {}
    seconds = time.perf_counter() - t0
    last = history[-1]["loss"] if history else {}
    log(f"stage {number}: {stage.steps} steps in {seconds:.1f} s; last losses "
        + ", ".join(f"{m} {v:.3f}" for m, v in last.items()))
    return {"steps": stage.steps, "seconds": seconds, "history": history, "units": len(units)}
