"""Tubelet embedding for video (ViViT, Arnab et al. 2021; VideoMAE, Tong et al. 2022).

Uni-Perceiver, which OmniVec2 follows for its tokenizers (§3.1), embeds video as spatio-temporal
patches; ViViT's "tubelet embedding" is the established form: a Conv3d with kernel = stride =
(t, p, p) turns each block of t frames × p×p cells into one token. We use VideoMAE's t = 2 and pick p
per frame as for images (``vision.grid_patch``: p = 1 for grids of at most 256 cells), since our
loaders already cut frames into patches (AVLetters arrives as a 3×4 grid per frame).

What the paper leaves open, and what we chose:

* Variable length: clips are zero-padded to the batch's longest (and to a multiple of t). A tubelet
  is real when any of its frames is; padded frames are zeroed after normalisation, so a clip's last,
  partly filled tubelet is the same whether the clip is batched alone or with longer ones.
* Positions: a learned spatial table (one per grid cell) plus a learned temporal table (one per
  tubelet up to ``ceil(max_len / t)``), added; the factorised form keeps the table small for long
  clips. Tokens are time-major, then row-major within a frame.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import (
    Tokenizer,
    Tokens,
    learned_positions,
    patch_mask,
    register_tokenizer,
    zero_padded_steps,
)
from highmodal.modalities.tokenizers.vision import grid_patch


@dataclasses.dataclass
class VideoOptions:
    """``tubelet``: frames per token; ``patch``: side of the square patch in grid cells (None: from the grid)."""

    tubelet: int = 2
    patch: int | None = None


@register_tokenizer("video")
class TubeletEmbedding(Tokenizer):
    Options = VideoOptions
    summary = "ViViT tubelets: t frames × p×p cells → Conv3d(kernel=stride) + learned spatial and temporal positions"

    def __init__(self, spec: ModalitySpec, d_model: int, options: VideoOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 3 or None in spec.axes[1:]:
            raise self.fail("expects clips (frames, height, width, channels) with a fixed frame size")
        if options.tubelet < 1 or (options.patch is not None and options.patch < 1):
            raise self.fail(f"options tubelet and patch must be >= 1, got {options.tubelet} and {options.patch}")
        frames, height, width = spec.ref_lengths()
        self.tubelet = options.tubelet
        self.patch = options.patch or grid_patch(height, width, spec.channels * options.tubelet)
        grid = (math.ceil(height / self.patch), math.ceil(width / self.patch))
        self.proj = nn.Conv3d(spec.channels, d_model, (self.tubelet, self.patch, self.patch),
                              stride=(self.tubelet, self.patch, self.patch))
        self.spatial_pos = learned_positions(*grid, d_model=d_model)
        self.temporal_pos = learned_positions(math.ceil(frames / self.tubelet), d_model=d_model)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        frames = self.step_mask(x, mask)
        x = zero_padded_steps(self.normalised(x), frames).permute(0, 4, 1, 2, 3)
        pads = (0, -x.shape[4] % self.patch, 0, -x.shape[3] % self.patch, 0, -x.shape[2] % self.tubelet)
        x = nn.functional.pad(x, pads)
        content = self.proj(x)  # (B, d, tubelets, gh, gw)
        n_time, cells = content.shape[2], content.shape[3] * content.shape[4]
        pos = (self.temporal_pos[:n_time, None, :] + self.spatial_pos.flatten(0, 1)[None]).flatten(0, 1)
        token_mask = None
        if frames is not None:
            token_mask = patch_mask(frames, self.tubelet).repeat_interleave(cells, dim=1)
        tubes = None
        if targets:  # (B, C, T, H, W) → (B, tubelets · gh · gw, C · t · p · p), in token order
            b, c, _, h, w = x.shape
            t, p = self.tubelet, self.patch
            tubes = (x.reshape(b, c, n_time, t, h // p, p, w // p, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
                     .reshape(b, n_time * cells, c * t * p * p))
        return Tokens(content.flatten(2).transpose(1, 2), pos, token_mask, tubes)
