"""Aligned-token comparison: how well two modalities on one position grid agree, position by position.

Not part of HighMMT. Its crossmodal transformer compares Perceiver latents, and each latent pools every
position before any comparison is made, so a label that says whether two pixel-aligned images show the
same scene (RoadScene) leaves the model at chance: what matters is whether their structures coincide at
the same places. This block is the diagonal of a token-level cross-attention score, kept per channel:
``mean_t q(x_t) ⊙ k(y_t)`` over the positions ``t`` both inputs share, with a small MLP for ``q`` and ``k``
so local structure (edges, not raw intensities) can be compared.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class AlignedComparison(nn.Module):
    """``(x, y)`` of shape ``(B, L, d_in)`` each, token ``t`` of both at the same position → ``(B, dim)``."""

    def __init__(self, d_in: int, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * dim
        self.query, self.key = _mlp(d_in, hidden, dim), _mlp(d_in, hidden, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.query(x) * self.key(y)).mean(1)
