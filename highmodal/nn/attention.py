"""Multi-head attention on torch's fused scaled_dot_product_attention (no hand-written softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Queries from ``x``, keys/values from ``context`` (self-attention when context is None).

    Projections follow perceiver-pytorch (bias-free q/kv, biased output), so parameter counts
    line up with the HighMMT reference models.
    """

    def __init__(
        self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or query_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``mask``: ``(B, L_context)`` booleans, True where a context position is real, or
        ``(B, L_x, L_context)``: which context positions each query may attend to."""
        k, v = self.split_kv(self.to_kv(x if context is None else context))
        return self.attend(self.split_heads(self.to_q(x)), k, v, mask)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, L, heads·dim_head)`` → ``(B, heads, L, dim_head)``."""
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def split_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``to_kv`` output ``(B, L, 2·inner)`` → keys and values, each ``(B, heads, L, dim_head)``."""
        k, v = kv.unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of head-split queries over head-split keys/values, then the output projection.
        Split from ``forward`` so callers that share projections (one context for many queries,
        or a context computed in factored form) reuse the same kernel and weights."""
        attn_mask = None if mask is None else mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """GEGLU feed-forward (lucidrains' Perceiver default)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult * 2)
        self.drop = nn.Dropout(dropout)
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gates = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.drop(a * F.gelu(gates)))


class PreNorm(nn.Module):
    """LayerNorm before ``fn`` on the input, and on the context when ``context_dim`` is given."""

    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.norm_context is not None:
            kwargs["context"] = self.norm_context(kwargs["context"])
        return self.fn(self.norm(x), **kwargs)
