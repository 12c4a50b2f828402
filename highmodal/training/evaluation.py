"""Evaluate a model on one split of every task of a suite; one code path for train, demo and CLI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from highmodal.metrics import chance_metrics, compute_metrics, metric_names, skill
from highmodal.models.base import MultitaskModel
from highmodal.nn.losses import LOSSES
from highmodal.tasks import TaskSuite
from highmodal.training.batching import TaskTensors


@torch.no_grad()
def predict_split(
    model: MultitaskModel, data: TaskTensors, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    preds, probs = [], []
    for batch in data.ordered(batch_size):
        out = model.predict(batch, data.task.name)
        preds.append(out["pred"].cpu())
        if "probs" in out:
            probs.append(out["probs"].cpu())
    return torch.cat(preds).numpy(), (torch.cat(probs).numpy() if probs else None)


@torch.no_grad()
def mean_loss(model: MultitaskModel, data: TaskTensors, batch_size: int) -> float:
    """The training loss averaged over a split (the L* of HighMMT's transfer measures)."""
    was_training = model.training
    model.eval()
    loss = LOSSES.get(data.task.target)
    total = sum(float(loss(model(b, data.task.name), b["target"])) * len(b["target"]) for b in data.ordered(batch_size))
    model.train(was_training)
    return total / len(data)


def evaluate_suite(
    model: MultitaskModel, suite: TaskSuite, split: str, batch_size: int = 256, device: str = "cpu",
    tensors: dict[str, TaskTensors] | None = None, modalities: set[str] | None = None, predictions: bool = False,
) -> dict[str, dict]:
    """``{task: {"modalities", "metrics", "chance", "primary", "skill"}}`` on ``split``, plus the
    rows' ``pred``, ``probs`` and labels ``y`` with ``predictions`` (for intervals and paired tests).

    ``modalities`` restricts every task to those inputs (the others are withheld from the model);
    tasks left with none of their modalities are skipped."""
    results = {}
    for td in suite:
        t = td.task
        if modalities is not None:
            kept = tuple(m for m in t.modalities if m in modalities)
            if not kept:
                continue
            t = replace(t, modalities=kept)
        data = tensors[t.name] if tensors is not None else TaskTensors(t, td.splits[split], device)
        pred, probs = predict_split(model, data, batch_size)
        y = td.splits[split].y
        values = compute_metrics(t, y, pred, probs)
        chance = chance_metrics(t, td.splits["train"].y, y, td.splits[split].inputs)
        results[t.name] = {
            "modalities": [f"{m}:{td.specs[m].kind}" for m in t.modalities],
            "withheld": [m for m in td.task.modalities if m not in t.modalities],
            "primary": metric_names(t)[0],
            "metrics": values,
            "chance": chance,
            "skill": skill(t, values, chance),
            "n": len(y),
        }
        if predictions:
            results[t.name] |= {"pred": pred, "probs": probs, "y": y}
    return results


def aggregate(results: dict[str, dict]) -> float:
    """Equal-weight mean of per-task skill (HighMMT B.5 weighs tasks equally when selecting); a task
    whose metric is undefined on this split (e.g. AUROC with one class present) is left out."""
    skills = [r["skill"] for r in results.values() if not np.isnan(r["skill"])]
    return float(np.mean(skills)) if skills else float("nan")


def format_table(results: dict[str, dict], split: str) -> str:
    """A plain-text table: task, modalities, metric, value, chance."""
    rows = [("task", "modalities", "metric", "value", "chance")]
    for name, r in results.items():
        for i, (metric, value) in enumerate(r["metrics"].items()):
            rows.append((name if i == 0 else "", ", ".join(r["modalities"]) if i == 0 else "", metric,
                         f"{value:.4f}", f"{r['chance'][metric]:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"{split} metrics (chance = majority class / training mean; AUROC chance 0.5)"]
    for k, row in enumerate(rows):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
