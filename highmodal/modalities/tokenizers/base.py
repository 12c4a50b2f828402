"""OmniVec2 tokenizers: one per modality kind, each mapping ``(B, *axes, C)`` to ``(B, N, d_model)``.

A tokenizer owns everything modality-specific before the shared transformer: normalisation, cutting
the input into tokens (patches, tubelets, point groups, ...), the token embedding and the position
encoding. The paper attaches no modality embedding (the transformer sees one modality at a time,
§3.1), so none is added here. Options per kind come from the model config
(``tokenizers: {image: {patch: 2}}``) and are checked like every other config field.

Every tokenizer implements ``tokens``, which keeps the content and position embeddings apart and can
return what each token was made from (its patch, point group, feature, subword id): masked
pretraining drops or replaces token contents, gives a decoder the positions of the missing tokens,
and reconstructs those targets. ``forward`` is ``combine(content, pos)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from highmodal.config import from_mapping
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Normaliser
from highmodal.registry import Registry


@dataclasses.dataclass
class Tokens:
    """``content`` ``(B, N, D)``; ``pos`` broadcastable to it (None: the tokens carry no positions);
    ``mask`` ``(B, N)`` True for real tokens (None: all real); ``targets`` (when asked for) what each
    token encodes, ``(B, N, P)`` in normalised units, or ``(B, N)`` ids for ``target_loss == "ce"``."""

    content: torch.Tensor
    pos: torch.Tensor | None
    mask: torch.Tensor | None
    targets: torch.Tensor | None = None


@dataclasses.dataclass
class NoOptions:
    """For tokenizers without settings."""


class Tokenizer(nn.Module):
    """``forward(x, mask) -> (tokens (B, N, d_model), mask (B, N) or None)``.

    ``mask`` is the data's ``(B, *variable axes)`` validity mask (True = real); the returned mask
    marks real tokens, or is None when every token is real.
    """

    Options: ClassVar[type] = NoOptions
    summary: ClassVar[str] = ""
    target_loss: ClassVar[str] = "l2"  # how a masked token's reconstruction is scored: l2 | chamfer | ce

    def __init__(self, spec: ModalitySpec, d_model: int, options: Any) -> None:
        super().__init__()
        self.spec, self.d_model, self.options = spec, d_model, options
        self.normaliser = Normaliser(spec)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        raise NotImplementedError

    def combine(self, content: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        """Content and position embeddings → the transformer's input tokens."""
        return content if pos is None else content + pos

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.tokens(x, mask)
        return self.combine(t.content, t.pos), t.mask

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        return self.normaliser(x)

    def check_shape(self, x: torch.Tensor) -> None:
        s = self.spec
        axes = x.shape[1:-1]
        ok = x.shape[-1] == s.channels and len(axes) == len(s.axes) and all(
            a == want if want is not None else a <= s.max_len for a, want in zip(axes, s.axes, strict=True))
        if not ok:
            want = "(B, " + ", ".join("*" if a is None else str(a) for a in s.shape) + ")"
            raise HighmodalError(f"modality {s.name!r} expected shape {want}, got {tuple(x.shape)}")

    def step_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The data mask reduced to the first axis, ``(B, T)``: a step is real when any of its entries is
        (AVLetters expands its frame mask over the patch grid, ``(B, T, h, w)``). None: all real."""
        if mask is None:
            return None
        if mask.shape[:2] != x.shape[:2]:
            raise HighmodalError(f"modality {self.spec.name!r}: mask {tuple(mask.shape)} does not match the input "
                                 f"{tuple(x.shape)}; expected (B, T, ...) with (B, T) = {tuple(x.shape[:2])}")
        return mask.bool().reshape(*x.shape[:2], -1).any(-1)

    def fail(self, expected: str) -> HighmodalError:
        """An error naming the modality, its kind and shape, and the layout this tokenizer needs."""
        return HighmodalError(f"modality {self.spec.name!r} ({self.spec.kind}, shape {self.spec.shape}): "
                              f"{type(self).__name__} {expected}")


# A token should carry a few numbers: a one-value token (a pixel of a grey image, one step of a
# univariate series) leaves the transformer's LayerNorm only the value's sign to work with.
MIN_TOKEN_VALUES = 4


def learned_positions(*sizes: int, d_model: int) -> nn.Parameter:
    """A learned position table ``(*sizes, d_model)`` drawn from N(0, 0.5²) truncated at ±1.

    ViT and BERT start at std 0.02, ~25× below the content embeddings, and on our small data the
    model then spends hundreds of steps on a permutation-invariant plateau before it tells tokens
    apart (measured in docs/omnivec2.md).
    """
    table = nn.Parameter(torch.empty(*sizes, d_model))
    nn.init.trunc_normal_(table, std=0.5, a=-1.0, b=1.0)
    return table


def patch_mask(steps: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, T)`` step mask → ``(B, ceil(T / size))``: a patch is real when any of its steps is."""
    padded = nn.functional.pad(steps, (0, -steps.shape[1] % size))
    return padded.reshape(steps.shape[0], -1, size).any(-1)


def zero_padded_steps(x: torch.Tensor, steps: torch.Tensor | None) -> torch.Tensor:
    """Set padded steps to zero (after normalisation, where padding is no longer 0), so a patch that
    is partly padding sees the same zeros as the end-of-sequence padding of a shorter batch."""
    if steps is None:
        return x
    return x * steps.reshape(*steps.shape, *(1,) * (x.dim() - 2)).to(x.dtype)


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")


def register_tokenizer(*kinds: str):
    """Register one class for one or more modality kinds (X-ray, infrared and depth reuse ViT patches)."""

    def deco(cls: type[Tokenizer]) -> type[Tokenizer]:
        for kind in kinds:
            TOKENIZERS.register(kind)(cls)
        return cls

    return deco


def create_tokenizer(spec: ModalitySpec, d_model: int, options: dict | None = None,
                     kind: str | None = None) -> Tokenizer:
    """The tokenizer registered for ``kind`` (default: the spec's kind), options checked by name."""
    cls = TOKENIZERS.get(kind or spec.kind)
    opts = from_mapping(cls.Options, options or {}, f"model.tokenizers.{kind or spec.kind}")
    return cls(spec, d_model, opts)
