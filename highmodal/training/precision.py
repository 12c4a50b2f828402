"""Mixed precision by name: ``train.amp`` and ``bench speed --amp`` take a name from ``config.AMP``,
and this is the one place it becomes an autocast dtype."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from highmodal.config import AMP


def autocast(device: torch.device, amp: str | None) -> AbstractContextManager:
    """Autocast to ``amp``'s dtype on ``device`` (``None``: full precision, no context)."""
    return torch.autocast(device.type, dtype=getattr(torch, AMP[amp])) if amp else nullcontext()
