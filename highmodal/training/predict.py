"""Predictions for raw inputs from a file: the library side of ``highmodal predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from highmodal.data.byo import open_npz
from highmodal.errors import HighmodalError
from highmodal.models.base import MultitaskModel


def predict_npz(
    model: MultitaskModel, task_name: str, path: Path, batch_size: int = 256, modalities: list[str] | None = None,
) -> tuple[list, list]:
    """Read ``path`` (one array per modality, named as in the model; optional ``<name>_mask``),
    validate it against the model's specs and return a table: header and rows. Classification
    rows hold the label name and one probability per class; regression rows the values.
    ``modalities`` (a non-empty subset of the task's) predicts from those inputs only."""
    task = model.task(task_name)
    names = list(task.modalities) if modalities is None else modalities
    unknown = [m for m in names if m not in task.modalities]
    if unknown or not names:
        raise HighmodalError(f"--modalities {','.join(names)}: task {task.name!r} takes a non-empty subset of "
                             f"{', '.join(task.modalities)}")
    arrays = open_npz(path)
    specs = {s.name: s for s in model.specs}
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
