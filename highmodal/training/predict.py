"""Predictions for raw inputs from a file: the library side of ``highmodal predict``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from highmodal.data.byo import open_npz
from highmodal.data.inputs import read_inputs
from highmodal.errors import HighmodalError
from highmodal.models.base import MultitaskModel
from highmodal.training.engines import ENGINES, Run, checked
from highmodal.training.export import TaskAdapter

# `--runtime auto` leaves out the compiled engines: their set-up (tens of seconds) rarely pays in one call
AUTO_SKIPS = ("compile", "compile-bf16")


class Predictions(NamedTuple):
    header: list
    rows: list
    runtime: str
    difference: float  # the runtime's scaled max |difference| from eager on the first batch


def choose_runtime(adapter: TaskAdapter, first: tuple[torch.Tensor, ...]) -> tuple[str, Run, float]:
    """``--runtime auto``: every engine that can run here (but ``AUTO_SKIPS``) and stays within its
    tolerance on the first batch, timed on that batch; the fastest wins, eager when none beats it."""
    best: tuple[float, str, Run, float] | None = None
    for name, engine in ENGINES.items():
        if name in AUTO_SKIPS or engine.missing("cpu"):
            continue
        try:
            run, diff = checked(name, adapter, first, adapter.input_names, [adapter.output])
        except HighmodalError:
            continue
        start = time.perf_counter()
        run(*first)
        elapsed = time.perf_counter() - start
        if best is None or elapsed < best[0]:
            best = (elapsed, name, run, diff)
    assert best is not None  # eager always runs
    return best[1], best[2], best[3]


def predict_file(
    model: MultitaskModel, task_name: str, path: Path, batch_size: int = 256, modalities: list[str] | None = None,
    entry: dict | None = None, runtime: str = "eager",
) -> Predictions:
    """Read ``path``, validate it against the model's specs and return a table: header and rows.
    ``path`` is either an .npz with one array per modality named as in the model (optional
    ``<name>_mask``), or, given the task's training config ``entry``, a file in that source's own
    format read with the same options (``data/inputs.py``). Classification rows hold the label
    name and one probability per class; regression rows the values. ``modalities`` (a non-empty
    subset of the task's) predicts from those inputs only. ``runtime``: an engine of
    ``training/engines.py`` (checked against eager on the first batch), or ``auto``."""
    task = model.task(task_name)
    names = list(task.modalities) if modalities is None else modalities
    unknown = [m for m in names if m not in task.modalities]
    if unknown or not names:
        raise HighmodalError(f"--modalities {','.join(names)}: task {task.name!r} takes a non-empty subset of "
                             f"{', '.join(task.modalities)}")
    specs = {s.name: s for s in model.specs}
    read = None if entry is None else read_inputs(entry, path, {m: specs[m] for m in task.modalities})
    arrays = open_npz(path) if read is None else read[0] | {f"{m}_mask": mask for m, mask in read[1].items()}
    batch = {}
    for name in names:
        if name not in arrays:
            raise HighmodalError(f"{path}: needs an array named {name!r} for task {task.name!r} "
                                 f"(found: {', '.join(arrays) or 'none'})")
        x = arrays[name]
        if x.ndim == len(specs[name].shape) and specs[name].channels == 1:
            x = x[..., None]
        specs[name].validate(x, str(path))
        batch[name] = torch.as_tensor(x, dtype=torch.float32)
        if f"{name}_mask" in arrays:
            batch[f"{name}_mask"] = torch.as_tensor(arrays[f"{name}_mask"], dtype=torch.bool)
    sizes = {len(v) for v in batch.values()}
    if len(sizes) != 1:
        raise HighmodalError(f"{path}: arrays hold different numbers of samples: {sorted(sizes)}")
    adapter = TaskAdapter(model, task.name, list(batch)).eval()
    chunks = [tuple(v[i : i + batch_size] for v in batch.values()) for i in range(0, sizes.pop(), batch_size)]
    if runtime == "auto":
        runtime, run, diff = choose_runtime(adapter, chunks[0])
    else:
        run, diff = checked(runtime, adapter, chunks[0], adapter.input_names, [adapter.output])
    out = torch.cat([run(*chunk)[0] for chunk in chunks])
    if task.is_classification:
        prob = out.numpy()
        header = ["index", "prediction", *[f"prob_{c}" for c in task.class_names]]
        rows = [[i, task.class_names[p], *np.round(prob[i], 6)] for i, p in enumerate(prob.argmax(-1))]
        return Predictions(header, rows, runtime, diff)
    header = ["index", *[f"prediction_{k}" for k in range(task.out_dim)]]
    return Predictions(header, [[i, *row] for i, row in enumerate(out.numpy().reshape(len(out), -1))], runtime, diff)


def training_entry(run_dir: Path, task: str) -> dict | None:
    """The task's entry in the run's resolved ``config.yaml`` (None when the run has none)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        tasks = (yaml.safe_load(path.read_text()) or {}).get("tasks") or []
    except yaml.YAMLError as e:
        raise HighmodalError(f"{path}: not readable YAML ({e})") from None
    return next((t for t in tasks if isinstance(t, dict) and t.get("name") == task), None)
