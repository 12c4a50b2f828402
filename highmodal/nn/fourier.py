"""Fourier position features, as in perceiver-pytorch (the library the HighMMT code builds on)."""

from __future__ import annotations

import math

import torch


def fourier_encode(x: torch.Tensor, max_freq: float, num_bands: int) -> torch.Tensor:
    """Encode positions ``x`` (any shape, values in [-1, 1]) as ``[sin(π s x), cos(π s x), x]``.

    The scales are ``linspace(1, max_freq / 2, num_bands)`` exactly as in perceiver-pytorch, so
    with HighMMT's ``max_freq=1`` they run from 1 down to 0.5. Output adds a last axis of size
    ``2 * num_bands + 1``.
    """
    x = x.unsqueeze(-1)
    scales = torch.linspace(1.0, max_freq / 2, num_bands, device=x.device, dtype=x.dtype)
    scaled = x * scales * math.pi
    return torch.cat([scaled.sin(), scaled.cos(), x], dim=-1)


def grid_positions(lengths: tuple[int, ...], ref_lengths: tuple[int, ...], device=None) -> torch.Tensor:
    """Positions of a grid with ``lengths`` per axis, normalised by ``ref_lengths`` to [-1, 1].

    Index ``i`` on an axis of reference length ``L`` sits at ``-1 + 2 i / (L - 1)``: for a fixed
    axis this is ``linspace(-1, 1, L)``; for a variable axis it keeps a sample's positions
    independent of its batch's padding. Returns ``(*lengths, len(lengths))``.
    """
    axes = [
        torch.arange(n, device=device, dtype=torch.float32) * (2.0 / max(ref - 1, 1)) - 1.0
        for n, ref in zip(lengths, ref_lengths, strict=True)
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
