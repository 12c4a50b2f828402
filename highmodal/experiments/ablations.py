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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from highmodal.config import AUTO_EPOCHS, ExperimentConfig
from highmodal.experiments.run import seed_runs
from highmodal.experiments.stats import sample_std
from highmodal.heterogeneity.grouping import GROUPINGS, GroupingContext
from highmodal.report import table, write_report
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
    """Train every variant for ``seeds`` seeds (``out/<variant>/seed<s>``, the homogeneous models in
    ``out/shared-<tag>/seed<s>``); ``{variant: {mean, std, seeds, params, skills, groups}}`` with
    skill in points (the suite's mean test skill × 100)."""
    # The homogeneous pre-training's epochs, a number so "no pre-training" can get the same total budget.
    pretrain = base.train.epochs if base.train.epochs is not None else AUTO_EPOCHS
    shared: dict[str, list[Path]] = {}

    def homogeneous(tag: str, options: dict) -> list[Path]:
        """The homogeneous model of every seed, trained once per ``tag``."""
        if tag not in shared:
            log(f"homogeneous pre-training ({tag})")
            seed_runs(lambda s: _experiment(base, f"shared-{tag}", base.seed + s, pretrain, options), seeds,
                      out / f"shared-{tag}", config_dir, None, suite, overwrite=True, progress=progress, log=log)
            shared[tag] = [out / f"shared-{tag}" / f"seed{s}" for s in range(seeds)]
        return shared[tag]

    rows: dict[str, dict] = {}
    for v in variants:
        inits = None if v.init == "scratch" else homogeneous(*((v.name, v.options) if v.init == "own" else ("all", {})))
        groupings: list[dict] = []

        def make(s: int, v=v, inits=inits, groupings=groupings) -> ExperimentConfig:
            init = inits[s] if inits else None
            groupings.append(GROUPINGS.get(v.grouping)(GroupingContext(suite, report, v.k or default_k,
                                                                       base.seed + s, init)))
            epochs = finetune_epochs if init else pretrain + finetune_epochs
            log(f"seed {base.seed + s}: {v.name}")
            return _experiment(base, v.name, base.seed + s, epochs, {**v.options, **groupings[-1]})

        runs = seed_runs(make, seeds, out / v.name, config_dir, None, suite, overwrite=True, progress=progress,
                         log=log, init=None if inits is None else inits.__getitem__)
        skills = [100 * aggregate(results) for results, _ in runs]
        rows[v.name] = {"skills": skills, "params": runs[-1][1]["params"], "groups": groupings[-1],
                        "mean": float(np.mean(skills)), "std": sample_std(skills), "seeds": len(skills)}
    return rows


def formed(grouping: dict[str, dict[str, int]]) -> str:
    """Groups actually formed: clustering merges tied units, so asking for k can give fewer."""
    return "U {}, C {}".format(*(len(set(grouping.get(f, {}).values())) or 1
                                 for f in ("unimodal_groups", "crossmodal_groups")))


def markdown(rows: dict[str, dict]) -> str:
    return "\n".join(table(["variant", "groups formed", "mean skill (points)", "std", "seeds", "parameters"], [
        [name, formed(r["groups"]), f"{r['mean']:.2f}", f"{r['std']:.2f}", r["seeds"], f"{r['params']:,}"]
        for name, r in rows.items()], "llrrrr"))


def write(rows: dict[str, dict], out: Path, stem: str, command: str) -> None:
    write_report(out, stem, {"command": command, "variants": rows}, f"`{command}`\n\n{markdown(rows)}\n")
