"""A compact Perceiver: cross-attention from a latent array into the input, then latent self-attention."""

from __future__ import annotations

import torch
from torch import nn

from highmodal.nn.attention import Attention, FeedForward, PreNorm


class PerceiverLayer(nn.Module):
    """Cross-attend ``x`` into ``context``, then ``latent_blocks`` of self-attention + feed-forward.

    HighMMT uses this layer twice: in the unimodal encoder (context = standardized input) and in
    the crossmodal transformer (context = the other modality's latents).
    """

    def __init__(
        self, dim: int, context_dim: int, cross_heads: int, cross_dim_head: int, latent_heads: int,
        latent_dim_head: int, latent_blocks: int = 1, ff_mult: int = 4, attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cross_attn = PreNorm(
            dim, Attention(dim, context_dim, cross_heads, cross_dim_head, attn_dropout), context_dim=context_dim
        )
        self.cross_ff = PreNorm(dim, FeedForward(dim, ff_mult, ff_dropout))
        self.latent = nn.ModuleList(
            nn.ModuleList([
                PreNorm(dim, Attention(dim, None, latent_heads, latent_dim_head, attn_dropout)),
                PreNorm(dim, FeedForward(dim, ff_mult, ff_dropout)),
            ])
            for _ in range(latent_blocks)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.cross_attn(x, context=context, mask=mask)
        x = x + self.cross_ff(x)
        for attn, ff in self.latent:
            x = x + attn(x)
            x = x + ff(x)
        return x


class PerceiverEncoder(nn.Module):
    """Trainable latent array of ``num_latents × dim`` refined by ``depth`` Perceiver layers."""

    def __init__(self, input_dim: int, num_latents: int, dim: int, depth: int, **layer_kwargs) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, input_dim, **layer_kwargs) for _ in range(depth))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens``: ``(B, L, input_dim)`` → latents ``(B, num_latents, dim)``."""
        x = self.latents.expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, tokens, mask)
        return x
