"""The transfer runs behind a heterogeneity matrix (HighMMT Eq. 1–4, 6–8).

A *unit* is one modality of one task (unimodal heterogeneity) or one modality pair of a multimodal
task (interaction heterogeneity), posed as its own task. One HighMMT is defined over every unit of a
kind, so all units share the standardised input width and one initialisation; a run trains it on a
single unit. ``L*_j`` is unit j's validation loss after training from that initialisation, and
``L*_{i→j}`` the same after starting from unit i's trained encoder (and crossmodal block, for
pairs) with a fresh head. Runs are independent and seeded, so they go to a pool of worker
processes (each with its share of the CPU threads) and give the same numbers in any order.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from itertools import combinations
from multiprocessing import get_context

import numpy as np
import torch
from tqdm import tqdm

from highmodal.config import TrainConfig
from highmodal.models.registry import create_model
from highmodal.tasks import SplitData, TaskData, TaskSuite
from highmodal.training.evaluation import mean_loss
from highmodal.training.trainer import Trainer


def unit_suite(suite: TaskSuite, kind: str) -> TaskSuite | None:
    """Each unimodal (``kind="unimodal"``) or crossmodal unit as a task named ``task/modality`` or
    ``task/a+b``; None when the suite has fewer than two units of that kind."""
    units = []
    for td in suite:
        t = td.task
        subsets = [(m,) for m in t.modalities] if kind == "unimodal" else list(combinations(t.modalities, 2))
        for mods in subsets:
            name = f"{t.name}/{'+'.join(mods)}"
            splits = {s: SplitData({m: d.inputs[m] for m in mods}, d.y, {m: v for m, v in d.masks.items() if m in mods})
                      for s, d in td.splits.items()}
            units.append(TaskData(replace(t, name=name, modalities=mods, weight=1.0), td.specs, splits, td.source))
    return TaskSuite(units) if len(units) > 1 else None


def chance_loss(td: TaskData) -> float:
    """Validation loss of the best input-blind predictor fitted on training labels: cross-entropy of
    the training class frequencies, or MSE of the training mean on standardised targets."""
    y_train, y_val = td.splits["train"].y, td.splits["val"].y
    if td.task.is_classification:
        prior = np.bincount(y_train, minlength=td.task.out_dim) + 1.0  # add-one: unseen classes stay finite
        prior /= prior.sum()
        return float(-np.log(prior[y_val]).mean())
    std = np.asarray(td.task.target_std if td.task.target_std is not None else y_train.std(0))
    return float((((y_val - y_train.mean(0)) / std) ** 2).mean())


@dataclass
class RunSettings:
    """What every transfer run shares: the unit suite, the architecture and the optimisation."""

    suite: TaskSuite
    preset: str
    options: dict
    train: TrainConfig
    seed: int
    threads: int


@dataclass
class Job:
    target: str
    source: str | None = None  # None: train from the shared initialisation (L*_target)


_SETTINGS: RunSettings | None = None
_STATES: dict[str, dict[str, torch.Tensor]] = {}


def _init(settings: RunSettings, states: dict[str, dict[str, torch.Tensor]]) -> None:
    global _SETTINGS, _STATES
    _SETTINGS, _STATES = settings, states
    torch.set_num_threads(settings.threads)


def _run(job: Job) -> tuple[Job, float, dict[str, torch.Tensor] | None, float]:
    s = _SETTINGS
    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    model = create_model("highmmt", s.suite.specs, [td.task for td in s.suite], preset=s.preset, **s.options)
    if job.source is not None:
        model.load_state_dict(_STATES[job.source], strict=False)
    one = TaskSuite([s.suite[job.target]])
    trainer = Trainer(model, one, s.train, s.seed, progress=False)
    trainer.fit()
    loss = mean_loss(model, trainer.val_data[job.target], s.train.eval_batch_size)
    state = None
    if job.source is None:  # a source for later transfers: everything but the task heads
        state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("heads.")}
    return job, loss, state, time.perf_counter() - t0


def run_jobs(settings: RunSettings, jobs: list[Job], workers: int, desc: str,
             states: dict[str, dict[str, torch.Tensor]] | None = None, progress: bool = True) -> list[tuple]:
    """Run ``jobs`` (in a process pool when ``workers`` > 1); results in job order."""
    states = states or {}
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress, leave=False)
    try:
        if workers <= 1:
            _init(settings, states)
            results = []
            for job in jobs:
                results.append(_run(job))
                bar.update()
            return results
        ctx = get_context("spawn")  # fork after torch has started threads can deadlock
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(settings, states)) as pool:
            futures = {pool.submit(_run, job): i for i, job in enumerate(jobs)}
            results = [None] * len(jobs)
            for f in as_completed(futures):
                results[futures[f]] = f.result()
                bar.update()
            return results
    finally:
        bar.close()


def worker_threads(workers: int) -> int:
    """Threads per pool worker: this process's CPUs shared out, one at least (never cores × workers)."""
    from highmodal.runtime import available_cpus

    return max(1, available_cpus() // max(workers, 1))


def settings_for(suite: TaskSuite, preset: str, options: dict, train: TrainConfig, epochs: int, seed: int,
                 workers: int) -> RunSettings:
    cfg = dataclasses.replace(train, epochs=epochs, checkpoint_every=0, modality_dropout=0.0, threads=None)
    return RunSettings(suite, preset, options, cfg, seed, worker_threads(workers))
