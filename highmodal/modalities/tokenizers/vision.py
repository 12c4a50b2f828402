"""ViT patch embedding for every image-like kind: image, X-ray, infrared and depth.

OmniVec2 defers its tokenizers to the supplementary material and says only that they are "similar to
those used in Uni-Perceiver" (§3.1), whose image tokenizer is ViT's (Dosovitskiy et al. 2021): cut
the image into non-overlapping p×p patches, embed each with one linear map (a Conv2d with kernel =
stride = p) and add a learned position per patch. X-ray, infrared and depth maps are images with other
channels, so they share the class (one registration per kind, separate weights per modality).

What the paper leaves open is the patch size. ViT's 16×16 assumes 224-pixel inputs; our loaders
already cut the real images into patches (MNIST arrives as a 7×7 grid of flattened 4×4 patches), and
sklearn's digits are 8×8 pixels, so the default picks p from the grid: the smallest p giving at most
256 tokens (the token count of a 224-pixel image at p = 14) whose patches hold at least 4 numbers
(a one-pixel token of a grey image leaves LayerNorm only its sign; digits get p = 2). Images whose
sides are not multiples of p are zero-padded on the bottom and right after normalisation, i.e. with
the mean value. Tokens are row-major.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import (
    MIN_TOKEN_VALUES,
    Tokenizer,
    Tokens,
    learned_positions,
    register_tokenizer,
)

MAX_GRID_TOKENS = 256


def grid_patch(height: int, width: int, channels: int, max_tokens: int = MAX_GRID_TOKENS) -> int:
    """The smallest patch side p with ``ceil(height / p) · ceil(width / p) <= max_tokens`` whose
    patches hold at least ``MIN_TOKEN_VALUES`` numbers (when the image is that large)."""
    p = 1
    while (math.ceil(height / p) * math.ceil(width / p) > max_tokens
           or (p * p * channels < MIN_TOKEN_VALUES and p < max(height, width))):
        p += 1
    return p


@dataclasses.dataclass
class VisionOptions:
    """``patch``: side of the square patches in grid cells; None picks it from the grid size."""

    patch: int | None = None


@register_tokenizer("image", "xray", "infrared", "depth")
class PatchEmbedding(Tokenizer):
    Options = VisionOptions
    summary = ("ViT patches: p×p patches (smallest p giving <= 256 tokens of >= 4 values) → Conv2d(kernel=stride=p) "
               "+ learned 2-D positions")

    def __init__(self, spec: ModalitySpec, d_model: int, options: VisionOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 2 or spec.variable:
            raise self.fail("expects fixed-size images (height, width, channels)")
        height, width = spec.ref_lengths()
        if options.patch is not None and options.patch < 1:
            raise self.fail(f"option patch must be >= 1, got {options.patch}")
        self.patch = options.patch or grid_patch(height, width, spec.channels)
        self.grid = (math.ceil(height / self.patch), math.ceil(width / self.patch))
        self.proj = nn.Conv2d(spec.channels, d_model, self.patch, stride=self.patch)
        self.pos = learned_positions(*self.grid, d_model=d_model)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        x = self.normalised(x).permute(0, 3, 1, 2)
        x = nn.functional.pad(x, (0, -x.shape[3] % self.patch, 0, -x.shape[2] % self.patch))
        content = self.proj(x).flatten(2).transpose(1, 2)
        patches = nn.functional.unfold(x, self.patch, stride=self.patch).transpose(1, 2) if targets else None
        return Tokens(content, self.pos.flatten(0, 1), None, patches)
