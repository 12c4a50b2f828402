"""Split arrays → model batches ``{modality: Tensor, "<modality>_mask": Tensor, "target": Tensor}``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from highmodal.tasks import SplitData, Task


class TaskTensors:
    """A split held as tensors once (the data sets here are small), sliced into batches."""

    def __init__(self, task: Task, data: SplitData, device: torch.device | str = "cpu") -> None:
        self.task = task
        self.inputs = {m: torch.as_tensor(data.inputs[m], dtype=torch.float32, device=device) for m in task.modalities}
        self.masks = {m: torch.as_tensor(v, dtype=torch.bool, device=device) for m, v in data.masks.items()
                      if m in task.modalities}
        y = torch.as_tensor(data.y, device=device)
        if not task.is_classification:
            y = y.float()
            if task.target_mean is not None and task.target_std is not None:
                y = (y - y.new_tensor(task.target_mean)) / y.new_tensor(task.target_std)
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        out = {m: x[idx] for m, x in self.inputs.items()}
        out.update({f"{m}_mask": v[idx] for m, v in self.masks.items()})
        out["target"] = self.y[idx]
        return out

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def shuffled(self, batch_size: int, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """Batches in a random order; the permutation goes to the data's device once per epoch, not
        once per batch and tensor."""
        perm = torch.as_tensor(rng.permutation(len(self))).to(self.y.device)
        for i in range(0, len(self), batch_size):
            yield self.batch(perm[i : i + batch_size])

    def ordered(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.batch(slice(i, i + batch_size))


def micro_batches(batch: dict[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    """``batch`` cut row-wise into ``k`` near-equal parts (the last ones empty when rows < k)."""
    parts = {key: v.tensor_split(k) for key, v in batch.items()}
    return [{key: p[i] for key, p in parts.items()} for i in range(k)]
