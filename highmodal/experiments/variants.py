"""Architecture and training ablations of one of a suite's extra multitask models, over seeds.

The ``omnivec2`` study is the paper's Table 12 on our data: modality-specific vs one unified
tokenizer, and heads per modality × task vs one unified head; two more rows test the training
claims of §3.2.1: pairwise two-stream steps vs single-stream steps over all tasks (HighMMT's
staggered schedule), and DWA vs equal task weights. The ``omnivec2_paths`` study compares ways of
making the prediction path one that training optimises (``train_single``, ``inference``). Each
variant trains from scratch on the same capped suite (same samples and splits); seeds change only
the initialisation and batch order.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np

from highmodal.errors import HighmodalError, did_you_mean
from highmodal.experiments.run import seed_runs, suite_for
from highmodal.experiments.stats import seed_summary
from highmodal.experiments.suite import (
    VariantStudyConfig,
    apply_quick,
    cap_suite,
    extra_experiment,
    load_suite_config,
)
from highmodal.fileio import refuse_to_replace
from highmodal.registry import Registry
from highmodal.report import table, write_report
from highmodal.training.evaluation import aggregate


@dataclasses.dataclass
class Variant:
    name: str
    description: str
    options: dict[str, typing.Any] = dataclasses.field(default_factory=dict)  # model options
    train: dict[str, typing.Any] = dataclasses.field(default_factory=dict)  # training overrides


STUDIES: Registry[list[Variant]] = Registry("study")
STUDIES.register("omnivec2")([
    Variant("omnivec2", "modality tokenizers, modality × task heads (the paper's model)"),
    Variant("unified_tokenizer", "one unified tokenizer, modality × task heads", {"tokenizer": "unified"}),
    Variant("unified_head", "modality tokenizers, one unified head", {"head": "unified"}),
    Variant("unified_both", "one unified tokenizer, one unified head", {"tokenizer": "unified", "head": "unified"}),
    Variant("single_stream", "no modality pairs: every task each step, single stream", train={"sampler": "staggered"}),
    Variant("equal_weights", "equal task weights instead of DWA", train={"balance": "equal"}),
])
STUDIES.register("omnivec2_paths")([
    Variant("fused_then_single", "pairwise steps train the fused path only; predict single-stream h∘g∘f",
            {"train_single": False, "inference": "single"}),
    Variant("fused_then_self", "pairwise steps train the fused path only; predict each stream fused with itself",
            {"train_single": False, "inference": "self"}),
    Variant("both_then_single", "pairwise steps train the fused and the single-stream path; predict single-stream",
            {"train_single": True, "inference": "single"}),
    Variant("both_then_self", "pairwise steps train the fused and the self-fused path; predict self-fused",
            {"train_single": True, "inference": "self"}),
    Variant("single_stream", "no modality pairs: every task each step, single stream", train={"sampler": "staggered"}),
])


def run_study(suite_name: str, study: str, out: Path, data_root: Path | None, seeds: int | None = None,
              variants: list[str] | None = None, quick: bool = False, overwrite: bool = False,
              progress: bool = True, command: str = "", log=print, reuse: bool = False) -> dict:
    """``reuse``: evaluate runs already finished in ``out`` with the same settings instead of training
    them again (a study stopped part-way continues where it was)."""
    cfg, config_dir = load_suite_config(suite_name)
    s: VariantStudyConfig = cfg.variants
    chosen = STUDIES.get(study)
    if variants:
        known = {v.name: v for v in chosen}
        for name in variants:
            if name not in known:
                raise HighmodalError(f"--variants: unknown variant {name!r}{did_you_mean(name, known)}; "
                                     f"known: {', '.join(known)}")
        chosen = [known[n] for n in variants]
    extras = {e.label: e for e in cfg.models}
    if s.model not in extras:
        raise HighmodalError(f"variants.model: {s.model!r} is not a label of the suite's models: "
                             f"{', '.join(extras) or 'none'}")
    refuse_to_replace(out, overwrite or reuse, resumable=True)
    names = {t["name"] for t in cfg.tasks}
    max_train, max_eval, n_seeds = s.max_train, s.max_eval, seeds or s.seeds
    if quick:
        apply_quick(cfg)
        max_train, max_eval, n_seeds = cfg.quick.max_train, cfg.quick.max_eval, 1
    elif s.epochs:
        cfg.train.epochs = s.epochs
    base = extras[s.model]
    if s.task_options is not None:
        base = dataclasses.replace(base, task_options=s.task_options)
    exp = extra_experiment(cfg, base, quick, names)
    suite = cap_suite(suite_for(exp, config_dir, data_root), max_train, max_eval, cfg.seed)
    forecasting = {td.task.name for td in suite if td.task.forecast is not None}
    rows = []
    for v in chosen:
        runs = seed_runs(lambda seed, v=v: dataclasses.replace(
            exp, name=f"{v.name}-{seed}", seed=seed,
            model=dataclasses.replace(exp.model, options=exp.model.options | v.options),
            train=dataclasses.replace(exp.train, **v.train)), n_seeds, out / v.name, config_dir, data_root, suite,
            reuse, overwrite, progress, log)
        skills = [{task: 100 * r["skill"] for task, r in results.items()} for results, _ in runs]
        val_scores = [100 * summary["best_val_score"] for _, summary in runs]
        params, seconds = runs[-1][1]["params"], sum(summary["train_seconds"] for _, summary in runs)
        for seed, ((results, _), val) in enumerate(zip(runs, val_scores, strict=True)):
            log(f"{v.name} seed {seed}: validation mean skill {val:.2f}, test {100 * aggregate(results):.2f}")
        rows.append({"variant": v.name, "description": v.description, "val_scores": val_scores,
                     "val_mean": float(np.mean(val_scores))} | seed_summary(skills, forecasting)
                    | {"params": params, "seconds": seconds, "options": v.options, "train": v.train})
    report = {"command": command, "suite": suite_name, "study": study, "quick": quick, "seeds": n_seeds,
              "epochs": cfg.train.epochs, "max_train": max_train, "max_eval": max_eval,
              "model": dataclasses.asdict(exp.model), "train": dataclasses.asdict(exp.train),
              "task_options": base.task_options, "rows": rows}
    write_report(out, "variants", report, markdown(report))
    return report


def markdown(report: dict) -> str:
    return "\n".join(table(
        ["variant", "what changes", "validation mean skill (points)", "test mean skill (points)",
         "without forecasting tasks", "seeds", "parameters"],
        [[r["variant"], r["description"], f"{r['val_mean']:.2f}", f"{r['mean']:.2f} ± {r['std']:.2f}",
          f"{r['mean_without_forecasting']:.2f} ± {r['std_without_forecasting']:.2f}", len(r["scores"]),
          f"{r['params']:,}"] for r in report["rows"]], "llrrrrr")) + "\n"
