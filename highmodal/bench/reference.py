"""The original HighMMT model, rebuilt from ``perceiver-multi-modality-pytorch`` (PyPI, 1.4.0) the way
the authors' code builds it, so speed is compared against what the paper actually ran.

Source: github.com/pliang279/HighMMT, ``private_test_scripts/perceivers/crossattnperceiver.py``
(class ``MultiModalityPerceiver``: the library's ``PreNorm``/``Attention``/``FeedForward`` blocks
assembled with its ``build_perceiver_layers``, one shared encoder run modality by modality, one
shared crossmodal stack run ordered pair by ordered pair, the last latent of each pair kept) and
``fourmultitask.py`` (the large setting: 9 modalities, ``weight_tie_layers=True``, cross depth 1,
``cross_cross_heads`` left at 4, and one ``LayerNorm + Linear`` head per task in ``to_logitslist``).

Kept as the original runs it: the library's attention (einsums under reentrant activation
checkpointing, q/k cast to float32), per-modality and per-pair Python loops, the channel order
data ⊕ zero pad ⊕ Fourier positions ⊕ one-hot, modalities visited in sorted name order.

Left out, each only to keep the comparison conservative or because it has no effect on a step:
the model's own ``to_logits`` (``num_classes=1``; the training loop swaps in a task head before
every forward, so its 385 parameters never train and 527,382 counts without it), the inputs'
``requires_grad=True`` (input gradients are extra backward work we do not charge the reference
for), the pad allocated on the CPU and copied to the device (created on the device here), and
the ``attn.fn.printattn`` bookkeeping, which the PyPI ``Attention`` does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from einops import rearrange, repeat
from perceiver_pytorch import perceiver_pytorch as _library
from perceiver_pytorch.caching import cache_by_name_fn
from perceiver_pytorch.common import build_perceiver_layers
from perceiver_pytorch.modalities import InputModality, modality_encoding
from perceiver_pytorch.perceiver_pytorch import Attention, FeedForward, PreNorm, fourier_encode
from torch import nn
from torch.utils.checkpoint import checkpoint

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.models.highmmt import HighMMTConfig
from highmodal.tasks import Task

PACKAGE = "perceiver-multi-modality-pytorch"


def _checkpoint(fn: Callable, *args: torch.Tensor) -> torch.Tensor:
    """The library calls ``checkpoint(fn, q, k)`` without ``use_reentrant``, which torch >= 2.4 warns
    about (and announced it would refuse). Passing the torch 1.x default, ``True``, keeps the
    computation the original ran; without autograd the checkpoint would only warn and call ``fn``."""
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=True)


_library.checkpoint = _checkpoint


def check_supported(specs: Sequence[ModalitySpec], cfg: HighMMTConfig) -> None:
    """The original code has fewer knobs than ``HighMMTConfig``: refuse settings it cannot express."""
    fixed = {
        "ff_mult": (cfg.ff_mult, 4),  # the library's FeedForward default, never changed by the original
        "crossmodal_latent_heads": (cfg.crossmodal_latent_heads, cfg.latent_heads),  # one latent_heads for both
        "head_norm": (cfg.head_norm, "layernorm"),
        "modality_embedding": (cfg.modality_embedding, True),
        "unimodal_groups": (cfg.unimodal_groups, {}),
        "crossmodal_groups": (cfg.crossmodal_groups, {}),
    }
    for key, (got, want) in fixed.items():
        if got != want:
            raise HighmodalError(f"reference HighMMT: {key} must be {want!r} (the original code has no such "
                                 f"option), got {got!r}")
    for s in specs:
        if s.variable or s.vocab_size is not None:
            raise HighmodalError(f"reference HighMMT: modality {s.name!r} must have a fixed shape of real values, "
                                 f"got shape {s.shape}" + (f" with vocab_size {s.vocab_size}" if s.vocab_size else ""))


class ReferenceHighMMT(nn.Module):
    """``model(batch, task)`` → logits, as ``HighMMT``; ``batch`` holds the task's modalities only."""

    def __init__(self, specs: Sequence[ModalitySpec], tasks: Sequence[Task], cfg: HighMMTConfig) -> None:
        super().__init__()
        check_supported(specs, cfg)
        self.modalities = [InputModality(name=s.name, input_channels=s.channels, input_axis=len(s.axes),
                                         num_freq_bands=s.num_freq_bands, max_freq=s.max_freq) for s in specs]
        self.index = {m.name: i for i, m in enumerate(self.modalities)}
        dim, input_dim = cfg.latent_dim, max(m.input_dim for m in self.modalities) + len(self.modalities)
        self.input_dim = input_dim
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, dim))
        attention = partial(Attention, dropout=cfg.attn_dropout)

        # The constructors below are crossattnperceiver.py's lambdas, cached by name as there.
        def cross_attn() -> PreNorm:
            return PreNorm(dim, attention(dim, input_dim, heads=cfg.cross_heads, dim_head=cfg.cross_dim_head),
                           context_dim=input_dim)

        def cross_cross_attn() -> PreNorm:
            return PreNorm(dim, attention(dim, dim, heads=cfg.crossmodal_cross_heads, dim_head=cfg.cross_dim_head),
                           context_dim=dim)

        def feed_forward() -> PreNorm:
            return PreNorm(dim, FeedForward(dim, dropout=cfg.ff_dropout))

        def latent_attn() -> PreNorm:
            return PreNorm(dim, attention(dim, heads=cfg.latent_heads, dim_head=cfg.latent_dim_head))

        cross_attn, cross_cross_attn, cross_ff, latent_ff, latent_attn = map(
            cache_by_name_fn, (cross_attn, cross_cross_attn, feed_forward, feed_forward, latent_attn))
        self.layers = nn.ModuleList()
        build_perceiver_layers(self.layers, cfg.depth, cross_attn, cross_ff, latent_attn, latent_ff,
                               weight_tie_layers=True, num_latent_blocks_per_layer=cfg.latent_blocks)
        self.cross_layers = nn.ModuleList()
        build_perceiver_layers(self.cross_layers, cfg.crossmodal_depth, cross_cross_attn, cross_ff, latent_attn,
                               latent_ff, weight_tie_layers=True, num_latent_blocks_per_layer=cfg.latent_blocks)
        self.heads = nn.ModuleDict()
        for t in tasks:
            m = len(t.modalities)
            width = cfg.num_latents * dim if m == 1 else m * (m - 1) * dim
            self.heads[t.name] = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, t.out_dim))

    def tokens(self, name: str, data: torch.Tensor) -> torch.Tensor:
        """data ⊕ zero pad ⊕ Fourier positions ⊕ one-hot modality code, flattened to ``(B, L, input_dim)``."""
        modality = self.modalities[self.index[name]]
        b, *axis, _ = data.shape
        axis_pos = [torch.linspace(-1.0, 1.0, steps=size, device=data.device) for size in axis]
        pos = torch.stack(torch.meshgrid(*axis_pos, indexing="ij"), dim=-1)
        enc_pos = fourier_encode(pos, modality.max_freq, modality.num_freq_bands, modality.freq_base)
        enc_pos = repeat(rearrange(enc_pos, "... n d -> ... (n d)"), "... -> b ...", b=b)
        padding = data.new_zeros(*data.shape[:-1], self.input_dim - modality.input_dim - len(self.modalities))
        code = modality_encoding(b, axis, self.index[name], len(self.modalities), device=data.device)
        return rearrange(torch.cat((data, padding, enc_pos, code), dim=-1), "b ... d -> b (...) d")

    @staticmethod
    def run(layers: nn.ModuleList, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for cross_attn, cross_ff, latent_transformer in layers:
            x = cross_attn(x, context=context) + x
            x = cross_ff(x) + x
            x = latent_transformer(x) + x
        return x

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        latents = []
        for name in sorted(batch):
            data = self.tokens(name, batch[name])
            latents.append(self.run(self.layers, repeat(self.latents, "n d -> b n d", b=data.shape[0]), data))
        outs = [self.run(self.cross_layers, latents[i], latents[j])[:, -1]
                for i in range(len(latents)) for j in range(len(latents)) if i != j]
        features = torch.cat(outs, dim=1) if outs else latents[0].flatten(start_dim=1)
        return self.heads[task](features)
