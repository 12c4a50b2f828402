"""Ways to assign units to parameter groups: the heterogeneity-aware one and the paper's
ablations (Table 5: share none / unimodal only / crossmodal only / all, random groups, groups by
feature difference instead of transfer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from highmodal.errors import HighmodalError
from highmodal.heterogeneity.clustering import groups
from highmodal.models.base import MultitaskModel
from highmodal.models.groups import crossmodal_units, unimodal_units
from highmodal.registry import Registry
from highmodal.tasks import TaskSuite
from highmodal.training.batching import TaskTensors
from highmodal.training.checkpoint import load


@dataclass
class GroupingContext:
    suite: TaskSuite
    report: dict  # heterogeneity.json
    k: dict[str, int]  # {"unimodal": k_u, "crossmodal": k_c}
    seed: int
    shared_run: Path | None = None  # the homogeneous model's run (loaded only for feature differences)


Grouping = dict[str, dict[str, int]]  # {"unimodal_groups": {unit: g}, "crossmodal_groups": {...}}
GROUPINGS: Registry[Callable[[GroupingContext], Grouping]] = Registry("grouping")
FIELDS = {"unimodal": "unimodal_groups", "crossmodal": "crossmodal_groups"}


def _units(ctx: GroupingContext, kind: str) -> list[str]:
    tasks = [td.task for td in ctx.suite]
    return unimodal_units(tasks) if kind == "unimodal" else crossmodal_units(tasks)


def _per_task(ctx: GroupingContext, kind: str) -> dict[str, int]:
    order: dict[str, int] = {}
    return {u: order.setdefault(u.split("/")[0], len(order)) for u in _units(ctx, kind)}


def _measured(ctx: GroupingContext, kind: str, k: int) -> dict[str, int]:
    res = ctx.report.get(kind, {})
    if "skipped" in res or not res:
        return {}
    return dict(zip(res["units"], res["groups"][str(min(k, len(res["units"])))], strict=True))


@GROUPINGS.register("share_all")
def share_all(ctx: GroupingContext) -> Grouping:
    return {}


@GROUPINGS.register("share_none")
def share_none(ctx: GroupingContext) -> Grouping:
    """One encoder and one crossmodal block per task: per-task models trained side by side."""
    return {FIELDS[k]: _per_task(ctx, k) for k in FIELDS}


@GROUPINGS.register("share_unimodal")
def share_unimodal(ctx: GroupingContext) -> Grouping:
    return {"crossmodal_groups": _per_task(ctx, "crossmodal")}


@GROUPINGS.register("share_crossmodal")
def share_crossmodal(ctx: GroupingContext) -> Grouping:
    return {"unimodal_groups": _per_task(ctx, "unimodal")}


@GROUPINGS.register("heterogeneity_aware")
def heterogeneity_aware(ctx: GroupingContext) -> Grouping:
    """Clusters of the (completed) transfer-based heterogeneity matrices."""
    return {FIELDS[kind]: _measured(ctx, kind, ctx.k[kind]) for kind in FIELDS}


@GROUPINGS.register("random_groups")
def random_groups(ctx: GroupingContext) -> Grouping:
    """The heterogeneity-aware group sizes, with units shuffled among them (seeded): same parameters."""
    rng = np.random.default_rng(ctx.seed)
    out = {}
    for field, assign in heterogeneity_aware(ctx).items():
        units = list(assign)
        labels = [assign[u] for u in units]
        out[field] = dict(zip(units, (labels[i] for i in rng.permutation(len(units))), strict=True))
    return out


@torch.no_grad()
def _features(model: MultitaskModel, suite: TaskSuite, kind: str, n: int = 256) -> dict[str, np.ndarray]:
    """Mean representation of each unit in the shared model: encoder latents per modality, the
    crossmodal outputs (both directions) per pair."""
    model.eval()
    out = {}
    for td in suite:
        t = td.task
        batch = TaskTensors(t, td.splits["train"]).batch(slice(0, n))
        latents = dict(zip(t.modalities, model.encode(batch, t.modalities), strict=True))
        if kind == "unimodal":
            out.update({f"{t.name}/{m}": z.mean(0).flatten().numpy() for m, z in latents.items()})
            continue
        mods = list(t.modalities)
        for i in range(len(mods)):
            for j in range(i + 1, len(mods)):
                y = model.crossmodal.pair_outputs([latents[mods[i]], latents[mods[j]]], [(0, 1), (1, 0)])
                out[f"{t.name}/{mods[i]}+{mods[j]}"] = y.mean(1).flatten().numpy()
    return out


@GROUPINGS.register("feature_groups")
def feature_groups(ctx: GroupingContext) -> Grouping:
    """The paper's 'feature difference' baseline: ‖mean U(X_i) − mean U(X_j)‖² in the jointly
    trained model instead of transfer, clustered into the same number of groups."""
    model = load(ctx.shared_run)
    out = {}
    for kind, field in FIELDS.items():
        feats = _features(model, ctx.suite, kind)
        if len(feats) < 2:
            continue
        names = list(feats)
        x = np.stack([feats[u] for u in names])
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        out[field] = dict(zip(names, groups(d, ctx.k[kind]), strict=True))
    return out


def read_groups(path: Path) -> dict:
    """The ``unimodal_groups`` / ``crossmodal_groups`` of a groups JSON (as ``highmodal heterogeneity`` writes)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HighmodalError(f"{path}: groups file not found") from None
    except json.JSONDecodeError as e:
        raise HighmodalError(f"{path}: not valid JSON ({e})") from None
    keys = ("unimodal_groups", "crossmodal_groups")
    if not isinstance(data, dict) or not any(k in data for k in keys):
        raise HighmodalError(f"{path}: expected a JSON object with {' and/or '.join(keys)}")
    return {k: data[k] for k in keys if k in data}
