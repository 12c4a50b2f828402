"""Predictions for raw inputs from a file: the library side of ``highmodal predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from highmodal.data.byo import open_npz
from highmodal.data.inputs import read_inputs
from highmodal.errors import HighmodalError
from highmodal.models.base import MultitaskModel


def predict_file(
    model: MultitaskModel, task_name: str, path: Path, batch_size: int = 256, modalities: list[str] | None = None,
    entry: dict | None = None,
) -> tuple[list, list]:
    """Read ``path``, validate it against the model's specs and return a table: header and rows.
    ``path`` is either an .npz with one array per modality named as in the model (optional
    ``<name>_mask``), or, given the task's training config ``entry``, a file in that source's own
    format read with the same options (``data/inputs.py``). Classification rows hold the label
    name and one probability per class; regression rows the values. ``modalities`` (a non-empty
    subset of the task's) predicts from those inputs only."""
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
    outs = [model.predict({k: v[i : i + batch_size] for k, v in batch.items()}, task.name)
            for i in range(0, sizes.pop(), batch_size)]
    pred = torch.cat([o["pred"] for o in outs]).numpy()
    if task.is_classification:
        prob = torch.cat([o["probs"] for o in outs]).numpy()
        header = ["index", "prediction", *[f"prob_{c}" for c in task.class_names]]
        return header, [[i, task.class_names[p], *np.round(prob[i], 6)] for i, p in enumerate(pred)]
    header = ["index", *[f"prediction_{k}" for k in range(task.out_dim)]]
    return header, [[i, *row] for i, row in enumerate(pred.reshape(len(pred), -1))]


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
