"""A probe: two fully connected layers per task on frozen embeddings (OmniVec2 §4, "adaptation on
unseen datasets": embeddings from the pretrained network, then two FC layers with the task's loss)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.models.base import MultitaskModel
from highmodal.models.registry import register_model
from highmodal.tasks import Task


class Probe(MultitaskModel):
    """Reads each task's one embedding modality, ``(B, 1, D)``: LayerNorm → Linear → ReLU → Linear.
    The LayerNorm only rescales the frozen features (each backbone's embeddings have their own scale)."""

    def __init__(self, specs: Sequence[ModalitySpec], tasks: Sequence[Task], hidden: int = 256) -> None:
        super().__init__(tasks)
        self.specs = list(specs)
        self.hidden = hidden
        dims = {s.name: s.channels for s in specs}
        for t in tasks:
            if len(t.modalities) != 1:
                raise HighmodalError(f"probe task {t.name!r} must read one embedding, not {list(t.modalities)}")
        self.heads = nn.ModuleDict({t.name: nn.Sequential(
            nn.LayerNorm(dims[t.modalities[0]]), nn.Linear(dims[t.modalities[0]], hidden), nn.ReLU(),
            nn.Linear(hidden, t.out_dim)) for t in tasks})

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        return self.heads[task](batch[self.task(task).modalities[0]].flatten(1))

    def arch_config(self) -> dict:
        return {"hidden": self.hidden}


@register_model("probe")
def probe(specs: Sequence[ModalitySpec], tasks: Sequence[Task], preset: str = "default", hidden: int = 256) -> Probe:
    return Probe(specs, tasks, hidden)
