"""``highmodal bench scaling``: how HighMMT's training time grows with the number of tasks, the
sequence length and the batch size, on the ``highmmt-4task`` workload of ``bench speed``, for
docs/performance.md.

Three curves, each changing one thing of the workload and keeping the rest:

- ``tasks``: the first k tasks only, with only the modalities they use;
- ``length``: the sequence modalities (``SEQUENCES``, 50 steps in the workload) set to L steps;
- ``batch``: the samples per task in a step.

Epoch: ``rows`` rows of every task pass through training once, so an epoch is
``steps_per_epoch = ceil(rows / batch)`` train steps of ``bench speed`` (one batch of every task,
weighted cross-entropy sum, one backward, one Adam step) and ``epoch_s = steps_per_epoch × step_s``.
A last, smaller batch counts as a full one; the default 512 rows is a multiple of every default
batch, so there it is exact. Timing a few steps instead of whole epochs keeps a curve cheap, and
the step time is what an epoch is made of: inputs are synthetic, with no data loading to add.

``step_s`` follows ``bench speed``'s conventions: ``max(warmup, 2)`` untimed steps, then ``repeats``
timed runs of ``steps`` steps each (``time.perf_counter``), the median run's time per step. With
the reference implementation as well, the two models' runs alternate at each point, so a drifting
load slows both alike. ``samples_per_s`` counts batch × tasks per step; ``tokens_per_sample`` is
each task's input positions (the sum of its modalities' positions), the length the encoder's
cross-attention reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from highmodal import __version__
from highmodal.bench.speed import (
    Runner,
    Settings,
    Workload,
    _clock,
    count_params,
    get_workload,
    make_runner,
    reference_class,
    synthetic_batches,
)
from highmodal.errors import HighmodalError, did_you_mean
from highmodal.fileio import atomic_write_text, refuse_to_replace

CURVES = ("tasks", "length", "batch")
# The workload's 50-step sequence modalities (MOSEI's and UR-FUNNY's video, audio and GloVe text).
SEQUENCES = ("feature1", "feature2", "feature3", "feature4", "feature5")
TASK_COUNTS = (1, 2, 3, 4)
LENGTHS = (25, 50, 100, 200, 400)
BATCHES = (8, 16, 32, 64, 128)
RESULT_FILE = "scaling.json"
# Per curve: the x axis label, whether it doubles (log2 axis), and the throughput to plot beside epoch time.
AXES = {
    "tasks": ("tasks in a step (the workload's first k)", False, "samples_per_s", "samples / s (all tasks)"),
    "length": (f"length of {SEQUENCES[0]}..{SEQUENCES[-1]} (time steps)", True, "tokens_per_s",
               "input tokens / s (all tasks)"),
    "batch": ("batch size (samples per task in a step)", True, "samples_per_s", "samples / s (all tasks)"),
}


def first_tasks(workload: Workload, k: int) -> Workload:
    """The workload cut to its first ``k`` tasks and the modalities they use (in the workload's order)."""
    tasks = workload.tasks[:k]
    used = {m for t in tasks for m in t.modalities}
    return dataclasses.replace(workload, tasks=tasks, specs=tuple(s for s in workload.specs if s.name in used))


def with_length(workload: Workload, length: int, names: Sequence[str] = SEQUENCES) -> Workload:
    """The workload with the sequence modalities ``names`` at ``length`` steps, channels and the rest kept."""
    specs = {s.name: s for s in workload.specs}
    for name in names:
        if name not in specs or len(specs[name].axes) != 1:
            raise HighmodalError(f"the length curve needs a sequence modality {name!r} of shape (length, channels) "
                                 f"in the workload; it has {', '.join(f'{s.name} {s.shape}' for s in workload.specs)}")
    return dataclasses.replace(workload, specs=tuple(
        dataclasses.replace(s, shape=(length, s.channels)) if s.name in names else s for s in workload.specs))


def tokens_per_sample(workload: Workload) -> dict[str, int]:
    """Input positions of one sample of each task: what the encoder's cross-attention reads, per modality."""
    specs = {s.name: s for s in workload.specs}
    return {t.name: sum(specs[m].num_positions() for m in t.modalities) for t in workload.tasks}


def _check(curves: Sequence[str], workload: Workload, tasks: Sequence[int], lengths: Sequence[int],
           batches: Sequence[int], rows: int) -> None:
    """Validate the curves and their points before anything is built; user errors are HighmodalErrors."""
    if not curves:
        raise HighmodalError(f"--curves: name at least one of {', '.join(CURVES)}")
    for curve in curves:
        if curve not in CURVES:
            raise HighmodalError(f"--curves: unknown curve {curve!r}{did_you_mean(curve, CURVES)}; "
                                 f"choose from {', '.join(CURVES)}")
    if rows < 1:
        raise HighmodalError(f"--rows must be at least 1, got {rows}")
    points = {"tasks": (tasks, len(workload.tasks)), "length": (lengths, None), "batch": (batches, None)}
    for curve in dict.fromkeys(curves):
        values, most = points[curve]
        if not values or any(v < 1 or (most is not None and v > most) for v in values):
            limit = f"between 1 and {most}" if most is not None else "at least 1"
            raise HighmodalError(f"{curve} curve: points must be {limit}, got {list(values)}")
    if "length" in curves:
        with_length(workload, 1)  # the workload has the sequence modalities to rescale


def _step_s(runner: Runner, batches: dict, targets: dict, steps: int, device: torch.device) -> float:
    start = _clock(device)
    for _ in range(steps):
        runner.train_step(batches, targets)
    return (_clock(device) - start) / steps


def _measure(workload: Workload, batch: int, impls: Sequence[str], settings: Settings,
             device: torch.device) -> dict[str, tuple[list[float], int]]:
    """Per implementation: the timed runs' seconds per step, and the parameter count."""
    batches, targets = synthetic_batches(workload, batch, device, settings.seed)
    runners = {impl: make_runner(impl, workload, device, seed=settings.seed) for impl in impls}
    for runner in runners.values():
        for _ in range(settings.warm_steps):
            runner.train_step(batches, targets)
    runs: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(settings.repeats):
        for impl, runner in runners.items():
            runs[impl].append(_step_s(runner, batches, targets, settings.steps, device))
    return {impl: (runs[impl], count_params(runners[impl].model)) for impl in impls}


def _points(curve: str, workload: Workload, tasks: Sequence[int], lengths: Sequence[int], batches: Sequence[int],
            batch: int) -> list[tuple[int, Workload, int]]:
    """(x, workload, batch) of each point of one curve."""
    if curve == "tasks":
        return [(k, first_tasks(workload, k), batch) for k in tasks]
    if curve == "length":
        return [(n, with_length(workload, n), batch) for n in lengths]
    return [(b, workload, b) for b in batches]


def run_scaling(workload: str = "highmmt-4task", curves: Sequence[str] = CURVES,
                tasks: Sequence[int] = TASK_COUNTS, lengths: Sequence[int] = LENGTHS,
                batches: Sequence[int] = BATCHES, batch: int = 32, rows: int = 512, steps: int = 2, warmup: int = 2,
                repeats: int = 3, threads: int | None = None, reference: bool = False, device: str = "cpu",
                seed: int = 0, on_point: Callable[[dict], None] | None = None) -> dict:
    """Measure the ``curves`` (of ``CURVES``) and return them with the settings, JSON-serialisable.

    ``tasks``/``lengths``/``batches``: the points of each curve; ``batch``: the batch size of the
    tasks and length curves. ``reference`` adds the original implementation at every point.
    ``on_point`` receives each point as it is measured (the CLI prints it). ``threads`` None keeps
    torch's default; ``reference`` makes the run several times as long."""
    base = get_workload(workload)
    settings = Settings(model=base.model, workload=workload, device=device, batch=batch, steps=steps, warmup=warmup,
                        repeats=repeats, threads=threads, memory=False, seed=seed)
    base, torch_device = settings.check()
    _check(curves, base, tasks, lengths, batches, rows)
    impls = ("highmodal", "reference") if reference else ("highmodal",)
    if reference:
        reference_class()  # fail before any measuring when the reference is not installed
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        result_curves: dict[str, list[dict]] = {}
        for curve in dict.fromkeys(curves):
            result_curves[curve] = []
            for x, w, b in _points(curve, base, tasks, lengths, batches, batch):
                for impl, (runs, params) in _measure(w, b, impls, settings, torch_device).items():
                    point = _point(curve, x, impl, w, b, rows, runs, params)
                    result_curves[curve].append(point)
                    if on_point is not None:
                        on_point(point)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    return {
        "benchmark": "scaling", "workload": workload, "model": base.model, "preset": base.preset,
        "epoch": f"{rows} rows of every task: ceil({rows} / batch) train steps, each one batch of every task; "
                 "epoch_s = steps_per_epoch × step_s",
        "settings": {"curves": list(dict.fromkeys(curves)), "tasks": list(tasks), "lengths": list(lengths),
                     "batches": list(batches), "batch": batch, "rows": rows, "steps": steps,
                     "warmup": settings.warm_steps, "repeats": repeats, "impls": list(impls),
                     "device": str(torch_device), "seed": seed},
        "curves": result_curves,
        "threads": used_threads, "torch": torch.__version__, "highmodal": __version__,
        "platform": platform.platform(), "seconds": time.perf_counter() - start,
    }


def _point(curve: str, x: int, impl: str, workload: Workload, batch: int, rows: int, runs: list[float],
           params: int) -> dict:
    step_s = statistics.median(runs)
    steps_per_epoch = math.ceil(rows / batch)
    tokens = tokens_per_sample(workload)
    return {
        "curve": curve, "x": x, "impl": impl, "tasks": [t.name for t in workload.tasks], "batch": batch,
        "shapes": {s.name: list(s.shape) for s in workload.specs}, "tokens_per_sample": tokens, "params": params,
        "steps_per_epoch": steps_per_epoch, "step_s": step_s, "epoch_s": steps_per_epoch * step_s,
        "samples_per_s": batch * len(workload.tasks) / step_s, "tokens_per_s": batch * sum(tokens.values()) / step_s,
        "step_runs": runs,
    }


def plot_scaling(result: dict, out_dir: str | Path) -> list[Path]:
    """One PNG per curve, ``scaling-<curve>.png``: epoch time and throughput against the curve's variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = result["settings"]
    paths = []
    for curve, points in result["curves"].items():
        xlabel, doubling, rate, rate_label = AXES[curve]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        for impl in s["impls"]:
            mine = sorted((p for p in points if p["impl"] == impl), key=lambda p: p["x"])
            xs = [p["x"] for p in mine]
            left.plot(xs, [p["epoch_s"] for p in mine], marker="o", label=impl)
            right.plot(xs, [p[rate] for p in mine], marker="o", label=impl)
        xs = sorted({p["x"] for p in points})
        for ax, ylabel in ((left, f"epoch time (s, {s['rows']} rows per task)"), (right, rate_label)):
            if doubling:
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        threads = f"{result['threads']} thread{'s' if result['threads'] != 1 else ''} on {s['device']}"
        fixed = "" if curve == "batch" else f", batch {s['batch']}"
        fig.suptitle(f"HighMMT {result['preset']}, {result['workload']}: {curve} ({threads}{fixed})", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"scaling-{curve}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder holding anything but an earlier scaling output, and that one without ``overwrite``."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise HighmodalError(f"{out}: exists and is not a directory; --out needs a folder")
    refuse_to_replace(out, overwrite)
    if not (out / RESULT_FILE).is_file():
        raise HighmodalError(f"{out}: is not a scaling output (no {RESULT_FILE}); refusing to replace it with "
                             "--overwrite, pick another --out")


def write_scaling(result: dict, out: Path) -> list[Path]:
    """``scaling.json`` and the plots in ``out``; plots of an earlier run's other curves are removed."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("scaling-*.png"):
        old.unlink()
    atomic_write_text(out / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return [out / RESULT_FILE, *plot_scaling(result, out)]
