"""Pre-norm transformer blocks (self- and cross-attention) on the SDPA ``Attention``.

OmniVec2 builds f and g from a BERT-style transformer (multi-head self-attention, GELU MLP). We use
the pre-LayerNorm arrangement rather than BERT's post-norm: it trains stably without a long
warm-up, which matters for the short CPU schedules here, and is what ViT and MAE use.
"""

from __future__ import annotations

import torch
from torch import nn

from highmodal.nn.attention import Attention


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ratio, dim))


class Block(nn.Module):
    """``x + attn(LN x, LN context)`` then ``x + MLP(LN x)``; self-attention when context is None."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0,
                 context_dim: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None
        self.attn = Attention(dim, context_dim, heads=heads, dim_head=dim // heads, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: ``(B, L_context)``, True where a key is real (``L_x`` for self-attention), or a
        per-query ``(B, L_x, L_context)`` attention mask."""
        h = self.norm(x)
        ctx = h if context is None else self.norm_context(context)
        x = x + self.attn(h, ctx, mask)
        return x + self.mlp(self.norm_mlp(x))


class Transformer(nn.Module):
    """``depth`` self-attention blocks and a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x)


def masked_max(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Max over the token axis of ``(B, N, D)``, over real tokens only."""
    if mask is None:
        return x.amax(1)
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis of ``(B, N, D)``, counting only real tokens."""
    if mask is None:
        return x.mean(1)
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
