"""What every multitask model shares, whatever its encoder: task lookup and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from highmodal.data.task import Task
from highmodal.errors import HighmodalError, did_you_mean


class MultitaskModel(nn.Module):
    """Subclasses implement ``forward(batch, task) -> raw head output``."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.tasks = {t.name: t for t in tasks}

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise HighmodalError(f"unknown task {name!r}{did_you_mean(name, self.tasks)}; "
                                 f"tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

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
