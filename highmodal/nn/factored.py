"""LayerNorm + linear over tokens whose trailing channels every sample shares, without building them.

HighMMT's standardized token is ``data ⊕ modality code ⊕ position features ⊕ zero pad``, ``d_all``
wide (387 in the paper's large setting), but only the first ``c`` channels differ between samples:
the rest depends on the position alone. ``W · LayerNorm(t)`` is affine in ``t`` once the token's
mean ``μ`` and inverse deviation ``r`` are known::

    W · LN(t) = r · (W_γ t − μ · W_γ 1) + W β,      W_γ = W · diag(γ)

and ``W_γ t = W_γ[:, :c] · data + W_γ[:, c:] · rest``, where the second term is one ``(L, out)``
matrix for the whole batch. So the per-sample cost drops from ``L · d_all · out`` to ``L · c · out``
multiply-adds, and the ``(B, L, d_all)`` token tensor is never materialised. The statistics are
computed from the two blocks exactly (a centred sum for the data, closed-form sums for the shared
block), so the result equals ``F.linear(layer_norm(cat(data, rest)), W)`` to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def norm_linear(norm: nn.LayerNorm, weight: torch.Tensor, data: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """``F.linear(norm(cat([data, rest.expand(B, L, -1)], -1)), weight)`` in factored form.

    ``data``: ``(B, L, c)``; ``rest``: ``(L, d - c)``, the channels every sample shares; ``norm``: a
    ``LayerNorm(d)`` with affine parameters; ``weight``: ``(out, d)``. Returns ``(B, L, out)``."""
    c, d = data.shape[-1], data.shape[-1] + rest.shape[-1]
    w = weight * norm.weight  # W · diag(γ)
    mean = (data.sum(-1) + rest.sum(-1)) / d  # (B, L)
    shared_sq = rest.square().sum(-1) - 2 * mean * rest.sum(-1) + rest.shape[-1] * mean.square()
    var = ((data - mean.unsqueeze(-1)).square().sum(-1) + shared_sq) / d
    inv = torch.rsqrt(var + norm.eps).unsqueeze(-1)
    mean = mean.unsqueeze(-1)
    projected = data @ w[:, :c].T + rest @ w[:, c:].T - mean * w.sum(1)
    return inv * projected + weight @ norm.bias


@dataclass(frozen=True)
class StandardInput:
    """One modality's standardized tokens in factored form: ``cat([data, rest])`` per position, with
    masked positions all zero. Only ``data`` (``(B, L, c)``) varies between samples; ``rest``
    (``(L, d_all - c)``: code, positions, pad) is shared, which lets the encoder's first projection
    skip most of the ``d_all`` channels (:func:`norm_linear`). ``mask``: ``(B, L)`` or None."""

    data: torch.Tensor
    rest: torch.Tensor
    mask: torch.Tensor | None

    @property
    def batch(self) -> int:
        return self.data.shape[0]

    @property
    def length(self) -> int:
        return self.data.shape[1]

    def tokens(self) -> torch.Tensor:
        """The materialised ``(B, L, d_all)`` tokens."""
        tokens = torch.cat([self.data, self.rest.expand(self.batch, -1, -1)], dim=-1)
        return tokens if self.mask is None else tokens * self.mask.unsqueeze(-1)
