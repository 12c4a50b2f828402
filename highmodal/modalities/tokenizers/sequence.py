"""Patches along time for time series and IMU signals (PatchTST, Nie et al. 2023).

OmniVec2 names no tokenizer for series; PatchTST's patching is the established transformer input for
them: cut the series into non-overlapping windows of p steps and embed each window linearly, so a
token carries local shape rather than one noisy sample, and the token count drops p-fold. The patch
length defaults to the smallest power of two leaving at most 32 patches and putting at least 4 numbers
in a token (univariate ItalyPowerDemand's 24 hours become 6 patches of 4, BasicMotions' 100 steps of 3
axes 25 patches of 4).

The open choice is how channels share tokens. PatchTST makes each channel its own sequence of
patches (channel independence), which suits many homogeneous channels; our series mix heterogeneous
channels (accelerometer axes, ICU vitals and labs with their own scales and missingness), and one
token per patch and channel multiplies the sequence length by C (74 for PhysioNet). So the default
mixes channels inside each patch, ``Conv1d(C, d, p, stride=p)``; ``channel_independent: true`` gives
PatchTST's form, one token per (channel, patch) from a shared ``Linear(p, d)`` plus a learned channel
embedding (channel-major order). Both add learned patch positions. Series are zero-padded to a
multiple of p; with variable lengths a patch is real when any of its steps is, and padded steps are
zeroed after normalisation so a partly filled patch does not depend on the batch's padding.
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
    patch_mask,
    register_tokenizer,
    zero_padded_steps,
)

MAX_PATCHES = 32


def series_patch(length: int, channels: int, max_patches: int = MAX_PATCHES) -> int:
    """The smallest power of two p with ``ceil(length / p) <= max_patches`` whose patches hold at
    least ``MIN_TOKEN_VALUES`` numbers (when the series is that long)."""
    p = 1
    while math.ceil(length / p) > max_patches or (p * channels < MIN_TOKEN_VALUES and p < length):
        p *= 2
    return p


@dataclasses.dataclass
class SequenceOptions:
    """``patch``: steps per token (None: from the length); ``channel_independent``: one token per
    channel and patch (PatchTST) instead of one per patch."""

    patch: int | None = None
    channel_independent: bool = False


@register_tokenizer("time_series", "imu")
class SeriesPatches(Tokenizer):
    Options = SequenceOptions
    summary = "PatchTST patches along time: Conv1d(kernel=stride=p) over all channels (or per channel) + positions"

    def __init__(self, spec: ModalitySpec, d_model: int, options: SequenceOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 1:
            raise self.fail("expects a series (steps, channels)")
        if options.patch is not None and options.patch < 1:
            raise self.fail(f"option patch must be >= 1, got {options.patch}")
        (steps,) = spec.ref_lengths()
        self.patch = options.patch or series_patch(steps, 1 if options.channel_independent else spec.channels)
        self.pos = learned_positions(math.ceil(steps / self.patch), d_model=d_model)
        if options.channel_independent:
            self.proj: nn.Module = nn.Linear(self.patch, d_model)
            self.channel = learned_positions(spec.channels, d_model=d_model)
        else:
            self.proj = nn.Conv1d(spec.channels, d_model, self.patch, stride=self.patch)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        steps = self.step_mask(x, mask)
        x = zero_padded_steps(self.normalised(x), steps).transpose(1, 2)  # (B, C, T)
        x = nn.functional.pad(x, (0, -x.shape[2] % self.patch))
        n_patches = x.shape[2] // self.patch
        token_mask = None if steps is None else patch_mask(steps, self.patch)
        windows = x.reshape(*x.shape[:2], n_patches, self.patch)  # (B, C, patches, p)
        if not self.options.channel_independent:
            patches = windows.transpose(1, 2).flatten(2) if targets else None  # (B, patches, C · p)
            return Tokens(self.proj(x).transpose(1, 2), self.pos[:n_patches], token_mask, patches)
        pos = (self.pos[:n_patches] + self.channel[:, None]).flatten(0, 1)
        if token_mask is not None:
            token_mask = token_mask.repeat(1, self.spec.channels)
        return Tokens(self.proj(windows).flatten(1, 2), pos, token_mask, windows.flatten(1, 2) if targets else None)
