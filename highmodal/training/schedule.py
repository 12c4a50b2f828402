"""The learning-rate schedule every training run uses: linear warm-up, then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(total_steps: int, warmup_frac: float, min_ratio: float):
    """The factor on the base learning rate at each step: linear from 1/warmup to 1 over the first
    ``warmup_frac`` of the steps, then cosine down to ``min_ratio`` at the last."""
    warmup = max(int(total_steps * warmup_frac), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor
