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
        """``(P, B, D)``: for each ordered pair (i, j), i's latents query j's; the last latent is kept.

        Equal to running each pair through the layers, with less work: a modality's context keys/
        values are projected once per layer however many pairs read them, so are the first layer's
        queries, and the last layer's final self-attention and feed-forward run for the kept latent
        only (HighMMT reads nothing else)."""
        stacked = torch.stack(latents)  # (M, B, N, D)
        qi, cj = [i for i, _ in pairs], [j for _, j in pairs]
        x = None
        for depth, layer in enumerate(self.layers):
            pre = layer.cross_attn
            attn = pre.fn
            k, v = attn.split_kv(attn.to_kv(pre.norm_context(stacked.flatten(0, 1))))
            k, v = (_pick(t.unflatten(0, (len(latents), -1)), cj) for t in (k, v))
            if x is None:
                q = attn.split_heads(attn.to_q(pre.norm(stacked.flatten(0, 1))))
                q = _pick(q.unflatten(0, (len(latents), -1)), qi)
                x = _pick(stacked, qi)
            else:
                q = attn.split_heads(attn.to_q(pre.norm(x)))
            x = layer.process(x + attn.attend(q, k, v), last_only=depth == len(self.layers) - 1)
        return x[:, -1].unflatten(0, (len(pairs), -1))

    def forward(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """``latents``: one ``(B, N, D)`` per modality → ``(B, P·D)`` for the P = M(M-1) ordered pairs."""
        b = latents[0].shape[0]
        return self.pair_outputs(latents, ordered_pairs(len(latents))).transpose(0, 1).reshape(b, -1)


def _pick(t: torch.Tensor, index: list[int]) -> torch.Tensor:
    """``t[index].flatten(0, 1)`` from Python indices: no index tensor to copy to the device per step."""
    return torch.cat([t[i] for i in index])


def ordered_pairs(m: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(m) for j in range(m) if i != j]
