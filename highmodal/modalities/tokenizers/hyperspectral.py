"""Spectral-spatial tokens for hyperspectral patches (SpectralFormer, Hong et al. 2022).

A hyperspectral sample is a small pixel neighbourhood with a long spectrum per pixel; the Samson
loader gives ``(h, w, groups, bands)``: 3×3 pixels × 12 groups of 13 adjacent bands. OmniVec2 names
no tokenizer for it. SpectralFormer's group-wise spectral embedding makes a token of each run of
adjacent bands, so attention runs along the spectrum where the class evidence is; its patch-wise
variant folds the spatial neighbourhood into every group token. That is the default,
``tokens: spectral``: one token per spectral group, ``Linear(h·w·bands, d)`` over the group's whole
spatial cube, plus a learned group position (12 tokens for Samson).

Left open is whether neighbouring pixels should be tokens of their own. ``tokens: spectral_spatial``
makes them so: one token per (pixel, group) from a shared ``Linear(bands, d)``, plus learned pixel
and group positions, pixel-major (108 tokens for Samson), so attention can also compare the centre
pixel's spectrum with its neighbours'. The spectral default is nine times fewer tokens.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import Tokenizer, Tokens, learned_positions, register_tokenizer

MODES = ("spectral", "spectral_spatial")


@dataclasses.dataclass
class HyperspectralOptions:
    """``tokens``: ``spectral`` (one token per band group) or ``spectral_spatial`` (per pixel and group)."""

    tokens: str = "spectral"


@register_tokenizer("hyperspectral")
class SpectralGroupEmbedding(Tokenizer):
    Options = HyperspectralOptions
    summary = "SpectralFormer group-wise tokens: one per band group over the pixel patch (or per pixel and group)"

    def __init__(self, spec: ModalitySpec, d_model: int, options: HyperspectralOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 3 or spec.variable:
            raise self.fail("expects pixel patches laid out (height, width, band groups, bands per group), e.g. "
                            "Samson's (3, 3, 12, 13); cut the spectrum into groups of adjacent bands")
        if options.tokens not in MODES:
            raise self.fail(f"option tokens must be one of {', '.join(MODES)}, got {options.tokens!r}")
        height, width, groups = spec.ref_lengths()
        self.group_pos = learned_positions(groups, d_model=d_model)
        if options.tokens == "spectral":
            self.proj = nn.Linear(height * width * spec.channels, d_model)
        else:
            self.proj = nn.Linear(spec.channels, d_model)
            self.pixel_pos = learned_positions(height * width, d_model=d_model)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        x = self.normalised(x)
        if self.options.tokens == "spectral":
            cubes = x.permute(0, 3, 1, 2, 4).flatten(2)  # (B, groups, h·w·bands)
            return Tokens(self.proj(cubes), self.group_pos, None, cubes if targets else None)
        spectra = x.flatten(1, 3)  # (B, h·w·groups, bands)
        pos = (self.pixel_pos[:, None] + self.group_pos).flatten(0, 1)
        return Tokens(self.proj(spectra), pos, None, spectra if targets else None)
