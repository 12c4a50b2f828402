"""Masked modelling around an OmniVec2 model: its two pretraining stages (§3.2, §3.2.2).

Stage 1 (``stage1_loss``) masks one modality's tokens, encodes them with the modality's tokenizer
and the shared f (+ its three FC layers), and a lightweight decoder predicts the masked tokens.
Stage 2 (``stage2_loss``) masks two paired modalities, runs both through f, the cross-attention
fusion and g, and decodes each stream from the fused path; ``contrastive_loss`` optionally also pulls
the two streams' embeddings of the same rows together. The decoders exist only here: each stage
builds a ``MaskedModeling`` around the model and drops it after (the paper discards the decoders).
Per modality kind a *strategy* hides tokens: ``drop`` (MAE), ``replace`` (SimMIM/GraphMAE), ``bert``
(80/10/10) or ``permuted`` (MPNet-style, stage 1 only); the defaults per kind, and how the paper's
"95%" for text is read, are in docs/pretraining.md ("Masking, per kind").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import Tokenizer, Tokens
from highmodal.models.base import Piece
from highmodal.models.omnivec2 import OmniVec2
from highmodal.nn.masking import (
    RECONSTRUCTION,
    first_true,
    gather_tokens,
    most_masked,
    per_token_normalised,
    permutation_mask,
    random_masked,
    random_real_tokens,
    real_tokens,
)
from highmodal.nn.transformer import Transformer
from highmodal.registry import Registry


@dataclasses.dataclass
class MaskOptions:
    """Per modality kind (config ``masking: {image: {ratio: 0.75}}``); None: the kind's default."""

    strategy: str | None = None
    ratio: float | None = None
    norm_targets: bool | None = None


VISUAL = MaskOptions("drop", 0.95, True)
DEFAULT_MASKING: dict[str, MaskOptions] = {
    "image": VISUAL, "xray": VISUAL, "infrared": VISUAL, "depth": VISUAL, "video": VISUAL, "audio": VISUAL,
    "point_cloud": MaskOptions("drop", 0.9, False),
    "text": MaskOptions("bert", 0.05, False),
    "time_series": MaskOptions("drop", 0.4, False), "imu": MaskOptions("drop", 0.4, False),
    "tabular": MaskOptions("drop", 0.3, False),
    "graph": MaskOptions("replace", 0.5, False),
    "hyperspectral": MaskOptions("drop", 0.75, True),
}


@dataclasses.dataclass
class DecoderOptions:
    """MAE's lightweight decoder: ``depth`` blocks at ``dim`` (None: the model's fusion width)."""

    dim: int | None = None
    depth: int = 1
    heads: int = 4


@dataclasses.dataclass
class Encoded:
    """One masked stream after the encoder: ``h`` ``(B, K, fusion_dim)`` with its key mask, the
    tokenizer output, which tokens are scored, and how to place ``h`` back on the token grid."""

    h: torch.Tensor
    mask: torch.Tensor | None
    tokens: Tokens
    predicted: torch.Tensor  # (B, N) tokens whose reconstruction is scored
    scored: tuple[torch.Tensor, torch.Tensor]  # (B, M) their positions, and which of the M slots hold one
    keep: torch.Tensor | None = None  # drop: (B, N) kept tokens; idx (B, K) their positions in h
    idx: torch.Tensor | None = None
    from_queries: bool = False  # permuted: h's last M slots are the scored tokens' query slots


STRATEGIES: Registry[Callable[..., Encoded]] = Registry("masking strategy")


def probe_tokens(tokenizer: Tokenizer, spec: ModalitySpec) -> Tokens:
    """The tokenizer's output on one zero input of the largest shape (for target sizes and positions)."""
    x = torch.zeros(1, *spec.ref_lengths(), spec.channels)
    with torch.no_grad():
        return tokenizer.tokens(x, None, targets=True)


class MaskedModeling(nn.Module):
    """Masked-modelling losses for ``modalities`` of ``model``, with their decoders."""

    def __init__(self, model: OmniVec2, modalities: Sequence[str], masking: dict[str, MaskOptions] | None = None,
                 decoder: DecoderOptions | None = None, contrastive: float = 0.0, temperature: float = 0.07,
                 contrastive_tokens: bool = False) -> None:
        """``contrastive`` > 0 adds that weight of ``contrastive_loss`` (at ``temperature``, on tokens
        with ``contrastive_tokens``) to every stage-2 step whose two pieces hold the same rows."""
        super().__init__()
        self.contrastive, self.temperature, self.contrastive_tokens = contrastive, temperature, contrastive_tokens
        if model.cfg.tokenizer != "modality":
            raise HighmodalError("pretrain: masked modelling needs modality tokenizers (model.options.tokenizer: "
                                 "modality); the unified tokenizer has no per-token targets")
        self.model = model
        dec = decoder or DecoderOptions()
        dim = dec.dim or model.cfg.fusion_dim
        if dim % dec.heads:
            raise HighmodalError(f"pretrain.decoder: dim {dim} is not divisible by {dec.heads} heads")
        self.options: dict[str, MaskOptions] = {}
        self.mask_content = nn.ParameterDict()
        self.mask_token = nn.ParameterDict()
        self.out = nn.ModuleDict()
        for m in modalities:
            spec = model.modalities[m]
            opts = self._resolve(spec, (masking or {}).get(spec.kind, MaskOptions()))
            tok = model.tokenizers[m]
            probe = probe_tokens(tok, spec)
            if opts.strategy == "drop" and probe.pos is None:
                raise HighmodalError(f"pretrain.masking.{spec.kind}.strategy: 'drop' needs token positions and "
                                     f"{m!r}'s tokenizer has none; use 'replace'")
            if opts.strategy in ("bert", "permuted") and tok.target_loss == "chamfer":
                raise HighmodalError(f"pretrain.masking.{spec.kind}.strategy: {opts.strategy!r} does not fit "
                                     f"point groups; use 'drop'")
            self.options[m] = opts
            size = spec.vocab_size if tok.target_loss == "ce" else probe.targets.shape[-1]
            self.out[m] = nn.Linear(dim, size)
            self.mask_token[m] = nn.Parameter(torch.randn(dim) * 0.02)
            if opts.strategy != "drop":
                self.mask_content[m] = nn.Parameter(torch.randn(model.cfg.d_model) * 0.02)
        self.dec_in = nn.Linear(model.cfg.fusion_dim, dim)
        self.dec_pos = nn.Linear(model.cfg.d_model, dim)
        self.decoder = Transformer(dim, dec.depth, dec.heads, model.cfg.mlp_ratio)

    @staticmethod
    def _resolve(spec: ModalitySpec, given: MaskOptions) -> MaskOptions:
        base = DEFAULT_MASKING.get(spec.kind, MaskOptions("drop", 0.5, False))
        if spec.kind == "text" and spec.vocab_size is None:  # word vectors: no ids to corrupt
            base = dataclasses.replace(base, strategy="replace")
        opts = MaskOptions(*(g if g is not None else b for g, b in
                             zip(dataclasses.astuple(given), dataclasses.astuple(base), strict=True)))
        where = f"pretrain.masking.{spec.kind}"
        if opts.strategy not in STRATEGIES:
            raise HighmodalError(f"{where}.strategy: {opts.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 0 < opts.ratio < 1:
            raise HighmodalError(f"{where}.ratio: expected a fraction in (0, 1), got {opts.ratio}")
        return opts

    # --- encoding ----------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor], modality: str, stage: int) -> Encoded:
        """Tokenize, mask and run f (+ FC layers) on one modality."""
        tok = self.model.tokenizers[modality]
        t = tok.tokens(batch[modality], batch.get(f"{modality}_mask"), targets=True)
        b, n, _ = t.content.shape
        real = real_tokens(t.mask, b, n, t.content.device)
        strategy = self.options[modality].strategy
        if strategy == "permuted" and stage == 2:
            strategy = "bert"
        return STRATEGIES.get(strategy)(self, tok, t, real, modality)

    def _f(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.model.reduce(self.model.f(x, mask))

    def _masked(self, real: torch.Tensor, modality: str) -> tuple[torch.Tensor, int]:
        """The tokens to predict ``(B, N)`` and, known on the host, the most any sample has."""
        ratio = self.options[modality].ratio
        return random_masked(real, ratio), most_masked(real.shape[1], ratio)

    def _replaced(self, t: Tokens, where: torch.Tensor, modality: str) -> torch.Tensor:
        return torch.where(where.unsqueeze(-1), self.mask_content[modality].to(t.content.dtype), t.content)

    # --- decoding ----------------------------------------------------------------------------------
    def reconstruct(self, e: Encoded, modality: str, h: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predictions ``(B, M, P)`` and targets ``(B, M, P)`` (ids: ``(B, M)``) of the scored
        tokens, and which of the M slots hold one ``(B, M)`` (``h``: the encoder output after
        fusion in stage 2, default ``e.h``)."""
        h = e.h if h is None else h
        t = e.tokens
        idx, valid = e.scored
        if e.from_queries:
            return self.out[modality](self.dec_in(h[:, -idx.shape[1]:])), gather_tokens(t.targets, idx), valid
        b, n, _ = t.content.shape
        pos = None if t.pos is None else self.dec_pos(t.pos.expand(b, n, -1))
        if e.keep is None:
            x = self.dec_in(h) + (0 if pos is None else pos)
        else:
            kept = self.dec_in(h)  # bf16 under autocast, while the mask token stays fp32
            full = self.mask_token[modality].to(kept.dtype).expand(b, n, -1)
            placed = torch.zeros_like(full).scatter(1, e.idx.unsqueeze(-1).expand(-1, -1, full.shape[-1]), kept)
            x = torch.where(e.keep.unsqueeze(-1), placed, full) + pos
        pred = self.out[modality](gather_tokens(self.decoder(x, t.mask), idx))
        target = gather_tokens(t.targets, idx)
        if self.options[modality].norm_targets:
            target = per_token_normalised(target)
        return pred, target, valid

    def loss(self, e: Encoded, modality: str, h: torch.Tensor | None = None) -> torch.Tensor:
        """Mean reconstruction loss over the scored tokens of the batch (filler slots weigh 0)."""
        pred, target, valid = self.reconstruct(e, modality, h)
        per_token = RECONSTRUCTION.get(self.model.tokenizers[modality].target_loss)(pred.flatten(0, 1),
                                                                                    target.flatten(0, 1))
        valid = valid.flatten()
        return torch.where(valid, per_token, 0).sum() / valid.sum().clamp(min=1)

    # --- the two stages ------------------------------------------------------------------------------
    def stage1_loss(self, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        return self.loss(self.encode(batch, modality, 1), modality)

    def stage2_loss(self, batch_a: dict[str, torch.Tensor], a: str, batch_b: dict[str, torch.Tensor], b: str
                    ) -> dict[str, torch.Tensor]:
        """Both streams masked, fused (cross-attention both ways, g, attention back), each decoded.
        The batches are the same rows for paired data, or as many unrelated rows."""
        ea, eb = self.encode(batch_a, a, 2), self.encode(batch_b, b, 2)
        (za, _), (zb, _) = self.model.fuse((ea.h, ea.mask), (eb.h, eb.mask))
        return {a: self.loss(ea, a, za), b: self.loss(eb, b, zb)}

    def step_losses(self, pieces: Sequence[Piece]) -> list[torch.Tensor]:
        """The Trainer's step (``training/pretrain.py`` yields the pieces): one piece is a stage-1
        step on its modality, two a stage-2 step on both. The contrastive term of a pair of the same
        rows is shared equally by its two pieces, so their sum is the stage's objective."""
        if len(pieces) == 1:
            (p,) = pieces
            return [self.stage1_loss(p.batch, p.modality)]
        pa, pb = pieces
        losses = self.stage2_loss(pa.batch, pa.modality, pb.batch, pb.modality)
        out = [losses[pa.modality], losses[pb.modality]]
        if self.contrastive and pa.rows is not None and pa.rows == pb.rows:
            half = self.contrastive / 2 * self.contrastive_loss(pa.batch, pa.modality, pb.batch, pb.modality,
                                                                self.temperature, self.contrastive_tokens)
            out = [loss + half for loss in out]
        return out

    def contrastive_loss(self, batch_a: dict[str, torch.Tensor], a: str, batch_b: dict[str, torch.Tensor], b: str,
                         temperature: float, tokens: bool = False) -> torch.Tensor:
        """Symmetric InfoNCE (CLIP, Radford et al. 2021) between the unmasked single-stream embeddings
        g∘f of two modalities of the same rows: row i of ``a`` should be nearest to row i of ``b``
        among the batch. It acts on ``embed``, the space that retrieval and linear probes read;
        masked reconstruction alone never asks the two streams to meet there. ``tokens``: where both
        streams have the same unmasked token grid (aligned images), the similarity is the mean cosine
        of the tokens at the same positions (a dense, position-wise match) instead of the pooled one."""
        za, zb = token_similarity_inputs(self.model, batch_a, a, batch_b, b, tokens)
        logits = za @ zb.T / temperature
        target = torch.arange(len(za), device=za.device)
        return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2


def token_similarity_inputs(model: OmniVec2, batch_a: dict[str, torch.Tensor], a: str,
                            batch_b: dict[str, torch.Tensor], b: str, tokens: bool
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row vectors whose dot products are the contrastive similarities: unit pooled embeddings, or
    (``tokens`` and equal unmasked grids) unit tokens flattened and scaled by 1/sqrt(N), so a dot
    product is the mean position-wise cosine."""
    if tokens:
        (ta, ma), (tb, mb) = model.embed_tokens(batch_a, a), model.embed_tokens(batch_b, b)
        if ma is None and mb is None and ta.shape[1] == tb.shape[1]:
            scale = ta.shape[1] ** -0.5
            return (nn.functional.normalize(ta, dim=-1).flatten(1) * scale,
                    nn.functional.normalize(tb, dim=-1).flatten(1) * scale)
    return (nn.functional.normalize(model.embed(batch_a, a), dim=-1),
            nn.functional.normalize(model.embed(batch_b, b), dim=-1))


@STRATEGIES.register("drop")
def _drop(mm: MaskedModeling, tok: Tokenizer, t: Tokens, real: torch.Tensor, modality: str) -> Encoded:
    predicted, most = mm._masked(real, modality)
    keep = real & ~predicted
    idx, visible = first_true(keep, real.shape[1] - most)
    pos = t.pos.expand_as(t.content)
    x = tok.combine(gather_tokens(t.content, idx), gather_tokens(pos, idx))
    return Encoded(mm._f(x, visible), visible, t, predicted, first_true(predicted, most), keep, idx)


@STRATEGIES.register("replace")
def _replace(mm: MaskedModeling, tok: Tokenizer, t: Tokens, real: torch.Tensor, modality: str) -> Encoded:
    predicted, most = mm._masked(real, modality)
    h = mm._f(tok.combine(mm._replaced(t, predicted, modality), t.pos), t.mask)
    return Encoded(h, t.mask, t, predicted, first_true(predicted, most))


@STRATEGIES.register("bert")
def _bert(mm: MaskedModeling, tok: Tokenizer, t: Tokens, real: torch.Tensor, modality: str) -> Encoded:
    predicted, most = mm._masked(real, modality)
    u = torch.rand(real.shape, device=real.device)
    random_content = random_real_tokens(t.content, real)
    content = torch.where((predicted & (u >= 0.8) & (u < 0.9)).unsqueeze(-1), random_content, t.content)
    content = mm._replaced(dataclasses.replace(t, content=content), predicted & (u < 0.8), modality)
    return Encoded(mm._f(tok.combine(content, t.pos), t.mask), t.mask, t, predicted, first_true(predicted, most))


@STRATEGIES.register("permuted")
def _permuted(mm: MaskedModeling, tok: Tokenizer, t: Tokens, real: torch.Tensor, modality: str) -> Encoded:
    predicted, most = mm._masked(real, modality)
    query_idx, query_real, attn = permutation_mask(real, predicted, most)
    b, n, d = t.content.shape
    pos = torch.zeros_like(t.content) if t.pos is None else t.pos.expand(b, n, d)
    queries = tok.combine(mm.mask_content[modality].expand(b, query_idx.shape[1], d), gather_tokens(pos, query_idx))
    x = torch.cat([tok.combine(t.content, t.pos), queries], 1)
    return Encoded(mm._f(x, attn), None, t, predicted, (query_idx, query_real), from_queries=True)
