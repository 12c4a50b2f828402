"""HighMMT input standardization: data ⊕ one-hot modality code ⊕ Fourier positions ⊕ zero pad.

Every modality becomes a ``(B, L, d_all)`` sequence with ``L`` = product of its position axes and
``d_all = max_m(d_m + |M| + d_pm)`` (HighMMT §3.1, Appendix B.1). There are no trainable
parameters here. The reference code orders the blocks as data ⊕ zeros ⊕ positions ⊕ one-hot; we
follow the paper's §3.1 order. The two differ by a fixed permutation of input channels, which the
encoder's first linear maps absorb, so the model family is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.nn.factored import StandardInput
from highmodal.nn.fourier import fourier_encode, grid_positions

SUMMARY = ("data ⊕ one-hot modality code ⊕ Fourier position features, zero-padded to the suite's common width "
           "d_all: one format for the shared Perceiver, whatever the kind")


class Normaliser(nn.Module):
    """Applies the spec's training-split statistics: per-channel stats broadcast over positions,
    per-element stats (tables) have the full shape. They are non-persistent buffers: they move with
    the model, so a step copies nothing from the host (a stall on a GPU), and checkpoints are
    unchanged (the spec, saved with the run, carries the numbers)."""

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__()
        stats = (None, None)
        if spec.mean is not None and spec.std is not None:
            shape = (spec.channels,) if len(spec.mean) == spec.channels else spec.shape
            stats = tuple(torch.tensor(v, dtype=torch.float32).reshape(shape) for v in (spec.mean, spec.std))
        self.register_buffer("mean", stats[0], persistent=False)
        self.register_buffer("std", stats[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x if self.mean is None else (x - self.mean) / self.std


class Standardizer(nn.Module):
    """Maps each modality of a suite to the shared ``d_all``-wide token format."""

    def __init__(self, specs: Sequence[ModalitySpec], shared_embedding: bool = True) -> None:
        """``shared_embedding=False`` gives every modality the same code (the paper's
        "w/o embeddings" ablation) while keeping the width unchanged."""
        super().__init__()
        if not specs:
            raise HighmodalError("a model needs at least one modality")
        self.normalisers = nn.ModuleDict({s.name: Normaliser(s) for s in specs})
        self.specs = {s.name: s for s in specs}
        self.index = {name: i for i, name in enumerate(self.specs)}
        self.num_modalities = len(self.specs)
        self.shared_embedding = shared_embedding
        self.d_all = max(s.channels + self.num_modalities + s.pos_dim for s in self.specs.values())

    def layout(self, name: str) -> dict[str, slice]:
        """Where each block of modality ``name`` sits in the ``d_all`` channels."""
        s = self.specs[name]
        c, m, p = s.channels, self.num_modalities, s.pos_dim
        return {
            "data": slice(0, c),
            "modality": slice(c, c + m),
            "position": slice(c + m, c + m + p),
            "pad": slice(c + m + p, self.d_all),
        }

    def forward(
        self, name: str, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: ``(B, *axes, channels)`` → ``(B, L, d_all)`` and a ``(B, L)`` mask (or None)."""
        parts = self.parts(name, x, mask)
        return parts.tokens(), parts.mask

    def parts(self, name: str, x: torch.Tensor, mask: torch.Tensor | None = None) -> StandardInput:
        """The same tokens as ``__call__``, kept factored into per-sample data and shared channels."""
        if name not in self.specs:
            raise HighmodalError(f"modality {name!r} is not one of the model's: {', '.join(self.specs)}")
        s = self.specs[name]
        if s.vocab_size is not None:
            raise HighmodalError(f"modality {name!r} holds token ids (vocab_size {s.vocab_size}); HighMMT reads "
                                 "real-valued features per position: load the text as word vectors")
        b, *axes, c = x.shape
        fits = c == s.channels and len(axes) == len(s.axes) and all(
            a == want if want is not None else a <= s.max_len for a, want in zip(axes, s.axes, strict=True)
        )
        if not fits:
            want = "(B, " + ", ".join("*" if a is None else str(a) for a in s.shape) + ")"
            limit = f" with * <= {s.max_len}" if s.variable else ""
            raise HighmodalError(f"modality {name!r} expected shape {want}{limit}, got {tuple(x.shape)}")
        data = self.normalisers[name](x).reshape(b, -1, c)
        pos = grid_positions(tuple(axes), s.ref_lengths(), device=x.device)
        enc = fourier_encode(pos, s.max_freq, s.num_freq_bands).flatten(-2).reshape(data.shape[1], -1)
        index = self.index[name] if self.shared_embedding else 0
        code = torch.eye(self.num_modalities, device=x.device)[index].expand(data.shape[1], -1)
        pad = self.d_all - c - self.num_modalities - s.pos_dim
        rest = torch.cat([code, enc, code.new_zeros(data.shape[1], pad)], dim=-1)
        if mask is not None:
            mask = mask.reshape(b, -1).bool()
            if mask.shape[1] != data.shape[1]:
                raise HighmodalError(
                    f"modality {name!r}: mask covers {mask.shape[1]} positions, data has {data.shape[1]}"
                )
        return StandardInput(data, rest, mask)
