"""Loader registry and suite building: a config's task list → a validated ``TaskSuite``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from highmodal.config import from_mapping
from highmodal.errors import HighmodalError
from highmodal.metrics import metric_names
from highmodal.modalities.spec import ModalitySpec
from highmodal.registry import Registry
from highmodal.tasks import Task, TaskData, TaskSuite


@dataclass
class LoadContext:
    """Where relative paths and shared datasets are found, and the run's seed."""

    config_dir: Path = field(default_factory=Path.cwd)
    data_root: Path | None = None
    seed: int = 0

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.config_dir / p)


def default_data_root(explicit: str | None = None) -> Path | None:
    """``--data-root``, else ``$HIGHMODAL_DATA``, else ``../shared/datasets`` when it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get("HIGHMODAL_DATA"):
        return Path(os.environ["HIGHMODAL_DATA"])
    guess = Path.cwd().parent / "shared" / "datasets"
    return guess if guess.is_dir() else None


@dataclass
class TaskEntry:
    """The keys every task entry has, whatever its source."""

    name: str
    source: str
    weight: float = 1.0
    batch_size: int | None = None
    metric: str | None = None
    shots: int | None = None  # few-shot: keep k labelled training samples per class (regression: k in all)
    forecast_residual: bool = True  # forecasting: predict the change from the last observed value
    forecast_instance_norm: bool = True  # forecasting: standardise each input window (RevIN)
    aligned: bool | None = None  # modalities compared position by position (None: as the source declares)
    joint: bool | None = None  # the target is a relation between the modalities (None: as the source declares)


@dataclass(frozen=True)
class Loader:
    """A registered data source. ``options`` is a dataclass of the keys a task entry may add;
    ``available`` tells ``highmodal datasets`` whether the data can be read here."""

    load: Callable[[Any, TaskEntry, LoadContext], TaskData]
    options: type
    kinds: tuple[str, ...]
    description: str
    available: Callable[[LoadContext], bool]


LOADERS: Registry[Loader] = Registry("data source")


def normalization_stats(x: np.ndarray, mask: np.ndarray | None, mode: str) -> tuple[tuple, tuple]:
    """Mean/std from training data: per channel (over samples and positions, masked) or per element."""
    if mode == "element":
        mean, std = x.mean(axis=0), x.std(axis=0)
    else:
        flat = x.reshape(-1, x.shape[-1])
        if mask is not None:
            flat = flat[mask.reshape(-1).astype(bool)]
        mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return tuple(float(v) for v in mean.reshape(-1)), tuple(float(v) for v in std.reshape(-1))


def fit_normalization(td: TaskData, modes: dict[str, str]) -> TaskData:
    """Attach train-split statistics to the specs, so the model normalises inputs itself (also at
    predict time, on raw data)."""
    specs = dict(td.specs)
    train = td.splits["train"]
    for name, mode in modes.items():
        if mode == "none":
            continue
        if mode == "element" and specs[name].variable:
            raise HighmodalError(f"modality {name!r}: element-wise normalisation needs a fixed shape")
        mean, std = normalization_stats(train.inputs[name], train.masks.get(name), mode)
        specs[name] = replace(specs[name], mean=mean, std=std)
    return replace(td, specs=specs)


def load_task(entry: dict[str, Any], ctx: LoadContext, where: str) -> TaskData:
    if not isinstance(entry, dict):
        raise HighmodalError(f"{where}: expected a mapping with name and source, got {entry!r}")
    common_keys = {f.name for f in fields(TaskEntry)}
    common = from_mapping(TaskEntry, {k: v for k, v in entry.items() if k in common_keys}, where)
    loader = LOADERS.get(common.source)
    opts = from_mapping(loader.options, {k: v for k, v in entry.items() if k not in common_keys},
                        f"{where} ({common.source})")
    td = loader.load(opts, common, ctx)
    if common.metric is not None:  # the entry's choice beats the loader's default
        td = replace(td, task=replace(td.task, metric=common.metric))
    metric_names(td.task)  # validates the metric for this target kind
    if common.shots is not None:
        td = few_shot(td, common.shots, ctx.seed, where)
    td.check()
    return fit_target_scale(td)


def fit_target_scale(td: TaskData) -> TaskData:
    """Regression targets' mean and spread from the training split (heads predict standardised values)."""
    if td.task.is_classification:
        return td
    y = td.splits["train"].y
    std = np.where(y.std(axis=0) > 1e-8, y.std(axis=0), 1.0)
    return replace(td, task=replace(td.task, target_mean=tuple(map(float, y.mean(axis=0))),
                                    target_std=tuple(map(float, std))))


def few_shot(td: TaskData, k: int, seed: int, where: str) -> TaskData:
    """Keep ``k`` training samples per class (HighMMT Appendix B.8), chosen with ``seed``; validation
    and test stay whole. Input normalisation statistics were fit on the full training inputs
    (labels unused), as a few-shot user with unlabelled data would."""
    if k < 1:
        raise HighmodalError(f"{where}.shots: expected k >= 1, got {k}")
    train = td.splits["train"]
    rng = np.random.default_rng(seed)
    if td.task.is_classification:
        keep = np.concatenate([rng.permutation(np.flatnonzero(train.y == c))[:k] for c in np.unique(train.y)])
    else:
        keep = rng.permutation(len(train))[:k]
    return replace(td, splits={**td.splits, "train": train.subset(np.sort(keep))})


def build_suite(entries: list[dict[str, Any]], ctx: LoadContext, where: str = "tasks") -> TaskSuite:
    """Load every task entry of a config with its registered loader."""
    if not entries:
        raise HighmodalError(f"{where}: the config lists no tasks")
    return TaskSuite([load_task(e, ctx, f"{where}[{i}]") for i, e in enumerate(entries)])


def make_task(
    entry: TaskEntry, modalities: list[str], target: str, out_dim: int, class_names=(), description: str = "",
    aligned: bool = False, joint: bool = False,
) -> Task:
    """The loader's Task, carrying the entry's common fields (name, weight, batch size). ``aligned``:
    whether the source's modalities are aligned position by position; ``joint``: whether the target is
    a relation between them; the entry's ``aligned`` and ``joint`` override."""
    return Task(entry.name, tuple(modalities), target, out_dim, tuple(class_names), entry.weight,
                entry.batch_size, description, metric=entry.metric, forecast_residual=entry.forecast_residual,
                forecast_instance_norm=entry.forecast_instance_norm,
                aligned=aligned if entry.aligned is None else entry.aligned,
                joint=joint if entry.joint is None else entry.joint)


def encode_labels(raw: np.ndarray, where: str, classes: list | None = None) -> tuple[np.ndarray, list[str]]:
    """Map labels to 0..K-1 by sorted unique value (or the given class list)."""
    raw = np.asarray(raw)
    classes = sorted(np.unique(raw).tolist()) if classes is None else list(classes)
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        y = np.array([lookup[v] for v in raw.tolist()], dtype=np.int64)
    except KeyError as e:
        raise HighmodalError(f"{where}: label {e.args[0]!r} is not one of the classes {classes}") from None
    return y, [str(c) for c in classes]


def pad_sequences(seqs: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length ``(T_i, C)`` arrays → ``(N, length, C)`` zero-padded, and a ``(N, length)`` mask."""
    out = np.zeros((len(seqs), length, seqs[0].shape[-1]), dtype=np.float32)
    mask = np.zeros((len(seqs), length), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


def spec(name: str, kind: str, shape: tuple, **kw) -> ModalitySpec:
    return ModalitySpec(name=name, kind=kind, shape=tuple(shape), **kw)


def register_loader(
    name: str, options: type, kinds: tuple[str, ...], description: str,
    available: Callable[[LoadContext], bool] = lambda ctx: True,
) -> Callable:
    def deco(fn: Callable[[Any, TaskEntry, LoadContext], TaskData]) -> Callable:
        LOADERS.register(name)(Loader(fn, options, kinds, description, available))
        return fn

    return deco


def package_available(module: str) -> Callable[[LoadContext], bool]:
    def check(ctx: LoadContext) -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return check
