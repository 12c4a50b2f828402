"""``highmodal transfer``: what masked pretraining buys, measured three ways against no pretraining.

1. Fine-tuning: the suite's OmniVec2 trained on every task of the capped suite from scratch, from the
   stage-1 model and from the stage-1+2 model (``train --init``), over seeds; test mean skill.
2. Few-shot, k labelled training examples per class of every task (k in all for regression): the
   whole model fine-tuned from each start, and linear probes on the frozen embeddings of a randomly
   initialised copy and of each pretrained stage.
3. Cross-modal retrieval on paired test data with the same encoders and the fine-tuned models, beside
   the simple yardstick of ``bench.baselines.simple_retrieval``.

``parts`` (config ``transfer.parts`` or ``--parts``) runs a subset of the three.

Fine-tuning and the probes use the same capped splits; seeds change only initialisation and batch
order (the pretrained weights are one run).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from highmodal.bench.baselines import simple_retrieval
from highmodal.bench.stats import seed_summary
from highmodal.bench.suite import cap_suite, reuse_run
from highmodal.data.loaders import few_shot, fit_target_scale
from highmodal.data.task import TaskSuite
from highmodal.errors import HighmodalError
from highmodal.fileio import atomic_write_text
from highmodal.models.registry import create_model
from highmodal.training.checkpoint import load
from highmodal.training.evaluation import aggregate
from highmodal.training.fewshot import fewshot
from highmodal.training.pretrain import TRANSFER_PARTS, load_pretrain_config, pretraining_suite
from highmodal.training.retrieval import retrieve
from highmodal.training.run import train_experiment


def pretrained_stages(run: Path) -> dict[str, Path]:
    """The models a pretraining run left: ``stage1`` and ``stage1_2`` (or the one stage it ran)."""
    path = run / "summary.json"
    if not path.is_file() or not (run / "model.json").is_file():
        raise HighmodalError(f"--pretrained {run}: not a finished `highmodal pretrain` run "
                             "(no summary.json and model.json)")
    stages = sorted(json.loads(path.read_text())["stages"])
    if stages == ["1", "2"]:
        return {"stage1": run / "stage1", "stage1_2": run}
    return {f"stage{stages[0]}": run}


def shot_suite(suite: TaskSuite, k: int, seed: int) -> TaskSuite:
    """k labelled training rows per class of every task (validation and test untouched)."""
    return TaskSuite([fit_target_scale(few_shot(td, k, seed, f"task {td.task.name!r}")) for td in suite])


def _finetune(exp, suite: TaskSuite, label: str, init: Path | None, seeds: int, out: Path, config_dir: Path,
              data_root: Path | None, reuse: bool, overwrite: bool, progress: bool, log, tag: str = "") -> dict:
    per_task, seconds, skills = {}, 0.0, []
    for seed in range(seeds):
        run_cfg = dataclasses.replace(exp, name=f"{label}-{seed}", seed=seed)
        where = out / label / f"seed{seed}"
        found = reuse_run(run_cfg, where, suite, log) if reuse else None
        if found is None:
            _, results, summary = train_experiment(run_cfg, where, config_dir, data_root, overwrite or reuse, progress,
                                                   log, suite=suite, init=init)
        else:
            results, summary = found
        skills.append({task: 100 * r["skill"] for task, r in results.items()})
        seconds += summary["train_seconds"]
        for task, r in results.items():
            per_task.setdefault(task, []).append(r["metrics"][r["primary"]])
        log(f"fine-tune {tag}{label} seed {seed}: test mean skill {100 * aggregate(results):.2f}")
    return seed_summary(skills, {td.task.name for td in suite if td.task.forecast is not None}) | {
        "seconds": seconds, "per_task": {t: float(np.mean(v)) for t, v in per_task.items()}}


def run_transfer(config_path: Path, pretrained: Path, out: Path, data_root: Path | None, quick: bool = False,
                 overwrite: bool = False, reuse: bool = False, progress: bool = True, command: str = "",
                 log=print, parts: list[str] | None = None) -> dict:
    cfg = load_pretrain_config(config_path, quick)
    t = cfg.transfer
    parts = list(parts or t.parts)
    for part in parts:
        if part not in TRANSFER_PARTS:
            raise HighmodalError(f"--parts: {part!r} is not one of {', '.join(TRANSFER_PARTS)}")
    if out.exists() and not overwrite and not reuse:
        raise HighmodalError(f"{out}: transfer output exists; pass --reuse to continue it or --overwrite to replace it")
    stages = pretrained_stages(pretrained)
    exp, suite_dir, suite = pretraining_suite(cfg, config_path.parent, data_root, quick)
    if t.epochs:
        exp.train.epochs = t.epochs
    full, suite = suite, cap_suite(suite, t.max_train, t.max_eval, exp.seed)
    tasks = {td.task.name: td for td in suite}
    for r in t.retrieval:
        if r.task not in tasks:
            raise HighmodalError(f"transfer.retrieval: unknown task {r.task!r}; tasks: {', '.join(tasks)}")
    starts = {"scratch": None, **stages}
    finetune = {label: _finetune(exp, suite, label, init, t.seeds, out / "finetune", suite_dir, data_root, reuse,
                                 overwrite, progress, log)
                for label, init in starts.items()} if "finetune" in parts else {}
    shot_exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, epochs=t.shot_epochs))
    shot_runs = {}
    for k in t.shots if "fewshot" in parts else []:
        few = cap_suite(shot_suite(full, k, exp.seed), t.max_train, t.max_eval, exp.seed)
        for label, init in starts.items():
            row = _finetune(shot_exp, few, label, init, t.shot_seeds, out / f"shots{k}", suite_dir, data_root, reuse,
                            overwrite, progress, log, f"{k}-shot ")
            shot_runs.setdefault(label, {})[k] = row["mean"]
    torch.manual_seed(cfg.seed)
    encoders = {"random_init": create_model("omnivec2", suite.specs, [td.task for td in suite],
                                            preset=exp.model.preset, **exp.model.options).eval()}
    encoders |= {label: load(path) for label, path in stages.items()}
    shots = {label: fewshot(model, suite, t.shots, t.draws, cfg.seed)
             for label, model in encoders.items()} if "fewshot" in parts else {}
    for label, curves in shots.items():
        log(f"few-shot {label}: " + ", ".join(f"k={k} {np.nanmean([c[k] for c in curves.values()]):.4f}"
                                            for k in t.shots))
    encoders |= {f"finetuned_{label}": load(out / "finetune" / label / "seed0") for label in finetune}
    retrieval = {r.task: {"simple": simple_retrieval(tasks[r.task], r.query, r.gallery, r.keep_target)}
                 | {label: retrieve(model, tasks[r.task], r.query, r.gallery, r.keep_target)
                    for label, model in encoders.items()} for r in t.retrieval} if "retrieval" in parts else {}
    primary = "stage1_2" if "stage1_2" in stages else next(iter(stages))
    report = {
        "command": command,
        "suite_mean": {label: row["mean"] for label, row in finetune.items()},
        "seeds": t.seeds,
        "retrieval": {task: {k: rows[primary]["raw"]["forward"][k] for k in ("R@1", "R@5", "R@10", "chance_R@1")}
                      for task, rows in retrieval.items()},
        "retrieval_encoder": primary,
        "retrieval_pairs": {r.task: f"{r.query} -> {r.gallery}" for r in t.retrieval},
        "quick": quick, "pretrained": str(pretrained), "parts": parts,
        "pretrain_summary": json.loads((pretrained / "summary.json").read_text()),
        "settings": dataclasses.asdict(t), "epochs": exp.train.epochs, "model": dataclasses.asdict(exp.model),
        "finetune": finetune,
        "fewshot_finetune": shot_runs,
        "fewshot": {label: {"tasks": curves, "mean": {k: float(np.nanmean([c[k] for c in curves.values()]))
                                                      for k in t.shots}}
                    for label, curves in shots.items()},
        "retrieval_all": retrieval,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "transfer.json", json.dumps(report, indent=2))
    atomic_write_text(out / "transfer.md", markdown(report))
    if report["fewshot"]:
        plot_fewshot(report, out / "fewshot.png")
    return report


def markdown(report: dict) -> str:
    lines: list[str] = []
    if report["finetune"]:
        lines += ["| start | test mean skill (points) | without forecasting tasks | seeds |", "|---|---:|---:|---:|"]
        for label, row in report["finetune"].items():
            lines.append(f"| {label} | {row['mean']:.2f} ± {row['std']:.2f} | {row['mean_without_forecasting']:.2f} ± "
                         f"{row['std_without_forecasting']:.2f} | {len(row['scores'])} |")
        lines.append("")
    shots = report["settings"]["shots"]
    if report["fewshot"]:
        lines += ["| few-shot fine-tuning, start | " + " | ".join(f"k={k}" for k in shots) + " |",
                  "|---|" + "---:|" * len(shots)]
        for label, row in report["fewshot_finetune"].items():
            lines.append(f"| {label} | " + " | ".join(f"{row[k]:.2f}" for k in shots) + " |")
        lines += ["", "| few-shot linear probe, encoder | " + " | ".join(f"k={k}" for k in shots) + " |",
                  "|---|" + "---:|" * len(shots)]
        for label, row in report["fewshot"].items():
            lines.append(f"| {label} | " + " | ".join(f"{row['mean'][k]:.4f}" for k in shots) + " |")
        lines.append("")
    if report["retrieval_all"]:
        lines += ["| task | encoder | space | direction | R@1 | R@5 | R@10 | median rank | chance R@1 |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for task, rows in report["retrieval_all"].items():
        for label, spaces in rows.items():
            for space, dirs in spaces.items():
                for direction, s in dirs.items():
                    lines.append(f"| {task} | {label} | {space} | {direction} | {s['R@1']:.3f} | {s['R@5']:.3f} | "
                                 f"{s['R@10']:.3f} | {s['median_rank']:.0f} | {s['chance_R@1']:.3f} |")
    return "\n".join(lines).strip() + "\n"


def plot_fewshot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = report["settings"]["shots"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, row in report["fewshot_finetune"].items():
        left.plot(shots, [row[k] for k in shots], marker="o", label=label)
    for label, row in report["fewshot"].items():
        right.plot(shots, [row["mean"][k] for k in shots], marker="o", label=label)
    for ax, ylabel, title in ((left, "test mean skill (points)", "fine-tuning every task"),
                              (right, "mean test accuracy (classification tasks)", "linear probes, frozen")):
        ax.set_xscale("log")
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("labelled examples per class (k)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
