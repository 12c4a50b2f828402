"""Stop on a non-finite loss or gradient without a host sync per step.

Reading a flag that the device computed makes the host wait for the device; done every step it
stalls a GPU while the host queues the next step. So each step's flags (one per piece and
micro-batch, one for the balanced sum, one for the gradient norm) are copied to pinned host memory
asynchronously and read ``lag`` steps later, by which time the copy has landed; before anything is
saved or scored, every pending step is read (``drain``). On a GPU the updates of a bad step and of
the ``lag`` steps after it are applied, but the run stops before those weights are checkpointed or
evaluated, so the last checkpoint is intact. On the CPU the flags are read at once, before the
update. The lag is the same in every process, so under torchrun all processes stop at the same
step with the same message (the flags are summed over processes first).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from highmodal.training.resume import TrainingDiverged

GPU_LAG = 2  # steps; the host runs at most this far ahead of reading a step's flags


@dataclass
class _Pending:
    where: str
    pieces: list[str]
    flags: torch.Tensor  # (micro-batches · (pieces + 1) + 1,) on the host, once ``ready`` has fired
    ready: torch.cuda.Event | None


class FiniteWatch:
    """``piece`` names what the losses are of in the messages (tasks in training, modalities in
    pretraining); ``advice`` ends them."""

    def __init__(self, device: torch.device, piece: str = "task", advice: str = "") -> None:
        self.lag = GPU_LAG if device.type == "cuda" else 0
        self.piece, self.advice = piece, advice
        self.pending: deque[_Pending] = deque()

    def add(self, where: str, pieces: list[str], losses: torch.Tensor, norm: torch.Tensor) -> None:
        """One step: ``losses`` ``(micro-batches, pieces + 1)``, non-zero where a piece's loss (or, in
        the last column, their weighted sum) was not finite; ``norm``, the gradient norm."""
        flags = torch.cat([losses.flatten().float(), (~torch.isfinite(norm)).float().reshape(1)])
        ready = None
        if flags.device.type == "cuda":
            host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            flags = host
        self.pending.append(_Pending(where, pieces, flags, ready))

    def poll(self) -> None:
        """Read the steps at least ``lag`` steps old; raise ``TrainingDiverged`` for the first bad one."""
        while len(self.pending) > self.lag:
            self._read(self.pending.popleft())

    def drain(self) -> None:
        """Read every pending step: before a checkpoint or an evaluation."""
        while self.pending:
            self._read(self.pending.popleft())

    def _read(self, step: _Pending) -> None:
        if step.ready is not None:
            step.ready.synchronize()
        *losses, grad = step.flags.tolist()
        if not any(losses) and not grad:
            return
        self.pending.clear()
        n = len(step.pieces)
        rows = [losses[k:k + n + 1] for k in range(0, len(losses), n + 1)]
        for k, row in enumerate(rows):
            if any(row):
                names = [t for t, flag in zip(step.pieces, row, strict=False) if flag]
                at = step.where if len(rows) == 1 else f"{step.where} (micro-batch {k + 1}/{len(rows)})"
                what = f"{self.piece} {', '.join(names)}" if names else "the summed loss"
                raise TrainingDiverged(f"non-finite loss in {what} at {at}{self.advice}")
        raise TrainingDiverged(f"non-finite gradients from {self.piece}s {', '.join(step.pieces)} at {step.where}"
                               f"{self.advice}")
