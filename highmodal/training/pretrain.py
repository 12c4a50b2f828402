"""``highmodal pretrain``: OmniVec2's two masked pretraining stages on a suite's unlabelled training data.

The pretraining config names a suite (packaged or a YAML path) and the label of one of its
``models:`` entries, so the model, its options and the data views (subword text, point sets) are
exactly those that ``highmodal transfer`` (or ``train --init``) fine-tunes. Only training splits are
read and labels are never used, except that a pairing task's negative pairs are no pairs
(``stage2.keep_target``).

Stage 1 iterates over the modalities (one batch of one modality per step, the order reshuffled each
cycle: §3.2 "we iterate between modalities while keeping the transformer network common"); stage 2
over the paired tasks (one batch of two modalities of the same samples per step). Each stage has its
own decoders, AdamW (MAE's betas 0.9/0.95) with warm-up and cosine decay, and a step budget.

The run directory holds the final model (``model.safetensors`` + ``model.json``, loadable by
``train --init``), ``stage1/`` with the stage-1 model when both stages ran, ``metrics.jsonl`` (mean
loss per modality every ``log_every`` steps), ``summary.json`` and ``reconstructions/`` pictures.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from highmodal.config import from_mapping, read_yaml, to_mapping
from highmodal.data.task import TaskSuite
from highmodal.errors import HighmodalError, did_you_mean
from highmodal.fileio import atomic_write_text
from highmodal.models.masked import DecoderOptions, MaskedModeling, MaskOptions
from highmodal.models.registry import create_model
from highmodal.training.batching import TaskTensors
from highmodal.training.checkpoint import RunDir, save_model
from highmodal.training.divergence import FiniteWatch
from highmodal.training.trainer import warmup_cosine

PAIRS = ("paired", "any")
TRANSFER_PARTS = ("finetune", "fewshot", "retrieval")
HEADS = ["heads", "unified_head"]  # never trained by pretraining: `train --init` starts them fresh


@dataclasses.dataclass
class StageConfig:
    """``steps``: optimizer steps (0 skips the stage). ``tasks``: stage 1, whose modalities are
    pretrained (None: every task's); stage 2, the paired tasks (None: every task with >= 2 modalities).
    ``keep_target``: stage 2 uses only the rows of that label (``{roadscene: 1}``: same-scene pairs).
    ``pairs`` (stage 2): ``paired`` trains on the paired tasks only; ``any`` also on every other pair
    of modalities with unrelated rows, as the paper's stage 2 does with its unpaired data sets.
    ``contrastive`` (stage 2): weight of a symmetric InfoNCE loss between the two streams' pooled
    embeddings on units of the same rows, at ``temperature`` (0: masked reconstruction only, the
    paper's objective; the paper does not align the streams' embeddings, so retrieval needs this);
    ``contrastive_tokens``: position-wise token similarity where the two token grids match."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    tasks: list[str] | None = None
    keep_target: dict[str, int] = dataclasses.field(default_factory=dict)
    pairs: str = "paired"
    contrastive: float = 0.0
    temperature: float = 0.07
    contrastive_tokens: bool = False

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS:
            raise HighmodalError(f"pretrain stage: pairs {self.pairs!r} is not one of {', '.join(PAIRS)}")
        for key, ok in {"steps": self.steps >= 0, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                        "weight_decay": self.weight_decay >= 0, "warmup_frac": 0 <= self.warmup_frac < 1,
                        "contrastive": self.contrastive >= 0, "temperature": self.temperature > 0}.items():
            if not ok:
                raise HighmodalError(f"pretrain stage: {key} = {getattr(self, key)!r} is out of range")


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
    max_train: int | None = None  # training rows per task read for pretraining (None: all)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 50
    stage1: StageConfig = dataclasses.field(default_factory=StageConfig)
    stage2: StageConfig = dataclasses.field(default_factory=StageConfig)
    masking: dict[str, MaskOptions] = dataclasses.field(default_factory=dict)
    decoder: DecoderOptions = dataclasses.field(default_factory=DecoderOptions)
    transfer: TransferSettings = dataclasses.field(default_factory=TransferSettings)
    quick: QuickPretrain = dataclasses.field(default_factory=QuickPretrain)


def load_pretrain_config(path: Path, quick: bool = False) -> PretrainConfig:
    cfg = from_mapping(PretrainConfig, read_yaml(path), str(path))
    if quick:
        q = cfg.quick
        cfg.tasks = q.tasks or cfg.tasks
        cfg.max_train = q.max_train
        for stage in (cfg.stage1, cfg.stage2):
            stage.steps = min(stage.steps, q.steps)
            stage.tasks = None if stage.tasks is None else [t for t in stage.tasks if t in cfg.tasks] or None
        cfg.log_every = min(cfg.log_every, q.steps)
        t = cfg.transfer
        t.seeds, t.max_train, t.max_eval, t.epochs, t.shots = 1, q.max_train, q.max_eval, q.epochs, q.shots
        t.shot_epochs, t.shot_seeds = q.shot_epochs, 1
        t.retrieval = [r for r in t.retrieval if r.task in cfg.tasks]
    return cfg


def pretraining_suite(cfg: PretrainConfig, config_dir: Path, data_root: Path | None, quick: bool = False):
    """The suite experiment of ``cfg.model`` restricted to ``cfg.tasks``, and its data."""
    from highmodal.bench.suite import extra_experiment, load_suite_config
    from highmodal.training.run import suite_for

    beside = config_dir / cfg.suite
    suite_path = str(beside) if beside.is_file() or Path(cfg.suite).suffix else cfg.suite
    scfg, suite_dir = load_suite_config(suite_path)
    extras = {e.label: e for e in scfg.models}
    if cfg.model not in extras:
        raise HighmodalError(f"pretrain.model: {cfg.model!r} is not a label of suite {cfg.suite!r}'s models: "
                             f"{', '.join(extras) or 'none'}")
    names = [t["name"] for t in scfg.tasks]
    require_tasks(cfg.tasks or (), names, "pretrain.tasks")
    exp = extra_experiment(scfg, extras[cfg.model], quick, set(names))
    if exp.model.name != "omnivec2":
        raise HighmodalError(f"pretrain.model: masked pretraining is OmniVec2's; {cfg.model!r} is a {exp.model.name}")
    if cfg.tasks:
        exp.tasks = [t for t in exp.tasks if t["name"] in cfg.tasks]
    exp.seed = scfg.seed
    return exp, suite_dir, suite_for(exp, suite_dir, data_root)


def require_tasks(given, names: list[str], field: str) -> None:
    for t in given:
        if t not in names:
            raise HighmodalError(f"{field}: unknown task {t!r}{did_you_mean(t, names)}; tasks: {', '.join(names)}")


def _check_tasks(stage: StageConfig, suite: TaskSuite, key: str) -> None:
    require_tasks([*(stage.tasks or ()), *stage.keep_target], [td.task.name for td in suite], f"pretrain.{key}")


Stream = tuple[TaskTensors, str]  # rows of one task, one of its modalities
Unit = tuple[Stream, ...]  # what one step trains on: one stream (stage 1) or two (stage 2)


def modality_streams(suite: TaskSuite, tasks: list[str] | None, device: str = "cpu") -> dict[str, TaskTensors]:
    """Each modality with the training split of the task holding the most rows of it."""
    best: dict[str, TaskTensors] = {}
    for td in suite:
        if tasks is not None and td.task.name not in tasks:
            continue
        tensors = TaskTensors(td.task, td.splits["train"], device)
        for m in td.task.modalities:
            if m not in best or len(tensors) > len(best[m]):
                best[m] = tensors
    return best


def stage1_units(suite: TaskSuite, stage: StageConfig, device: str = "cpu") -> list[Unit]:
    _check_tasks(stage, suite, "stage1.tasks")
    return [((t, m),) for m, t in modality_streams(suite, stage.tasks, device).items()]


def stage2_units(suite: TaskSuite, stage: StageConfig, device: str = "cpu") -> list[Unit]:
    """``pairs: paired``: every modality pair of each paired task, on the same rows (only rows of
    ``keep_target``). ``pairs: any`` adds every other pair of modalities, each with its own rows (§4:
    "we randomly select two modalities, and sample data from them"). The rows are held on ``device``."""
    _check_tasks(stage, suite, "stage2")
    units: list[Unit] = []
    paired: set[frozenset[str]] = set()
    for td in suite:
        chosen = stage.tasks is None or td.task.name in stage.tasks
        if not chosen or len(td.task.modalities) < 2:
            if stage.tasks is not None and chosen:
                raise HighmodalError(f"pretrain.stage2.tasks: {td.task.name!r} has one modality; stage 2 needs pairs")
            continue
        data = td.splits["train"]
        if td.task.name in stage.keep_target:
            data = data.subset(np.flatnonzero(data.y == stage.keep_target[td.task.name]))
        tensors = TaskTensors(td.task, data, device)
        for a, b in itertools.combinations(td.task.modalities, 2):
            units.append(((tensors, a), (tensors, b)))
            paired.add(frozenset((a, b)))
    if stage.pairs == "any":
        streams = modality_streams(suite, None, device)
        units += [((streams[a], a), (streams[b], b)) for a, b in itertools.combinations(streams, 2)
                  if frozenset((a, b)) not in paired]
    return units


def draw_batches(unit: Unit, size: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """One batch per stream; streams of the same rows share the draw, others get as many rows each.
    Rows are drawn by ``gen`` on the data's device, so no index is copied in per step."""
    n = min(size, *(len(t) for t, _ in unit))
    drawn: dict[int, dict[str, torch.Tensor]] = {}
    for tensors, _ in unit:
        if id(tensors) not in drawn:
            drawn[id(tensors)] = tensors.batch(torch.randperm(len(tensors), generator=gen, device=gen.device)[:n])
    return [drawn[id(t)] for t, _ in unit]


def run_stage(mm: MaskedModeling, units: list[Unit], stage: StageConfig, number: int, seed: int, log_every: int,
              metrics: Path, log, progress: bool) -> dict:
    """Train ``mm`` for ``stage.steps`` steps, appending a record to ``metrics`` every ``log_every``;
    returns the stage summary. Losses are summed on the device and non-finite losses or gradients
    are read by ``FiniteWatch``, so between log records no step waits for the device."""
    if not units:
        raise HighmodalError(f"pretrain.stage{number}: no data to pretrain on (no "
                             f"{'modality' if number == 1 else 'paired task'} selected)")
    rng = np.random.default_rng([seed, number])
    device = next(mm.parameters()).device
    gen = torch.Generator(device).manual_seed(int(rng.integers(2**63)))
    watch = FiniteWatch(device, piece="modality", advice="; lower the learning rate")
    opt = torch.optim.AdamW(mm.parameters(), lr=stage.lr, weight_decay=stage.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(stage.steps, stage.warmup_frac, 0.0))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    history = []
    order: list[int] = []
    t0 = time.perf_counter()
    mm.train()
    for step in tqdm(range(stage.steps), desc=f"stage {number}", unit="step", disable=not progress, leave=False):
        if not order:
            order = list(rng.permutation(len(units)))
        unit = units[order.pop()]
        batches = draw_batches(unit, stage.batch_size, gen)
        mods = [m for _, m in unit]
        if number == 1:
            losses = {mods[0]: mm.stage1_loss(batches[0], mods[0])}
        else:
            losses = mm.stage2_loss(batches[0], mods[0], batches[1], mods[1])
            if stage.contrastive and batches[0] is batches[1]:
                losses[f"{mods[0]}~{mods[1]}"] = stage.contrastive * mm.contrastive_loss(
                    batches[0], mods[0], batches[1], mods[1], stage.temperature, stage.contrastive_tokens)
        total = sum(losses.values())
        nonfinite = ~torch.isfinite(torch.stack([*losses.values(), total]).detach())
        opt.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(mm.parameters(), 1.0)
        tasks = ", ".join(sorted({t.task.name for t, _ in unit}))
        watch.add(f"pretrain stage {number}, step {step + 1} (task {tasks})", list(losses), nonfinite[None], norm)
        watch.poll()
        opt.step()
        sched.step()
        for m, v in losses.items():
            sums[m] = sums.get(m, 0) + v.detach()
            counts[m] = counts.get(m, 0) + 1
        if (step + 1) % log_every == 0 or step + 1 == stage.steps:
            watch.drain()
            record = {"stage": number, "step": step + 1, "seconds": time.perf_counter() - t0,
                      "loss": {m: float(sums[m]) / counts[m] for m in sorted(sums)}}
            history.append(record)
            with metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")
            sums, counts = {}, {}
    seconds = time.perf_counter() - t0
    last = history[-1]["loss"] if history else {}
    log(f"stage {number}: {stage.steps} steps in {seconds:.1f} s; last losses "
        + ", ".join(f"{m} {v:.3f}" for m, v in last.items()))
    return {"steps": stage.steps, "seconds": seconds, "history": history, "units": len(units)}


def pretrain(cfg: PretrainConfig, config_path: Path, out: Path, data_root: Path | None, overwrite: bool = False,
             progress: bool = True, log=print, quick: bool = False) -> dict:
    """Run the configured stages; write the run directory (see the module doc); return the summary."""
    from highmodal.bench.suite import cap_suite
    from highmodal.training.reconstructions import save_reconstructions

    if cfg.stage1.steps == 0 and cfg.stage2.steps == 0:
        raise HighmodalError(f"{config_path}: stage1.steps and stage2.steps are both 0; nothing to pretrain")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    exp, _, suite = pretraining_suite(cfg, config_path.parent, data_root, quick)
    if cfg.max_train is not None:
        suite = cap_suite(suite, cfg.max_train, cfg.max_train, cfg.seed)
    units1 = stage1_units(suite, cfg.stage1, cfg.device) if cfg.stage1.steps else []
    units2 = stage2_units(suite, cfg.stage2, cfg.device) if cfg.stage2.steps else []
    run = RunDir(out, overwrite)
    try:
        torch.manual_seed(cfg.seed)
        model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset=exp.model.preset,
                             **exp.model.options).to(cfg.device)
        params = sum(p.numel() for p in model.parameters())
        log(f"omnivec2 ({exp.model.preset}): {params:,} parameters; pretraining on {len(suite)} tasks, "
            f"{len(suite.specs)} modalities")
        resolved = to_mapping(cfg) | {"config_dir": str(config_path.parent.resolve()), "quick": quick}
        atomic_write_text(run.path / "pretrain.yaml", yaml.safe_dump(resolved, sort_keys=False))
        summary: dict = {"params": params, "preset": exp.model.preset, "tasks": [td.task.name for td in suite],
                         "stages": {}}
        stages = [(1, cfg.stage1, units1), (2, cfg.stage2, units2)]
        for number, stage, units in stages:
            if not stage.steps:
                continue
            mods = sorted({m for unit in units for _, m in unit})
            mm = MaskedModeling(model, mods, cfg.masking, cfg.decoder).to(cfg.device)
            summary["stages"][number] = run_stage(mm, units, stage, number, cfg.seed, cfg.log_every,
                                                  run.path / "metrics.jsonl", log, progress)
            summary["stages"][number]["masking"] = {m: dataclasses.asdict(o) for m, o in mm.options.items()}
            summary["stages"][number]["pictures"] = save_reconstructions(
                mm, suite, mods, run.path / "reconstructions", f"stage{number}")
            if number == 1 and cfg.stage2.steps:
                (run.path / "stage1").mkdir()
                save_model(run.path / "stage1", model, "omnivec2", exp.model.preset, HEADS)
        model.eval()
        save_model(run.path, model, "omnivec2", exp.model.preset, HEADS)
        summary["seconds"] = sum(s["seconds"] for s in summary["stages"].values())
        atomic_write_text(run.path / "summary.json", json.dumps(summary, indent=2))
        final = run.commit()
    except BaseException:
        run.abort()
        raise
    log(f"pretrained in {summary['seconds']:.1f} s; run directory {final}")
    return summary | {"run": str(final)}

