"""What every multitask model shares, whatever its encoder: task lookup and prediction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from highmodal.errors import HighmodalError, did_you_mean
from highmodal.nn.losses import LOSSES
from highmodal.tasks import Task


@dataclass
class Piece:
    """One part of a training step: a batch of ``task``, restricted to ``modality`` when set
    (OmniVec2's pairwise training feeds one modality per stream), else with all its modalities."""

    task: str
    modality: str | None
    batch: dict[str, torch.Tensor]
    rows: str | None = None  # pieces of one step with the same ``rows`` hold the same rows (None: by task)


@dataclass
class ForecastView:
    """A batch as a forecasting head's encoder reads it, with the map back to the target units:
    ``output × scale + offset`` (each ``(B, outputs)`` or None)."""

    batch: dict[str, torch.Tensor]
    offset: torch.Tensor | None = None
    scale: torch.Tensor | None = None


class MultitaskModel(nn.Module):
    """Subclasses implement ``forward(batch, task) -> raw head output`` and, where tasks have parameters
    of their own, hold them in ``heads[task]`` (per-task early stopping restores them); ``default_sampler`` names
    the multitask sampler (``training/samplers.py``) the model's paper trains it with."""

    default_sampler = "staggered"
    heads: nn.ModuleDict

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.tasks = {t.name: t for t in tasks}

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise HighmodalError(f"unknown task {name!r}{did_you_mean(name, self.tasks)}; "
                                 f"tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

    def step_outputs(self, pieces: Sequence[Piece]) -> list[torch.Tensor | tuple[torch.Tensor, ...]]:
        """Raw head outputs for every piece of a training step (models that fuse pieces override).
        A piece's output may be a tuple of outputs of several paths; its loss is then their mean
        (``piece_loss``)."""
        return [self(p.batch, p.task) for p in pieces]

    def step_losses(self, pieces: Sequence[Piece]) -> list[torch.Tensor]:
        """The training loss of every piece of a step: what the Trainer optimises (a model trained
        without labels, as ``models/masked.py``'s, returns its own losses instead)."""
        return [piece_loss(LOSSES.get(self.task(p.task).target), out, p.batch["target"])
                for p, out in zip(pieces, self.step_outputs(pieces), strict=True)]

    def forecast_view(self, batch: dict[str, torch.Tensor], task: str) -> ForecastView:
        """What a forecasting task's encoder reads and how its head's output is mapped back (see
        ``Task.forecast_residual`` / ``forecast_instance_norm``); other tasks pass through."""
        t = self.task(task)
        if t.forecast is None or t.forecast[0] not in batch or not (t.forecast_residual or t.forecast_instance_norm):
            return ForecastView(batch)
        modality, channel = t.forecast
        x, mask = batch[modality], batch.get(f"{modality}_mask")
        real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        last_step = real.long().cumsum(1).argmax(1)  # the last real step of each (padded) sequence
        last = x[torch.arange(len(x), device=x.device), last_step, channel].float()
        mean_t = torch.zeros(t.out_dim, device=x.device) if t.target_mean is None else x.new_tensor(t.target_mean)
        std_t = torch.ones(t.out_dim, device=x.device) if t.target_std is None else x.new_tensor(t.target_std)
        scale, offset = None, None
        if t.forecast_residual:
            offset = (last[:, None] - mean_t) / std_t
        if t.forecast_instance_norm:
            w = real.unsqueeze(-1).to(x.dtype)
            n = w.sum(1, keepdim=True).clamp(min=1)
            mu = (x * w).sum(1, keepdim=True) / n
            sigma = (((x - mu) ** 2 * w).sum(1, keepdim=True) / n).sqrt() + 1e-5
            batch = {**batch, modality: (x - mu) / sigma * w}
            scale = sigma[:, 0, channel, None].float() / std_t
            if offset is None:  # RevIN proper: the window's mean is added back
                offset = (mu[:, 0, channel, None].float() - mean_t) / std_t
        return ForecastView(batch, offset, scale)

    @staticmethod
    def forecast_output(out: torch.Tensor | tuple[torch.Tensor, ...], view: ForecastView
                        ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A head's output (or each path's of a tuple) × the view's scale + its offset."""
        if isinstance(out, tuple):
            return tuple(MultitaskModel.forecast_output(o, view) for o in out)
        if view.scale is not None:
            out = out * view.scale.to(out.dtype)
        if view.offset is not None:
            out = out + view.offset.to(out.dtype)
        return out

    def compile_step(self, **options) -> None:
        """``torch.compile`` (with ``options``) the work of ``step_outputs``, in place: the weights
        and state-dict keys stay as they are. Here the forward; a model whose ``step_outputs`` does
        not go through it compiles the parts it does call."""
        self.compile(**options)

    def postprocess(self, out: torch.Tensor, task: str) -> dict[str, torch.Tensor]:
        """Head output → class indices + probabilities, or regression values in the target's units."""
        t = self.task(task)
        if t.is_classification:
            probs = out.float().softmax(-1)
            return {"pred": probs.argmax(-1), "probs": probs}
        if t.target_mean is not None and t.target_std is not None:
            out = out * out.new_tensor(t.target_std) + out.new_tensor(t.target_mean)
        return {"pred": out}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
        was_training = self.training
        self.eval()
        try:
            return self.postprocess(self(batch, task), task)
        finally:
            self.train(was_training)


def piece_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               out: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
    """A piece's training loss: ``loss`` of its output, or the mean over the paths of a tuple."""
    if isinstance(out, tuple):
        return torch.stack([loss(o, target) for o in out]).mean()
    return loss(out, target)
