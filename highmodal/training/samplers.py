"""Multitask samplers: which tasks (and modalities) make up each training step of an epoch.

A sampler's ``epoch(rng, active)`` yields the steps of one epoch as lists of ``Piece``s, drawing every
random choice from ``rng`` only, so replaying an epoch from the RNG state stored in a checkpoint
reproduces its batches exactly (resumption stays bit-identical). ``active`` (None: all) is the set of
tasks still training (``training/task_stopping.py``); an epoch keeps its number of steps, and a step
left with no active task is yielded empty, so the learning-rate schedule stays tied to epochs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from highmodal.errors import HighmodalError
from highmodal.models.base import Piece
from highmodal.registry import Registry
from highmodal.training.batching import TaskTensors

SAMPLERS: Registry[type] = Registry("sampler")


def staggered_schedule(num_batches: dict[str, int]) -> list[list[str]]:
    """HighMMT's staggered schedule (Appendix B.5): tasks per step for one epoch; a task with ``n``
    batches joins at step ``max_n - n``.

    With A: 300, B: 200, C: 100 batches, steps 0-99 train A, 100-199 A+B, 200-299 A+B+C. The
    paper found this beats uniform mixing because small tasks overfit less when they are seen
    only late in each epoch.
    """
    total = max(num_batches.values())
    return [[t for t, n in num_batches.items() if step >= total - n] for step in range(total)]


@SAMPLERS.register("staggered")
class StaggeredSampler:
    """HighMMT (Appendix B.5): every task's batches once per epoch, small tasks joining late."""

    def __init__(self, data: dict[str, TaskTensors], batch_sizes: dict[str, int], alpha: float = 0.0) -> None:
        self.data, self.batch_sizes = data, batch_sizes
        self.schedule = staggered_schedule({n: d.num_batches(batch_sizes[n]) for n, d in data.items()})

    def __len__(self) -> int:
        return len(self.schedule)

    def epoch(self, rng: np.random.Generator, active: set[str] | None = None) -> Iterator[list[Piece]]:
        iters = {n: d.shuffled(self.batch_sizes[n], rng) for n, d in self.data.items()}
        for step in self.schedule:
            yield [Piece(n, None, next(iters[n])) for n in step if active is None or n in active]

    def memory_plan(self) -> tuple[list[tuple[str, ...]], dict[str, int]]:
        """Steps as task tuples and the rows each task brings, for the memory guard."""
        return [tuple(s) for s in self.schedule], dict(self.batch_sizes)


@SAMPLERS.register("pairwise")
class PairwiseSampler:
    """OmniVec2 (§3, §3.2.1): each step draws two different modalities, then one task for each
    among the tasks that have it, and half a batch of each; the model fuses the two streams.

    Choices the paper leaves open: modalities are drawn with probability ∝ (training rows)^alpha —
    alpha = 0 (default) is the paper's uniform draw, alpha = 1 proportional to data; when both
    draws land on the same task (two modalities of one multimodal task) the two streams hold the
    same rows, so the fusion sees truly paired inputs. Both streams get ``min`` of the two tasks'
    half batch sizes (cross-attention pairs rows). Rows of each task are drawn without replacement
    from a reshuffled permutation, wrapping around when used up. An epoch has as many steps as one
    pass over every task in full batches. With a single modality there is nothing to pair, and each
    step is one single-stream batch of it. A ``joint`` task (its target a relation between its
    modalities) is never fused with another task's stream, where its label would be noise: once
    drawn, it is paired with another of its own modalities on the same rows.
    """

    def __init__(self, data: dict[str, TaskTensors], batch_sizes: dict[str, int], alpha: float = 0.0) -> None:
        self.data, self.batch_sizes, self.alpha = data, batch_sizes, alpha
        self.steps = sum(d.num_batches(batch_sizes[n]) for n, d in data.items())

    def _owners(self, active: set[str]) -> dict[str, list[str]]:
        """Each modality → the active tasks that have it."""
        owners: dict[str, list[str]] = {}
        for name, d in self.data.items():
            if name in active:
                for m in d.task.modalities:
                    owners.setdefault(m, []).append(name)
        return owners

    def __len__(self) -> int:
        return self.steps

    def epoch(self, rng: np.random.Generator, active: set[str] | None = None) -> Iterator[list[Piece]]:
        owners = self._owners(set(self.data) if active is None else active)
        modalities = list(owners)
        rows_of = np.array([sum(len(self.data[t]) for t in owners[m]) for m in modalities], dtype=float)
        probs = rows_of**self.alpha / (rows_of**self.alpha).sum() if modalities else None
        perms: dict[str, torch.Tensor] = {}
        cursor: dict[str, int] = {}

        def rows(task: str, n: int) -> torch.Tensor:
            """The next ``n`` rows of ``task``'s permutation, which goes to the data's device once per
            pass over the task rather than once per batch."""
            out = []
            while n > 0:
                if cursor.get(task, math.inf) >= len(perms.get(task, ())):
                    data = self.data[task]
                    perms[task], cursor[task] = torch.as_tensor(rng.permutation(len(data))).to(data.y.device), 0
                take = perms[task][cursor[task] : cursor[task] + n]
                cursor[task] += len(take)
                out.append(take)
                n -= len(take)
            return out[0] if len(out) == 1 else torch.cat(out)

        for _ in range(self.steps):
            if not modalities:
                yield []
                continue
            if len(modalities) < 2:
                (m,) = modalities
                task = owners[m][int(rng.integers(len(owners[m])))]
                yield [Piece(task, m, self.data[task].batch(rows(task, self.batch_sizes[task])))]
                continue
            ia, ib = rng.choice(len(modalities), 2, replace=False, p=probs)
            ma, mb = modalities[ia], modalities[ib]
            ta = owners[ma][int(rng.integers(len(owners[ma])))]
            tb = owners[mb][int(rng.integers(len(owners[mb])))]
            joint = next((t for t in (ta, tb) if self.data[t].task.joint), None)
            if joint is not None and not ta == tb == joint:
                ma = ma if ta == joint else mb
                own = [m for m in self.data[joint].task.modalities if m != ma]
                ta, tb, mb = joint, joint, own[int(rng.integers(len(own)))]
            half = max(min(self.batch_sizes[ta], self.batch_sizes[tb]) // 2, 1)
            idx_a = rows(ta, half)
            idx_b = idx_a if ta == tb else rows(tb, half)
            yield [Piece(ta, ma, self.data[ta].batch(idx_a)), Piece(tb, mb, self.data[tb].batch(idx_b))]

    def memory_plan(self) -> tuple[list[tuple[str, ...]], dict[str, int]]:
        """Any two tasks may share a step, each with half its batch (costs are measured per whole task,
        so this over-estimates a one-modality stream of a multimodal task)."""
        names = list(self.data)
        steps = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] or [(names[0],)]
        return steps, {n: max(b // 2, 1) for n, b in self.batch_sizes.items()}


def create_sampler(name: str, data: dict[str, TaskTensors], batch_sizes: dict[str, int], alpha: float):
    if not data:
        raise HighmodalError("no task to train")
    return SAMPLERS.get(name)(data, batch_sizes, alpha)
