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

    def forward(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """``latents``: one ``(B, N, D)`` per modality → ``(B, P·D)`` for the P = M(M-1) ordered
        pairs (i → j: i's latents query j's), keeping each pair's last latent vector."""
        m = len(latents)
        pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
        b = latents[0].shape[0]
        x = torch.cat([latents[i] for i, _ in pairs])
        context = torch.cat([latents[j] for _, j in pairs])
        for layer in self.layers:
            x = layer(x, context)
        return x[:, -1].view(len(pairs), b, -1).transpose(0, 1).reshape(b, -1)
