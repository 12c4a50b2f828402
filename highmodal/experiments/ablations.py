"""Grouped fine-tuning experiments: the ablation table (HighMMT Table 5) and the Pareto sweep over
the number of parameter groups (Table 2, Figure 6), each over several seeds.

Every seed trains one homogeneous model on the whole suite (HighMMT's multitask pre-training), then
each variant fine-tunes its own grouping of that model for the same number of epochs; 'share_all'
is fine-tuned too, so extra training never explains a difference. Variants that change what
pre-training sees (no modality embeddings) pre-train their own homogeneous model; 'no_pretraining'
trains the heterogeneity-aware grouping from scratch for pre-training + fine-tuning epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from highmodal.config import AUTO_EPOCHS, ExperimentConfig
from highmodal.experiments.run import train_experiment
from highmodal.experiments.stats import sample_std
from highmodal.fileio import atomic_write_text
from highmodal.heterogeneity.grouping import GROUPINGS, GroupingContext
from highmodal.tasks import TaskSuite
from highmodal.training.evaluation import aggregate


@dataclass
class GroupingVariant:
    name: str
    grouping: str
    init: str = "shared"  # shared: fine-tune the homogeneous model; own: pre-train one with `options`; scratch
    options: dict = field(default_factory=dict)
    k: dict[str, int] | None = None  # group counts (default: the heterogeneity config's)


ABLATIONS = [
    GroupingVariant("heterogeneity_aware", "heterogeneity_aware"),
    GroupingVariant("share_all", "share_all"),
    GroupingVariant("share_none", "share_none"),
    GroupingVariant("share_unimodal", "share_unimodal"),
    GroupingVariant("share_crossmodal", "share_crossmodal"),
    GroupingVariant("random_groups", "random_groups"),
    GroupingVariant("feature_groups", "feature_groups"),
    GroupingVariant("no_modality_embedding", "heterogeneity_aware", init="own", options={"modality_embedding": False}),
    GroupingVariant("no_pretraining", "heterogeneity_aware", init="scratch"),
]


def pareto_variants(report: dict) -> list[GroupingVariant]:
    """k = 1, 2, 4, … groups of each kind (capped at the number of units) up to all separate."""
    sizes = {kind: len(report[kind]["units"]) if "units" in report[kind] else 1 for kind in ("unimodal", "crossmodal")}
    ladder, t = [], 1
    while True:
        k = {kind: min(t, n) for kind, n in sizes.items()}
        if k not in ladder:
            ladder.append(k)
        if all(k[kind] == n for kind, n in sizes.items()):
            break
        t *= 2
    return [GroupingVariant(f"k_u={k['unimodal']},k_c={k['crossmodal']}", "heterogeneity_aware", k=k) for k in ladder]


def _experiment(base: ExperimentConfig, name: str, seed: int, epochs: int, options: dict) -> ExperimentConfig:
    cfg = copy.deepcopy(base)
    cfg.name, cfg.seed = name, seed
    cfg.model.options = {**cfg.model.options, **options}
    cfg.train = dataclasses.replace(cfg.train, epochs=epochs)
    return cfg


def compare(base: ExperimentConfig, config_dir: Path, suite: TaskSuite, report: dict, variants: list[GroupingVariant],
            seeds: int, finetune_epochs: int, default_k: dict[str, int], out: Path, progress: bool = True,
            log=print) -> dict:
    """Train every variant for ``seeds`` seeds; ``{variant: {mean, std, seeds, params, skills, groups}}``
    with skill in points (the suite's mean test skill × 100)."""
    rows: dict[str, dict] = {v.name: {"skills": [], "params": None, "groups": None} for v in variants}
    # The homogeneous pre-training's epochs, a number so "no pre-training" can get the same total budget.
    pretrain = base.train.epochs if base.train.epochs is not None else AUTO_EPOCHS
    for s in range(seeds):
        seed = base.seed + s
        root = out / f"seed{s}"
        shared: dict[str, Path] = {}

        for v in variants:
            init = None
            if v.init != "scratch":
                tag, options = (v.name, v.options) if v.init == "own" else ("all", {})
                if tag not in shared:
                    log(f"seed {seed}: homogeneous pre-training ({tag})")
                    exp = _experiment(base, f"shared-{tag}", seed, pretrain, options)
                    shared[tag], _, _ = train_experiment(exp, root / f"shared-{tag}", config_dir, overwrite=True,
                                                         progress=progress, log=log, suite=suite)
                init = shared[tag]
            ctx = GroupingContext(suite, report, v.k or default_k, seed, init)
            grouping = GROUPINGS.get(v.grouping)(ctx)
            epochs = finetune_epochs if init else pretrain + finetune_epochs
            log(f"seed {seed}: {v.name}")
            exp = _experiment(base, v.name, seed, epochs, {**v.options, **grouping})
            _, results, summary = train_experiment(exp, root / v.name, config_dir, overwrite=True, progress=progress,
                                                   log=log, suite=suite, init=init)
            rows[v.name]["skills"].append(100 * aggregate(results))
            rows[v.name]["params"] = summary["params"]
            rows[v.name]["groups"] = grouping
    for row in rows.values():
        row.update(mean=float(np.mean(row["skills"])), std=sample_std(row["skills"]), seeds=len(row["skills"]))
    return rows


def formed(grouping: dict[str, dict[str, int]]) -> str:
    """Groups actually formed: clustering merges tied units, so asking for k can give fewer."""
    return "U {}, C {}".format(*(len(set(grouping.get(f, {}).values())) or 1
                                 for f in ("unimodal_groups", "crossmodal_groups")))


def markdown(rows: dict[str, dict]) -> str:
    lines = ["| variant | groups formed | mean skill (points) | std | seeds | parameters |",
             "|---|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {formed(r['groups'])} | {r['mean']:.2f} | {r['std']:.2f} | {r['seeds']} | "
                     f"{r['params']:,} |")
    return "\n".join(lines)


def write(rows: dict[str, dict], out: Path, stem: str, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.json", json.dumps({"command": command, "variants": rows}, indent=1))
    atomic_write_text(out / f"{stem}.md", f"`{command}`\n\n{markdown(rows)}\n")
