"""Spectrogram patches for audio (AST, Gong et al. 2021).

OmniVec2 gives no tokenizer details beyond "similar to Uni-Perceiver" (§3.1). An utterance arrives
as a time × frequency map (log-mel frames, MFCCs or LPC cepstra). AST treats it as a one-channel
image and embeds pt × pf patches with a Conv2d (kernel = stride), adding learned positions. AST
uses 16×16 patches of 128-band, 1024-frame spectrograms. SSAST (Gong et al., AAAI 2022) compared
those square patches with frame-based patches spanning every frequency bin (128 × 2) and found the
frame-based ones better on speech; all our audio is speech (spoken digits, letters, vowels), and
trained from scratch the square patches learned much more slowly (docs/omnivec2.md). So the default
patch spans every band (``patch_freq: null``) and 4 frames (FSDD: 25 tokens); ``patch_freq: 8``
gives AST's square-ish patches, with the frequency axis zero-padded to a multiple of pf.

What the paper leaves open, and what we chose:

* Non-overlapping patches (AST overlaps them by 6, which multiplies the token count; the masked
  spectrogram models MAE-AST, which the paper cites, and Audio-MAE use non-overlapping ones, and
  masking overlapping patches would leak the hidden content).
* Positions: separate learned time and frequency tables, added (factorised, so variable lengths up
  to ``max_len`` need only one row per time patch). Tokens are time-major.
* Variable length: a time patch is real when any of its frames is; padded frames are zeroed after
  normalisation, so the last, partly filled patch does not depend on the batch's padding.
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


@dataclasses.dataclass
class AudioOptions:
    """``patch_time``: frames per patch; ``patch_freq``: bands (or coefficients) per patch (None: all)."""

    patch_time: int = 4
    patch_freq: int | None = None


@register_tokenizer("audio")
class SpectrogramPatches(Tokenizer):
    Options = AudioOptions
    summary = ("SSAST frame patches (all bands × 4 frames; or AST time × frequency patches) → Conv2d(kernel=stride) "
               "+ learned time, freq positions")

    def __init__(self, spec: ModalitySpec, d_model: int, options: AudioOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 1:
            raise self.fail("expects time × frequency maps (frames, bands), e.g. log-mel frames or MFCCs")
        if options.patch_time < 1 or (options.patch_freq is not None and options.patch_freq < 1):
            raise self.fail(f"options patch_time and patch_freq must be >= 1, got {options.patch_time} "
                            f"and {options.patch_freq}")
        self.patch = (options.patch_time, options.patch_freq or spec.channels)
        (frames,) = spec.ref_lengths()
        self.proj = nn.Conv2d(1, d_model, self.patch, stride=self.patch)
        self.time_pos = learned_positions(math.ceil(frames / self.patch[0]), d_model=d_model)
        self.freq_pos = learned_positions(math.ceil(spec.channels / self.patch[1]), d_model=d_model)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        frames = self.step_mask(x, mask)
        x = zero_padded_steps(self.normalised(x), frames)
        x = nn.functional.pad(x, (0, -x.shape[2] % self.patch[1], 0, -x.shape[1] % self.patch[0]))
        content = self.proj(x[:, None]).permute(0, 2, 3, 1)  # (B, time patches, freq patches, d)
        n_time, n_freq = content.shape[1:3]
        pos = (self.time_pos[:n_time, None, :] + self.freq_pos).flatten(0, 1)
        token_mask = None
        if frames is not None:
            token_mask = patch_mask(frames, self.patch[0]).repeat_interleave(n_freq, dim=1)
        patches = None
        if targets:
            pt, pf = self.patch
            patches = x.reshape(x.shape[0], n_time, pt, n_freq, pf).transpose(2, 3).reshape(
                x.shape[0], n_time * n_freq, pt * pf)
        return Tokens(content.flatten(1, 2), pos, token_mask, patches)
