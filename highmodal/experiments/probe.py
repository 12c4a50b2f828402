"""Linear probing: embeddings from a trained model, frozen, and two FC layers per new task.

OmniVec2 (§4) adapts to unseen datasets this way. A new task's modality needs a tokenizer, chosen
in this order (each probe reports which it used):

1. the model's own, when the modality name, kind and shape match a trained modality;
2. a trained tokenizer of the same family and shape (X-ray, infrared and depth read like images,
   IMU like time series), copied with the new modality's own normalisation statistics;
3. otherwise a fresh tokenizer of the modality's kind, randomly initialised and frozen like the
   rest: the probe then measures what the frozen backbone makes of random tokens.

Embeddings are computed once per split (single-stream g∘f, mean-pooled; a multimodal task
concatenates its modalities'), so the probe trains in seconds with the standard Trainer. The same
probe on a randomly initialised copy of the architecture is the baseline that tells how much the
training contributed.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import torch

from highmodal.config import ExperimentConfig, ModelConfig, TrainConfig, from_mapping, read_yaml
from highmodal.errors import HighmodalError
from highmodal.experiments.run import suite_for, train_experiment
from highmodal.fileio import atomic_write_text, refuse_to_replace
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers import create_tokenizer
from highmodal.models.base import MultitaskModel
from highmodal.models.registry import create_model
from highmodal.tasks import SplitData, TaskData, TaskSuite
from highmodal.training.batching import TaskTensors
from highmodal.training.checkpoint import load
from highmodal.training.evaluation import format_table

FAMILIES = {"xray": "image", "infrared": "image", "depth": "image", "imu": "time_series"}


@dataclasses.dataclass
class ProbeSettings:
    """``train_frac``: share of each training split the probe sees (OmniVec2 samples 10%)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    train_frac: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.train_frac <= 1:
            raise HighmodalError(f"probe.train_frac: {self.train_frac} is not in (0, 1]")


@dataclasses.dataclass
class ProbeConfig:
    name: str
    tasks: list[dict[str, typing.Any]]
    seed: int = 0
    probe: ProbeSettings = dataclasses.field(default_factory=ProbeSettings)


def family(kind: str) -> str:
    return FAMILIES.get(kind, kind)


def require_embeddings(model: MultitaskModel) -> None:
    if not hasattr(model, "embed"):
        raise HighmodalError(f"probe: a {type(model).__name__} model has no per-modality embedding; "
                             "probe an omnivec2 run")


def tokenizer_for(model: MultitaskModel, spec: ModalitySpec) -> tuple[torch.nn.Module | None, str]:
    """The tokenizer a probe uses for ``spec`` and a note saying where it came from."""
    require_embeddings(model)
    own = model.modalities.get(spec.name)
    if own is not None and own.kind == spec.kind and own.shape == spec.shape:
        return None, f"{spec.name}: the model's own tokenizer"
    if model.cfg.tokenizer == "unified":
        raise HighmodalError(f"probe: modality {spec.name!r} is new and this model's unified tokenizer only "
                             f"knows {', '.join(model.modalities)}")
    options = model.cfg.tokenizers
    for src in model.specs:
        if family(src.kind) == family(spec.kind) and src.shape == spec.shape and src.vocab_size == spec.vocab_size:
            tok = create_tokenizer(spec, model.cfg.d_model, options.get(src.kind), kind=src.kind)
            tok.load_state_dict(model.tokenizers[src.name].state_dict())
            return tok.eval(), f"{spec.name}: the trained {src.name!r} ({src.kind}) tokenizer"
    tok = create_tokenizer(spec, model.cfg.d_model, options.get(spec.kind))
    return tok.eval(), f"{spec.name}: a new {spec.kind} tokenizer, random and frozen (no trained one fits)"


@torch.no_grad()
def embed_task(model: MultitaskModel, td: TaskData, batch_size: int, train_frac: float, seed: int
               ) -> tuple[TaskData, list[str]]:
    """``td`` with one modality, ``<task>_embedding`` of shape ``(1, D)``, computed by the frozen model."""
    model.eval()
    found = {m: tokenizer_for(model, td.specs[m]) for m in td.task.modalities}
    splits = {}
    for split, data in td.splits.items():
        if split == "train" and train_frac < 1:
            keep = max(round(len(data) * train_frac), 1)
            data = data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[:keep]))
        tensors = TaskTensors(td.task, data)
        parts = [torch.cat([model.embed(b, m, found[m][0]) for m in td.task.modalities], -1)
                 for b in tensors.ordered(batch_size)]
        splits[split] = SplitData({f"{td.task.name}_embedding": torch.cat(parts).unsqueeze(1).numpy()}, data.y)
    name = f"{td.task.name}_embedding"
    dim = splits["train"].inputs[name].shape[-1]
    task = dataclasses.replace(td.task, modalities=(name,), batch_size=None)
    return TaskData(task, {name: ModalitySpec(name, "tabular", (1, dim))}, splits, td.source), \
        [note for _, note in found.values()]


def fresh_copy(run_dir: Path, model: MultitaskModel, seed: int) -> MultitaskModel:
    """The run's architecture with random weights (the probe's baseline)."""
    meta = json.loads((run_dir / "model.json").read_text())
    torch.manual_seed(seed)
    return create_model(meta["arch"], model.specs, list(model.tasks.values()), preset=meta["preset"],
                        **meta["config"]).eval()


def run_probe(run_dir: Path, config_path: Path, out: Path, data_root: Path | None, baseline: bool = True,
              overwrite: bool = False, progress: bool = True, command: str = "", log=print,
              seed: int | None = None) -> dict:
    """``seed`` (default: the config's) drives the probe's initialisation, the training-split
    subsample and the random-init copy; the splits themselves follow the config's seed."""
    cfg = from_mapping(ProbeConfig, read_yaml(config_path), str(config_path))
    probe_seed = cfg.seed if seed is None else seed
    refuse_to_replace(out, overwrite)
    trained = load(run_dir)
    require_embeddings(trained)
    exp = ExperimentConfig(name=cfg.name, tasks=cfg.tasks, seed=cfg.seed)
    suite = suite_for(exp, config_path.parent, data_root)
    seen = {t for t in trained.tasks}
    for td in suite:
        if td.task.name in seen:
            log(f"note: task {td.task.name!r} was trained by {run_dir}; its probe is not on an unseen dataset")
    s = cfg.probe
    train = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                        memory_guard=False)
    models = {"trained": trained} | ({"random_init": fresh_copy(run_dir, trained, probe_seed)} if baseline else {})
    report: dict = {"command": command, "run": str(run_dir), "seed": probe_seed, "settings": dataclasses.asdict(s),
                    "tasks": {}}
    for label, model in models.items():
        embedded = [embed_task(model, td, s.batch_size, s.train_frac, probe_seed) for td in suite]
        probe_suite = TaskSuite([e for e, _ in embedded])
        probe_cfg = ExperimentConfig(name=f"{cfg.name}-{label}", tasks=[], seed=probe_seed,
                                     model=ModelConfig("probe", "default", {"hidden": s.hidden}), train=train)
        log(f"probe on the {label} model's embeddings ({probe_suite.specs[0].channels} dims)")
        _, results, _ = train_experiment(probe_cfg, out / label, config_path.parent, data_root, overwrite,
                                               progress, log, suite=probe_suite)
        log(format_table(results, "test"))
        for (td, notes) in embedded:
            entry = report["tasks"].setdefault(td.task.name, {"tokenizers": notes})
            entry[label] = results[td.task.name]["metrics"]
            entry["train_samples"] = len(td.splits["train"])
    atomic_write_text(out / "probe.json", json.dumps(report, indent=2))
    return report
