"""``highmodal pretrain`` and ``highmodal transfer``: OmniVec2's masked pretraining run, and what it buys.

``highmodal pretrain``: the pretraining config names a suite (packaged or a YAML path) and the label
of one of its ``models:`` entries, so the model, its options and the data views (subword text, point
sets) are exactly those that ``highmodal transfer`` (or ``train --init``) fine-tunes; the stages
themselves are ``training/pretrain.py``'s, trained by the one ``Trainer``. The run directory holds
the final model (``model.safetensors`` + ``model.json``, loadable by ``train --init``), per stage
``stage<n>/`` with ``metrics.jsonl`` (mean loss per modality every ``log_every`` steps), TensorBoard
events and ``stage.json`` (plus the stage-1 model when stage 2 follows), ``summary.json`` and
``reconstructions/`` pictures. ``--resume`` continues an interrupted run.

``highmodal transfer`` measures the pretrained models three ways against no pretraining:

1. Fine-tuning: the suite's OmniVec2 trained on every task of the capped suite from scratch, from the
   stage-1 model and from the stage-1+2 model (``train --init``), over seeds; test mean skill.
2. Few-shot, k labelled training examples per class of every task (k in all for regression): the
   whole model fine-tuned from each start, and linear probes on the frozen embeddings of a randomly
   initialised copy and of each pretrained stage.
3. Cross-modal retrieval on paired test data with the same encoders and the fine-tuned models, beside
   the simple yardstick of ``experiments.baselines.simple_retrieval``.

``parts`` (config ``transfer.parts`` or ``--parts``) runs a subset of the three.

Fine-tuning and the probes use the same capped splits; seeds change only initialisation and batch
order (the pretrained weights are one run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import typing
from pathlib import Path

import numpy as np
import torch
import yaml

from highmodal.config import TrainConfig, from_mapping, read_yaml, to_mapping
from highmodal.data.loaders import few_shot, fit_target_scale
from highmodal.errors import HighmodalError
from highmodal.experiments.baselines import simple_retrieval
from highmodal.experiments.fewshot import fewshot
from highmodal.experiments.retrieval import retrieve
from highmodal.experiments.run import seed_runs, silent, suite_for
from highmodal.experiments.stats import seed_summary
from highmodal.experiments.suite import cap_suite, extra_experiment, load_suite_config
from highmodal.fileio import atomic_write_text, refuse_to_replace
from highmodal.models.masked import DecoderOptions, MaskedModeling, MaskOptions
from highmodal.models.registry import create_model
from highmodal.report import table, write_report
from highmodal.tasks import TaskSuite
from highmodal.training import distributed
from highmodal.training.checkpoint import RunDir, load, save_model
from highmodal.training.evaluation import aggregate
from highmodal.training.pretrain import HEADS, StageConfig, require_tasks, run_stage, stage1_units, stage2_units
from highmodal.training.reconstructions import save_reconstructions
from highmodal.training.resume import checkpoint_dir

TRANSFER_PARTS = ("finetune", "fewshot", "retrieval")


@dataclasses.dataclass
class RetrievalPair:
    """Cross-modal retrieval on a paired task's test split: ``query`` modality → ``gallery`` modality."""

    task: str
    query: str
    gallery: str
    keep_target: int | None = None


@dataclasses.dataclass
class TransferSettings:
    """``highmodal transfer``: fine-tuning on a capped suite over ``seeds``; few-shot with ``shots``
    labelled examples per class, by fine-tuning every task for ``shot_epochs`` (over ``shot_seeds``)
    and by linear probes on frozen embeddings (``draws`` random draws each); and retrieval. ``parts``:
    which of the three to run."""

    seeds: int = 3
    max_train: int = 256
    max_eval: int = 512
    epochs: int | None = None
    shots: list[int] = dataclasses.field(default_factory=lambda: [1, 3, 10])
    shot_epochs: int = 15
    shot_seeds: int = 1
    draws: int = 5
    retrieval: list[RetrievalPair] = dataclasses.field(default_factory=list)
    parts: list[str] = dataclasses.field(default_factory=lambda: list(TRANSFER_PARTS))


@dataclasses.dataclass
class QuickPretrain:
    """``--quick``: a few tasks and steps on capped data; for smoke tests, not for results."""

    tasks: list[str] = dataclasses.field(default_factory=list)
    steps: int = 20
    max_train: int = 64
    max_eval: int = 64
    epochs: int = 1
    shots: list[int] = dataclasses.field(default_factory=lambda: [1, 5])
    shot_epochs: int = 1


@dataclasses.dataclass
class PretrainConfig:
    suite: str = "real"
    model: str = "omnivec2"  # label of the suite's ``models:`` entry
    tasks: list[str] | None = None  # a subset of the suite's tasks (None: all)
    task_options: dict[str, dict[str, typing.Any]] = dataclasses.field(default_factory=dict)  # over the entry's views
    max_train: int | None = None  # training rows per task read for pretraining (None: all)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    amp: str | None = None  # bf16 autocast of each step, as ``train.amp``
    log_every: int = 50  # steps per record and checkpoint (the Trainer's epoch); divides every stage's steps
    stage1: StageConfig = dataclasses.field(default_factory=StageConfig)
    stage2: StageConfig = dataclasses.field(default_factory=StageConfig)
    masking: dict[str, MaskOptions] = dataclasses.field(default_factory=dict)
    decoder: DecoderOptions = dataclasses.field(default_factory=DecoderOptions)
    transfer: TransferSettings = dataclasses.field(default_factory=TransferSettings)
    quick: QuickPretrain = dataclasses.field(default_factory=QuickPretrain)

    def __post_init__(self) -> None:
        if self.log_every < 1:
            raise HighmodalError(f"pretrain.log_every: {self.log_every!r} is out of range (>= 1)")
        for key in ("stage1", "stage2"):
            steps = getattr(self, key).steps
            if steps % self.log_every:
                raise HighmodalError(f"pretrain.{key}.steps: {steps} is not a multiple of log_every "
                                     f"({self.log_every}); each log record closes one epoch of the Trainer")
        TrainConfig(amp=self.amp)  # the same check as train.amp

def load_pretrain_config(path: Path, quick: bool = False) -> PretrainConfig:
    cfg = from_mapping(PretrainConfig, read_yaml(path), str(path))
    if quick:
        q = cfg.quick
        cfg.tasks = q.tasks or cfg.tasks
        cfg.max_train = q.max_train
        for stage in (cfg.stage1, cfg.stage2):
            stage.steps = min(stage.steps, q.steps)
            stage.tasks = None if stage.tasks is None else [t for t in stage.tasks if t in cfg.tasks] or None
        cfg.log_every = math.gcd(cfg.stage1.steps, cfg.stage2.steps)
        t = cfg.transfer
        t.seeds, t.max_train, t.max_eval, t.epochs, t.shots = 1, q.max_train, q.max_eval, q.epochs, q.shots
        t.shot_epochs, t.shot_seeds = q.shot_epochs, 1
        t.retrieval = [r for r in t.retrieval if r.task in cfg.tasks]
    return cfg

def pretraining_suite(cfg: PretrainConfig, config_dir: Path, data_root: Path | None, quick: bool = False):
    """The suite experiment of ``cfg.model`` (its data views updated by ``cfg.task_options``) restricted
    to ``cfg.tasks``, and its data."""
    beside = config_dir / cfg.suite
    suite_path = str(beside) if beside.is_file() or Path(cfg.suite).suffix else cfg.suite
    scfg, suite_dir = load_suite_config(suite_path)
    extras = {e.label: e for e in scfg.models}
    if cfg.model not in extras:
        raise HighmodalError(f"pretrain.model: {cfg.model!r} is not a label of suite {cfg.suite!r}'s models: "
                             f"{', '.join(extras) or 'none'}")
    names = [t["name"] for t in scfg.tasks]
    require_tasks(cfg.tasks or (), names, "pretrain.tasks")
    extra = extras[cfg.model]
    extra = dataclasses.replace(extra, task_options={t: extra.task_options.get(t, {}) | cfg.task_options.get(t, {})
                                                     for t in {*extra.task_options, *cfg.task_options}})
    exp = extra_experiment(scfg, extra, quick, set(names))
    if exp.model.name != "omnivec2":
        raise HighmodalError(f"pretrain.model: masked pretraining is OmniVec2's; {cfg.model!r} is a {exp.model.name}")
    if cfg.tasks:
        exp.tasks = [t for t in exp.tasks if t["name"] in cfg.tasks]
    exp.seed = scfg.seed
    return exp, suite_dir, suite_for(exp, suite_dir, data_root)

def pretrain(cfg: PretrainConfig, config_path: Path, out: Path, data_root: Path | None, overwrite: bool = False,
             progress: bool = True, log=print, quick: bool = False, resume: bool = False) -> dict:
    """Run the configured stages; write the run directory (see the module doc); return the summary.

    Each stage trains in ``stage<n>/`` of the run (metrics, TensorBoard, checkpoints) through the
    ``Trainer``; ``resume`` continues an interrupted run of the same config: a finished stage is
    read back, an interrupted one continues from its last checkpoint. Under ``torchrun`` every
    process trains its share of each batch and rank 0 writes."""
    if cfg.stage1.steps == 0 and cfg.stage2.steps == 0:
        raise HighmodalError(f"{config_path}: stage1.steps and stage2.steps are both 0; nothing to pretrain")
    device = distributed.setup(cfg.device)
    main = distributed.is_main()
    log = log if main else silent
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    exp, _, suite = pretraining_suite(cfg, config_path.parent, data_root, quick)
    if cfg.max_train is not None:
        suite = cap_suite(suite, cfg.max_train, cfg.max_train, cfg.seed)
    units1 = stage1_units(suite, cfg.stage1, device) if cfg.stage1.steps else []
    units2 = stage2_units(suite, cfg.stage2, device) if cfg.stage2.steps else []
    resolved = to_mapping(cfg) | {"config_dir": str(config_path.parent.resolve()), "quick": quick}
    run = distributed.agree(lambda: RunDir(out, overwrite, resume))
    if resume:
        _same_config(run.path / "pretrain.yaml", resolved, out)
    try:
        torch.manual_seed(cfg.seed)
        model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset=exp.model.preset,
                             **exp.model.options).to(device)
        params = sum(p.numel() for p in model.parameters())
        log(f"omnivec2 ({exp.model.preset}): {params:,} parameters; pretraining on {len(suite)} tasks, "
            f"{len(suite.specs)} modalities")
        if main and not resume:
            atomic_write_text(run.path / "pretrain.yaml", yaml.safe_dump(resolved, sort_keys=False))
        summary: dict = {"params": params, "preset": exp.model.preset, "tasks": [td.task.name for td in suite],
                         "stages": {}}
        for number, stage, units in [(1, cfg.stage1, units1), (2, cfg.stage2, units2)]:
            if stage.steps:
                summary["stages"][number] = _stage(cfg, model, suite, units, stage, number, run.path, exp.model.preset,
                                                   resume, progress, log)
        if main:
            model.eval()
            save_model(run.path, model, "omnivec2", exp.model.preset, HEADS)
            summary["seconds"] = sum(s["seconds"] for s in summary["stages"].values())
            atomic_write_text(run.path / "summary.json", json.dumps(summary, indent=2))
            for folder in run.path.glob("stage*/checkpoints"):
                shutil.rmtree(folder)
            final = run.commit()
    except BaseException:
        if main and run.abort():
            log(f"the last checkpoint is kept in {run.path}; continue with: highmodal pretrain --resume ...")
        raise
    if not main:
        return summary
    log(f"pretrained in {summary['seconds']:.1f} s; run directory {final}")
    return summary | {"run": str(final)}


def _stage(cfg: PretrainConfig, model, suite: TaskSuite, units, stage: StageConfig, number: int, root: Path,
           preset: str, resume: bool, progress: bool, log) -> dict:
    """One stage in ``root/stage<number>``: read back when it finished before (``stage.json``),
    else trained (from its checkpoint when resuming). The stage-1 model is kept for stage 2."""
    folder = root / f"stage{number}"
    done = folder / "stage.json"
    if resume and done.is_file():
        if number == 1 and cfg.stage2.steps:
            model.load_state_dict(load(folder, str(next(model.parameters()).device)).state_dict())
        log(f"stage {number}: finished before; read back from {folder}")
        return json.loads(done.read_text())
    mods = sorted({m for unit in units for _, m in unit})
    torch.manual_seed(1000 * cfg.seed + number)  # fresh decoders and masks, the same on resume
    mm = MaskedModeling(model, mods, cfg.masking, cfg.decoder, stage.contrastive, stage.temperature,
                        stage.contrastive_tokens).to(next(model.parameters()).device)
    distributed.agree(lambda: folder.mkdir(exist_ok=True))
    again = resume and checkpoint_dir(folder) is not None
    summary = run_stage(mm, units, stage, number, cfg.seed, cfg.log_every, folder, log, progress, again, cfg.amp)
    summary["masking"] = {m: dataclasses.asdict(o) for m, o in mm.options.items()}
    if distributed.is_main():
        summary["pictures"] = save_reconstructions(mm, suite, mods, root / "reconstructions", f"stage{number}")
        if number == 1 and cfg.stage2.steps:
            save_model(folder, model, "omnivec2", preset, HEADS)
        atomic_write_text(done, json.dumps(summary, indent=2))
    return summary


def _same_config(saved: Path, resolved: dict, out: Path) -> None:
    """``--resume`` continues only a run of the same settings."""
    before = read_yaml(saved) if saved.is_file() else None
    if before != yaml.safe_load(yaml.safe_dump(resolved, sort_keys=False)):
        raise HighmodalError(f"--resume {out}: the interrupted run was started with other settings "
                             f"({saved}); pass the same --config (and --quick) or start over with --overwrite")


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
    runs = seed_runs(lambda seed: dataclasses.replace(exp, name=f"{label}-{seed}", seed=seed), seeds, out / label,
                     config_dir, data_root, suite, reuse, overwrite, progress, log, init=init)
    per_task, seconds, skills = {}, 0.0, []
    for seed, (results, summary) in enumerate(runs):
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
    refuse_to_replace(out, overwrite or reuse, resumable=True)
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
    write_report(out, "transfer", report, markdown(report))
    if report["fewshot"]:
        plot_fewshot(report, out / "fewshot.png")
    return report


def markdown(report: dict) -> str:
    lines: list[str] = []
    if report["finetune"]:
        lines += [*table(["start", "test mean skill (points)", "without forecasting tasks", "seeds"], [
            [label, f"{row['mean']:.2f} ± {row['std']:.2f}",
             f"{row['mean_without_forecasting']:.2f} ± {row['std_without_forecasting']:.2f}", len(row["scores"])]
            for label, row in report["finetune"].items()], "lrrr"), ""]
    shots = report["settings"]["shots"]
    if report["fewshot"]:
        right = "l" + "r" * len(shots)
        lines += [*table(["few-shot fine-tuning, start", *(f"k={k}" for k in shots)], [
            [label, *(f"{row[k]:.2f}" for k in shots)] for label, row in report["fewshot_finetune"].items()], right),
            "", *table(["few-shot linear probe, encoder", *(f"k={k}" for k in shots)], [
                [label, *(f"{row['mean'][k]:.4f}" for k in shots)] for label, row in report["fewshot"].items()],
                right), ""]
    if report["retrieval_all"]:
        lines += table(["task", "encoder", "space", "direction", "R@1", "R@5", "R@10", "median rank", "chance R@1"], [
            [task, label, space, direction, f"{s['R@1']:.3f}", f"{s['R@5']:.3f}", f"{s['R@10']:.3f}",
             f"{s['median_rank']:.0f}", f"{s['chance_R@1']:.3f}"]
            for task, rows in report["retrieval_all"].items() for label, spaces in rows.items()
            for space, dirs in spaces.items() for direction, s in dirs.items()], "llllrrrrr")
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
