"""Tasks and task suites: what to predict from which modalities, with the data of each split."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec

TARGETS = ("classification", "regression")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Task:
    """A prediction problem over one or more modalities.

    ``out_dim`` is the number of classes for classification and the number of outputs for
    regression. ``class_names`` maps class index → label as found in the source data.
    ``weight`` is the loss weight in the multitask sum; ``batch_size`` overrides the suite's.
    ``metric`` is the primary metric (default: accuracy, or MAE for regression); imbalanced binary
    tasks use ``auroc``. Regression heads predict standardised targets; ``target_mean``/``target_std`` (fit on train)
    map them back, so losses of different tasks are on comparable scales. ``forecast``: for a
    forecasting task, the ``(modality, channel)`` whose last observed value is the naive forecast of
    every target step; that forecast, not the training mean, is then the task's chance level.
    ``forecast_residual``: the model's head then predicts the change from that last value (added
    back inside the model), so an untrained head starts at the naive forecast instead of the mean.
    ``forecast_instance_norm`` (RevIN, Kim et al. ICLR 2022): the forecast modality's window is
    standardised per sample and channel before encoding, and the head's output is scaled back by
    the window's standard deviation of the forecast channel. ``aligned``: the modalities lie on one
    fixed position grid and position ``t`` of each shows the same place or moment (pixel-aligned
    images, synchronised sensors), so a model may compare them position by position. ``joint``: the
    target is a relation between the modalities (do these two images show the same scene?), so no
    modality alone predicts it; a model that can predict from one modality (OmniVec2) must read
    the task's modalities together.
    """

    name: str
    modalities: tuple[str, ...]
    target: str
    out_dim: int
    class_names: tuple[str, ...] = ()
    weight: float = 1.0
    batch_size: int | None = None
    description: str = ""
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None
    metric: str | None = None
    forecast: tuple[str, int] | None = None
    forecast_residual: bool = True
    forecast_instance_norm: bool = True
    aligned: bool = False
    joint: bool = False

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not self.modalities:
            raise HighmodalError(f"{where}: needs at least one modality")
        if len(set(self.modalities)) != len(self.modalities):
            raise HighmodalError(f"{where}: modalities {list(self.modalities)} repeat a name")
        if self.target not in TARGETS:
            raise HighmodalError(f"{where}: target kind {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.joint and len(self.modalities) < 2:
            raise HighmodalError(f"{where}: declared joint (a relation between modalities) but has one modality")
        if self.target == "classification" and self.out_dim < 2:
            raise HighmodalError(f"{where}: classification needs at least 2 classes, found {self.out_dim}")
        if self.weight <= 0:
            raise HighmodalError(f"{where}: weight must be > 0, got {self.weight}")

    @property
    def is_classification(self) -> bool:
        return self.target == "classification"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["class_names"] = list(self.class_names)
        for k in ("target_mean", "target_std", "forecast"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        d = dict(d)
        d["modalities"] = tuple(d["modalities"])
        d["class_names"] = tuple(d["class_names"])
        for k in ("target_mean", "target_std", "forecast"):
            d[k] = None if d.get(k) is None else tuple(d[k])
        d.setdefault("forecast_residual", False)  # saved before the options existed: direct forecasts
        d.setdefault("forecast_instance_norm", False)
        return cls(**d)


@dataclass
class SplitData:
    """Arrays of one split: ``inputs[modality]`` is ``(N, *shape)``; ``masks[modality]`` is ``(N, L)``.
    ``meta`` holds per-row data no model reads but baselines may (e.g. ``text``: each sentence's
    tokens joined by spaces, for TF-IDF)."""

    inputs: dict[str, np.ndarray]
    y: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> SplitData:
        return SplitData({k: v[idx] for k, v in self.inputs.items()}, self.y[idx],
                         {k: v[idx] for k, v in self.masks.items()}, {k: v[idx] for k, v in self.meta.items()})


@dataclass
class TaskData:
    """A task, the specs of its modalities, and its train/val/test splits."""

    task: Task
    specs: dict[str, ModalitySpec]
    splits: dict[str, SplitData]
    source: str = ""

    def check(self) -> None:
        """Validate every split against the specs and the task; errors name the source and field."""
        t = self.task
        src = self.source or f"task {t.name!r}"
        for split in SPLITS:
            if split not in self.splits or len(self.splits[split]) == 0:
                raise HighmodalError(f"{src}: task {t.name!r} has an empty {split!r} split")
            data = self.splits[split]
            where = f"{src} [{split}]"
            for m in t.modalities:
                if m not in data.inputs:
                    raise HighmodalError(f"{where}: modality {m!r} is missing")
                self.specs[m].validate(data.inputs[m], where)
                if len(data.inputs[m]) != len(data.y):
                    raise HighmodalError(
                        f"{where}: modality {m!r} has {len(data.inputs[m])} samples but the target has {len(data.y)}"
                    )
                if m in data.masks:
                    mask = data.masks[m]
                    if mask.shape[0] != len(data.y) or not mask.reshape(len(mask), -1).any(axis=1).all():
                        raise HighmodalError(f"{where}: mask of {m!r} is misshapen or marks a sample empty")
            check_targets(t, data.y, where)
        if t.is_classification:
            self._check_classes(src)
        if t.aligned:
            self._check_aligned(src)

    def _check_aligned(self, src: str) -> None:
        """An aligned task needs two or more modalities on one fixed position grid."""
        t = self.task
        grids = {m: self.specs[m].axes for m in t.modalities}
        if len(t.modalities) < 2 or len(set(grids.values())) > 1 or any(self.specs[m].variable for m in t.modalities):
            raise HighmodalError(f"{src}: task {t.name!r} is declared aligned, which needs two or more modalities on "
                                 f"one fixed position grid; their position axes are {grids}")

    def _check_classes(self, src: str) -> None:
        """Training must hold at least two classes, and every class that validation or test holds."""
        t = self.task

        def named(ids) -> str:
            return ", ".join(repr(t.class_names[i]) if i < len(t.class_names) else str(i) for i in ids)

        trained = set(np.unique(self.splits["train"].y).tolist())
        if len(trained) < 2:
            raise HighmodalError(f"{src}: task {t.name!r} has one class in its training split ({named(trained)}); "
                                 "classification needs at least two")
        for split in ("val", "test"):
            unseen = sorted(set(np.unique(self.splits[split].y).tolist()) - trained)
            if unseen:
                raise HighmodalError(f"{src} [{split}]: task {t.name!r} has class(es) {named(unseen)} with no "
                                     "training rows; the model could never predict them")


def check_targets(task: Task, y: np.ndarray, where: str) -> None:
    if task.is_classification:
        if not np.issubdtype(y.dtype, np.integer):
            raise HighmodalError(f"{where}: classification labels must be integers, got dtype {y.dtype}")
        if y.ndim != 1:
            raise HighmodalError(f"{where}: classification labels must be 1-D, got shape {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= task.out_dim):
            raise HighmodalError(
                f"{where}: label {int(y.max() if y.max() >= task.out_dim else y.min())} is out of range "
                f"0..{task.out_dim - 1} for task {task.name!r}"
            )
    else:
        if not np.issubdtype(y.dtype, np.floating) or y.ndim != 2 or y.shape[1] != task.out_dim:
            raise HighmodalError(
                f"{where}: regression targets must be float of shape (N, {task.out_dim}), got {y.dtype} {y.shape}"
            )
        if not np.all(np.isfinite(y)):
            raise HighmodalError(f"{where}: regression targets contain NaN or inf")


@dataclass
class TaskSuite:
    """An ordered set of tasks sharing one modality vocabulary (same name → same modality code)."""

    tasks: list[TaskData]

    def __post_init__(self) -> None:
        names = [td.task.name for td in self.tasks]
        if not names:
            raise HighmodalError("the suite has no tasks")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise HighmodalError(f"task names must be unique; repeated: {', '.join(sorted(dup))}")
        seen: dict[str, ModalitySpec] = {}
        for td in self.tasks:
            for name, spec in td.specs.items():
                other = seen.setdefault(name, spec)
                if (other.kind, other.shape) != (spec.kind, spec.shape):
                    raise HighmodalError(
                        f"modality {name!r} is declared twice with different kind/shape: "
                        f"{other.kind} {other.shape} vs {spec.kind} {spec.shape}"
                    )

    @property
    def specs(self) -> list[ModalitySpec]:
        out: dict[str, ModalitySpec] = {}
        for td in self.tasks:
            for name in td.task.modalities:
                out.setdefault(name, td.specs[name])
        return list(out.values())

    def __getitem__(self, name: str) -> TaskData:
        for td in self.tasks:
            if td.task.name == name:
                return td
        raise HighmodalError(f"no task {name!r} in the suite; tasks: {', '.join(t.task.name for t in self.tasks)}")

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)
