"""What every multitask model shares, whatever its encoder: task lookup and prediction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from highmodal.data.task import Task
from highmodal.errors import HighmodalError, did_you_mean


@dataclass
class Piece:
    """One part of a training step: a batch of ``task``, restricted to ``modality`` when set
    (OmniVec2's pairwise training feeds one modality per stream), else with all its modalities."""

    task: str
    modality: str | None
    batch: dict[str, torch.Tensor]


class MultitaskModel(nn.Module):
    """Subclasses implement ``forward(batch, task) -> raw head output``; ``default_sampler`` names
    the multitask sampler (``training/samplers.py``) the model's paper trains it with."""

    default_sampler = "staggered"

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
