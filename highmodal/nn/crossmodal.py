"""Crossmodal transformer: one modality's latents attend to another's (HighMMT §3.1, Appendix B.3)."""

from __future__ import annotations

import torch
from torch import nn

from highmodal.nn.perceiver import PerceiverLayer


class CrossmodalTransformer(nn.Module):
    """``depth`` Perceiver layers whose context is another modality's latent array.

    Every ordered pair is run in ONE batched call: queries and contexts of all pairs are stacked
    along the batch axis, so the cost is a single kernel launch per layer, not one per pair.
    """

    def __init__(self, dim: int, depth: int, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PerceiverLayer(dim, dim, **layer_kwargs) for _ in range(depth))

    def pair_outputs(self, latents: list[torch.Tensor], pairs: list[tuple[int, int]]) -> torch.Tensor:
        """``(P, B, D)``: for each ordered pair (i, j), i's latents query j's; the last latent is kept."""
        x = torch.cat([latents[i] for i, _ in pairs])
        context = torch.cat([latents[j] for _, j in pairs])
        for layer in self.layers:
            x = layer(x, context)
        return x[:, -1].view(len(pairs), latents[0].shape[0], -1)

    def forward(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """``latents``: one ``(B, N, D)`` per modality → ``(B, P·D)`` for the P = M(M-1) ordered pairs."""
        b = latents[0].shape[0]
        return self.pair_outputs(latents, ordered_pairs(len(latents))).transpose(0, 1).reshape(b, -1)


def ordered_pairs(m: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(m) for j in range(m) if i != j]
