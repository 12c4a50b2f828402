"""A compact Perceiver: cross-attention from a latent array into the input, then latent self-attention."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from highmodal.nn.attention import Attention, FeedForward, PreNorm
from highmodal.nn.factored import StandardInput, norm_linear


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
        return self.process(x + self.cross_attn(x, context=context, mask=mask))

    def process(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Everything after the cross-attention. ``last_only``: return the last latent alone,
        ``(B, 1, dim)``; its final self-attention and feed-forward then run for that row only
        (the keys still come from every latent), which is all a caller keeping one latent needs."""
        x = x + self.cross_ff(x)
        for i, (attn, ff) in enumerate(self.latent):
            if last_only and i == len(self.latent) - 1:
                h = attn.norm(x)
                # One query per head: the CPU flash kernel still works in blocks of many queries and
                # is ~5x slower here than the math kernel (HighMMT large shapes); GPUs keep theirs.
                with sdpa_kernel(SDPBackend.MATH) if h.device.type == "cpu" else nullcontext():
                    x = x[:, -1:] + attn.fn(h[:, -1:], context=h)
            else:
                x = x + attn(x)
            x = x + ff(x)
        return x

    def cross_attend_inputs(self, x: torch.Tensor, inputs: Sequence[StandardInput]) -> torch.Tensor:
        """``x`` plus its cross-attention into standardized ``inputs``; ``x`` holds their latents
        stacked along the batch axis in order. Keys/values come from the factored inputs (no
        ``d_all``-wide tokens), and inputs of equal length share one attention call."""
        pre = self.cross_attn
        attn: Attention = pre.fn
        q = attn.split_heads(attn.to_q(pre.norm(x)))
        starts = [0]
        for inp in inputs:
            starts.append(starts[-1] + inp.batch)
        by_length: dict[int, list[int]] = {}
        for i, inp in enumerate(inputs):
            by_length.setdefault(inp.length, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(inputs)
        for idx in by_length.values():
            kvs = []
            for i in idx:
                kv = norm_linear(pre.norm_context, attn.to_kv.weight, inputs[i].data, inputs[i].rest)
                if inputs[i].mask is not None:  # as the materialised path: a masked token is all zeros
                    kv = torch.where(inputs[i].mask.unsqueeze(-1), kv, attn.to_kv.weight @ pre.norm_context.bias)
                kvs.append(kv)
            k, v = attn.split_kv(torch.cat(kvs))
            masks = [inputs[i].mask for i in idx]
            mask = None if all(m is None for m in masks) else torch.cat([
                m if m is not None else torch.ones_like(inputs[i].data[..., 0], dtype=torch.bool)
                for i, m in zip(idx, masks, strict=True)
            ])
            qg = torch.cat([q[starts[i]:starts[i + 1]] for i in idx])
            y = attn.attend(qg, k, v, mask)
            for i, part in zip(idx, y.split([inputs[i].batch for i in idx]), strict=True):
                out[i] = part
        return x + torch.cat(out)


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

    def encode_inputs(self, inputs: Sequence[StandardInput]) -> list[torch.Tensor]:
        """Latents ``(B_i, num_latents, dim)`` of each standardized input, equal to ``forward`` on its
        materialised tokens; everything but the keys/values runs once over all inputs stacked."""
        x = self.latents.expand(sum(inp.batch for inp in inputs), -1, -1)
        for layer in self.layers:
            x = layer.process(layer.cross_attend_inputs(x, inputs))
        return list(x.split([inp.batch for inp in inputs]))
