"""Typed, strict configuration: YAML mappings → dataclasses, with errors that name the field.

Unknown keys get a did-you-mean; wrong types say what was expected. This is the single place
where user-written configuration is checked, so every command reports problems the same way.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from highmodal.errors import HighmodalError, did_you_mean

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except HighmodalError as e:
                errors.append(str(e))
        raise HighmodalError(errors[0] if len(errors) == 1 else f"{where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise HighmodalError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise HighmodalError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, arg = typing.get_args(tp)
        return {str(k): _coerce(v, arg, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise HighmodalError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HighmodalError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HighmodalError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise HighmodalError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types; ``where`` prefixes errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HighmodalError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise HighmodalError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), fields)}; allowed: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise HighmodalError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def to_mapping(obj: Any) -> Any:
    """Dataclass → plain YAML-able structure."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HighmodalError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise HighmodalError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise HighmodalError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


@dataclasses.dataclass
class ModelConfig:
    """``name`` picks a registered model; ``options`` override the preset's fields."""

    name: str = "highmmt"
    preset: str = "large"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


PARALLEL = ("ddp", "fsdp")
AUTO_EPOCHS = 30  # the fewest epochs of a schedule left to the library (train.epochs: null)
AMP = {"bf16": "bfloat16"}  # mixed-precision name -> torch dtype (training/precision.py)


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings. Defaults follow HighMMT's large setting (lr 8e-4, weight decay 1e-3)
    with AdamW, linear warm-up and cosine decay to ``min_lr_ratio × lr``. ``epochs`` left out (null):
    30 epochs, or more on small data, enough for ``min_steps`` optimizer steps (3,000 chosen on the
    validation splits of seven small sets: docs/bring-your-own.md); a given ``epochs`` is used as is."""

    epochs: int | None = None
    min_steps: int = 3000
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 8e-4
    weight_decay: float = 1e-3
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])  # AdamW's
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.05
    grad_clip: float | None = 1.0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int = 0  # steps between checkpoints besides every epoch end (0: epoch ends only)
    modality_dropout: float = 0.0  # chance per step of hiding each modality of a multimodal task's batch
    token_dropout: float = 0.0  # chance of hiding each real token of a padded (masked) input: word dropout for text
    grad_accum: int = 1  # run each batch as this many micro-batches, one backward each: same update, less memory
    memory_guard: bool = True  # estimate a step's memory before training and refuse one that cannot fit
    memory_budget_gb: float | None = None  # the guard's budget; None: what the OS (or GPU) reports free
    # Transfer (HighMMT Appendix B.7/B.8): the model holds every task's modality codes and head, but only
    # ``only_tasks`` are trained (None: all), and the best epoch is picked on ``select_on`` (None: trained ones).
    only_tasks: list[str] | None = None
    select_on: list[str] | None = None
    # Which tasks share a step (training/samplers.py; None: the model's own, staggered for HighMMT and
    # pairwise for OmniVec2), and how their losses are weighted (training/balancing.py).
    sampler: str | None = None
    pair_alpha: float = 0.0  # pairwise: draw modalities ∝ rows^alpha (0: uniform, as OmniVec2)
    balance: str = "equal"  # equal | dwa | uncertainty
    balance_temperature: float = 2.0  # DWA's T
    # Under torchrun: ddp keeps a full model in every process and sums gradients; fsdp shards weights,
    # gradients and optimizer state over processes (FSDP2), for models too large to hold N times.
    parallel: str = "ddp"
    # Speed (docs/performance.md): bf16 autocast of each step's forward and loss (weights, optimizer
    # state and validation stay fp32), and torch.compile of the model's step (``compile_step``).
    amp: str | None = None  # None or bf16
    compile: bool = False
    # Per-task early stopping (training/task_stopping.py): a task whose validation skill has not improved
    # for ``task_patience`` epochs, or that has trained ``task_epochs[task]`` epochs, leaves the loss sum
    # with its head back at its best epoch; it rejoins when the shared layers' drift costs it more than
    # ``task_reentry`` skill (null: never). None / {}: every task trains every epoch. ``task_hold`` > 0
    # keeps a stopped task in the loss sum at that weight with its head frozen at its best epoch, so the
    # shared layers go on serving it instead of drifting away from it.
    task_patience: int | None = None
    task_epochs: dict[str, int] | None = None
    task_reentry: float | None = 0.02
    task_hold: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs is None or self.epochs >= 1, "min_steps": self.min_steps >= 0,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1, "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0, "warmup_frac": 0 <= self.warmup_frac < 1,
            "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "threads": self.threads is None or self.threads >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "modality_dropout": 0 <= self.modality_dropout < 1, "token_dropout": 0 <= self.token_dropout < 1,
            "grad_accum": self.grad_accum >= 1,
            "memory_budget_gb": self.memory_budget_gb is None or self.memory_budget_gb > 0,
            "pair_alpha": self.pair_alpha >= 0, "balance_temperature": self.balance_temperature > 0,
            "task_patience": self.task_patience is None or self.task_patience >= 1,
            "task_epochs": all(v >= 1 for v in (self.task_epochs or {}).values()),
            "task_reentry": self.task_reentry is None or self.task_reentry >= 0,
            "task_hold": 0 <= self.task_hold <= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise HighmodalError(f"train.{key}: value {getattr(self, key)!r} is out of range")
        if self.parallel not in PARALLEL:
            raise HighmodalError(f"train.parallel: {self.parallel!r} is not one of {', '.join(PARALLEL)}"
                                 f"{did_you_mean(self.parallel, PARALLEL)}")
        if self.amp is not None and self.amp not in AMP:
            raise HighmodalError(f"train.amp: {self.amp!r} is not one of {', '.join(AMP)} (or null for fp32)"
                                 f"{did_you_mean(str(self.amp), AMP)}")
        if self.compile and self.parallel == "fsdp":
            raise HighmodalError("train.compile: not supported with train.parallel: fsdp; use ddp or drop compile")

    def length(self) -> str:
        """The schedule's length in words, for reports: ``20 epochs``, or the rule ``epochs_for`` applies."""
        if self.epochs is not None:
            return f"{self.epochs} epochs"
        return f"at least {AUTO_EPOCHS} epochs and {self.min_steps:,} steps"

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Epochs to train: ``epochs`` when given; else ``AUTO_EPOCHS``, or as many more as it takes to
        reach ``min_steps`` optimizer steps, so a set of a few dozen rows gets as many updates as a
        large one gets in a few epochs (deep time-series classifiers train small UCR sets for
        hundreds to 1,500 epochs: Fawaz et al. 2019, Ismail Fawaz et al. 2020)."""
        if self.epochs is not None:
            return self.epochs
        return max(AUTO_EPOCHS, math.ceil(self.min_steps / max(steps_per_epoch, 1)))


@dataclasses.dataclass
class ExperimentConfig:
    """A whole run: which tasks (each a loader ``source`` plus its options), which model, how to train.
    ``name`` defaults to the config file's stem."""

    name: str
    tasks: list[dict[str, Any]]
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """The YAML at ``path``; ``name`` defaults to the file's stem."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and "name" not in raw:
        raw = {"name": Path(path).stem, **raw}
    return from_mapping(ExperimentConfig, raw, str(path))


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or re.sub(r"\b[a-z_][\w]*\.", "", str(tp))


def _nested(tp: Any) -> type | None:
    """The dataclass inside a field's type (``X``, ``X | None``, ``dict[str, X]``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    return next((found for arg in typing.get_args(tp) if (found := _nested(arg)) is not None), None)


def reference(cls: type, prefix: str = "") -> list[str]:
    """Every key of dataclass ``cls`` as ``key: type = default``, nested dataclasses expanded under
    their key, each class's docstring first: the config reference, read from the code itself."""
    hints = typing.get_type_hints(cls)
    lines = [f"{prefix}# {line.strip()}" for line in (cls.__doc__ or "").strip().splitlines()
             if line.strip() and not cls.__doc__.startswith(f"{cls.__name__}(")]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = f" = {f.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            default = "" if dataclasses.is_dataclass(value) else f" = {value!r}"
        else:
            default = "  (required)"
        lines.append(f"{prefix}{f.name}: {_type_name(tp)}{default}")
        nested = _nested(tp)
        if nested is not None:
            lines += reference(nested, prefix + "  ")
    return lines
