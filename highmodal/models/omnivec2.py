"""OmniVec2 (Srivastava & Sharma, CVPR 2024): modality-specific tokenizers, a shared transformer f
(+ three FC layers), cross-attention fusion of two modality streams, a second shared transformer g,
and one head per modality × task.

There is no official code; the choices the paper leaves open, all configurable:

* f is a pre-norm transformer (``f_depth`` blocks at ``d_model``) followed by Linear-ReLU-Linear-ReLU-
  Linear down to ``fusion_dim``; cross-attention, g and the heads run at that width (§3.1: the FC
  layers exist "to reduce the dimensions").
* Fusion in: each stream's tokens attend to the other's (one shared residual cross-attention block
  used in both directions), and g reads the two results concatenated along the token axis.
* Fusion back, written A(x̂_ij, x_i) in §3: g's tokens are the queries and attend to stream i's f
  features, again residually.
* Single-stream inference h∘g∘f (§3.2.3) drops both fusion blocks. That is not the identity (each
  block also holds a residual MLP) and heads trained only behind the fusion blocks do poorly on it,
  so by default (``train_single``) every pairwise step also sends each stream through h∘g∘f with the
  same head, and a piece's loss is the mean of its fused and single-stream losses: the path that
  predicts is a path that training optimises. ``inference: self`` fuses a stream with itself
  instead, which needs no extra training path. docs/omnivec2.md measures the options.
* A head pools its stream's real tokens (max by default, ``pool: mean`` optional) and applies
  LayerNorm → Linear → GELU → Linear (the paper's ViT-Tiny heads are too large for our tasks; max
  pooling learned faster from scratch: docs/omnivec2.md).
* A task with several modalities is predicted from each present modality alone and the head
  outputs averaged (``inference: single``, the paper's path, or ``self``); ``inference: fused`` runs
  every pair of present modalities through the two-stream graph instead (a one-modality task then
  falls back to ``single``).
* Not in the paper, whose tasks are all predictable from one modality: a ``joint`` task (its target a
  relation between its modalities, e.g. RoadScene's "same scene?") is always predicted through the
  two-stream graph over its own modalities, and trained only that way (the sampler pairs it with
  itself). When its modalities are also ``aligned``, the pooled features its heads read gain the
  aligned-token comparison of the two tokenizers' outputs (``nn/aligned.py``, as HighMMT's aligned
  tasks; ``compare_aligned: false`` turns it off): attention alone compares each token against all
  positions, and from a few hundred pairs does not learn that only the same position matters.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers import create_tokenizer
from highmodal.modalities.unified import UnifiedTokenizer
from highmodal.models.base import MultitaskModel, Piece
from highmodal.models.registry import register_model, resolve_preset
from highmodal.nn.aligned import AlignedComparison
from highmodal.nn.transformer import Block, Transformer, masked_max, masked_mean
from highmodal.tasks import Task

CHOICES = {"tokenizer": ("modality", "unified"), "head": ("task", "unified"), "inference": ("single", "self", "fused"),
           "pool": ("max", "mean")}
POOLS = {"max": masked_max, "mean": masked_mean}


@dataclass(frozen=True)
class OmniVec2Config:
    d_model: int = 128
    heads: int = 4
    f_depth: int = 4
    fusion_dim: int = 96
    g_depth: int = 2
    g_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    tokenizer: str = "modality"  # "unified": one shared tokenizer (Table 12 ablation)
    head: str = "task"  # one head per modality × task; "unified": one shared head (Table 12 ablation)
    inference: str = "single"  # "self": each stream fused with itself; "fused": every pair of a task's modalities
    train_single: bool = True  # pairwise steps also train h∘g∘f, the single-stream path
    pool: str = "max"  # how a head pools its stream's real tokens
    compare_aligned: bool = True  # a joint, aligned task's heads also read its tokens' aligned comparison
    tokenizers: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-kind tokenizer options

    def __post_init__(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise HighmodalError(f"model.options.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for width, heads in ((self.d_model, self.heads), (self.fusion_dim, self.g_heads)):
            if width % heads:
                raise HighmodalError(f"model: width {width} is not divisible by {heads} attention heads")


PRESETS: dict[str, OmniVec2Config] = {
    # Not from the paper: a fast setting for tests and 2-core CPU runs.
    "tiny": OmniVec2Config(d_model=64, heads=4, f_depth=2, fusion_dim=48, g_depth=1, g_heads=4),
    "small": OmniVec2Config(),
    # The paper's f is BERT-base sized (768 wide, 12 layers, 12 heads); g's depth and the reduced width
    # are not given, we take 6 layers at 512.
    "base": OmniVec2Config(d_model=768, heads=12, f_depth=12, fusion_dim=512, g_depth=6, g_heads=8),
}


def resolve_config(preset: str = "small", **overrides) -> OmniVec2Config:
    return resolve_preset(PRESETS, preset, overrides, "OmniVec2")


class TaskHead(nn.Sequential):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim))


class UnifiedHead(nn.Module):
    """Uni-Perceiver-style shared head: one trunk for every task and modality, scored against each
    task's learned output embeddings (class or regression-target queries)."""

    def __init__(self, dim: int, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.queries = nn.ParameterDict({t.name: nn.Parameter(torch.randn(t.out_dim, dim) * dim**-0.5) for t in tasks})
        self.bias = nn.ParameterDict({t.name: nn.Parameter(torch.zeros(t.out_dim)) for t in tasks})

    def forward(self, pooled: torch.Tensor, task: str) -> torch.Tensor:
        return self.trunk(pooled) @ self.queries[task].T + self.bias[task]


class OmniVec2(MultitaskModel):
    default_sampler = "pairwise"

    def __init__(self, specs: Sequence[ModalitySpec], tasks: Sequence[Task], cfg: OmniVec2Config) -> None:
        super().__init__(tasks)
        self.cfg = cfg
        self.specs = list(specs)
        self.modalities = {s.name: s for s in specs}
        if cfg.tokenizer == "modality":
            self.tokenizers = nn.ModuleDict({
                s.name: create_tokenizer(s, cfg.d_model, cfg.tokenizers.get(s.kind)) for s in specs})
        else:
            self.unified_tokenizer = UnifiedTokenizer(specs, cfg.d_model)
        self.f = Transformer(cfg.d_model, cfg.f_depth, cfg.heads, cfg.mlp_ratio, cfg.dropout)
        self.reduce = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.ReLU(),
                                    nn.Linear(cfg.d_model, cfg.d_model), nn.ReLU(),
                                    nn.Linear(cfg.d_model, cfg.fusion_dim))
        self.fuse_in = Block(cfg.fusion_dim, cfg.g_heads, cfg.mlp_ratio, cfg.dropout, context_dim=cfg.fusion_dim)
        self.g = Transformer(cfg.fusion_dim, cfg.g_depth, cfg.g_heads, cfg.mlp_ratio, cfg.dropout)
        self.fuse_out = Block(cfg.fusion_dim, cfg.g_heads, cfg.mlp_ratio, cfg.dropout, context_dim=cfg.fusion_dim)
        if cfg.head == "task":
            self.heads = nn.ModuleDict({t.name: nn.ModuleDict({m: TaskHead(cfg.fusion_dim, t.out_dim)
                                                               for m in t.modalities}) for t in tasks})
        else:
            self.unified_head = UnifiedHead(cfg.fusion_dim, tasks)
        # Built only for joint, aligned tasks: other suites (and checkpoints saved before tasks could be
        # joint) keep their parameters.
        self.compare = nn.ModuleDict({t.name: AlignedComparison(cfg.d_model, cfg.fusion_dim) for t in tasks
                                      if t.joint and t.aligned and cfg.compare_aligned})

    # --- the network, piece by piece -------------------------------------------------------------
    def tokenize(self, batch: dict[str, torch.Tensor], modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if modality not in self.modalities:
            raise HighmodalError(f"modality {modality!r} is not one of the model's: {', '.join(self.modalities)}")
        x, mask = batch[modality], batch.get(f"{modality}_mask")
        if self.cfg.tokenizer == "modality":
            return self.tokenizers[modality](x, mask)
        return self.unified_tokenizer(modality, x, mask)

    def stream(self, batch: dict[str, torch.Tensor], modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """f: tokenizer → transformer → three FC layers, ``(B, N, fusion_dim)``."""
        tokens, mask = self.tokenize(batch, modality)
        return self.reduce(self.f(tokens, mask)), mask

    def fuse(self, a: tuple[torch.Tensor, torch.Tensor | None], b: tuple[torch.Tensor, torch.Tensor | None]
             ) -> tuple[tuple[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]:
        """Two-stream path: cross-attend a↔b, g over both, then g's tokens attend back to each stream."""
        (xa, ma), (xb, mb) = a, b
        ua, ub = self.fuse_in(xa, xb, mb), self.fuse_in(xb, xa, ma)
        mask = None
        if ma is not None or mb is not None:
            mask = torch.cat([ma if ma is not None else xa.new_ones(xa.shape[:2], dtype=torch.bool),
                              mb if mb is not None else xb.new_ones(xb.shape[:2], dtype=torch.bool)], 1)
        fused_a, fused_b = self.g(torch.cat([ua, ub], 1), mask).split([xa.shape[1], xb.shape[1]], 1)
        return (self.fuse_out(fused_a, xa, ma), ma), (self.fuse_out(fused_b, xb, mb), mb)

    def single(self, x: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The single-stream path after f: g alone (``inference: single``) or fused with itself (``self``)."""
        if self.cfg.inference == "self":
            return self.fuse(x, x)[0]
        return self.g(*x), x[1]

    def head(self, z: tuple[torch.Tensor, torch.Tensor | None], task: str, modality: str,
             extra: torch.Tensor | None = None) -> torch.Tensor:
        """h: the stream's pooled tokens (plus ``extra``, a joint task's aligned comparison) → outputs."""
        pooled = POOLS[self.cfg.pool](*z)
        if extra is not None:
            pooled = pooled + extra
        if self.cfg.head == "task":
            return self.heads[task][modality](pooled)
        return self.unified_head(pooled, task)

    def embed_tokens(self, batch: dict[str, torch.Tensor], modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Single-stream token embeddings g∘f before pooling: ``(B, N, fusion_dim)`` and the key mask."""
        x, mask = self.stream(batch, modality)
        return self.g(x, mask), mask

    def embed(self, batch: dict[str, torch.Tensor], modality: str, tokenizer: nn.Module | None = None) -> torch.Tensor:
        """Single-stream embedding g∘f, mean-pooled: ``(B, fusion_dim)`` (what a linear probe reads).
        ``tokenizer`` replaces the modality's own, for a modality the model was not trained on."""
        if tokenizer is None:
            x, mask = self.stream(batch, modality)
        else:
            tokens, mask = tokenizer(batch[modality], batch.get(f"{modality}_mask"))
            x = self.reduce(self.f(tokens, mask))
        return POOLS[self.cfg.pool](self.g(x, mask), mask)

    def fused_heads(self, task: str, batch: dict[str, torch.Tensor], a: str, b: str,
                    streams: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]) -> list[torch.Tensor]:
        """Both heads of two modalities of one task, on the same rows, through the two-stream graph;
        a joint, aligned task adds the aligned comparison of the two modalities' tokens."""
        za, zb = self.fuse(*streams)
        extra = None
        if task in self.compare:
            first, second = sorted((a, b), key=self.task(task).modalities.index)
            (x, _), (y, _) = self.tokenize(batch, first), self.tokenize(batch, second)
            if x.shape[1] != y.shape[1]:
                raise HighmodalError(f"task {task!r}: aligned modalities {first!r} and {second!r} tokenize to "
                                     f"{x.shape[1]} and {y.shape[1]} tokens; set a common tokenizer patch size")
            extra = self.compare[task](x, y)
        return [self.head(za, task, a, extra), self.head(zb, task, b, extra)]

    # --- training and inference --------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        t = self.task(task)
        view = self.forecast_view(batch, task)
        batch = view.batch
        present = [m for m in t.modalities if m in batch]
        if not present:
            raise HighmodalError(f"task {task!r}: the batch holds none of its modalities {list(t.modalities)}")
        if t.joint and len(present) < 2:
            raise HighmodalError(f"task {task!r} is joint (its target relates its modalities): the batch must hold "
                                 f"two or more of {list(t.modalities)}, it holds {present}")
        streams = {m: self.stream(batch, m) for m in present}
        if (self.cfg.inference == "fused" or t.joint) and len(present) > 1:
            outs = []
            for a, b in itertools.combinations(present, 2):
                outs += self.fused_heads(task, batch, a, b, (streams[a], streams[b]))
        else:
            outs = [self.head(self.single(streams[m]), task, m) for m in present]
        return self.forecast_output(torch.stack(outs).mean(0), view)

    def step_outputs(self, pieces: Sequence[Piece]) -> list[torch.Tensor | tuple[torch.Tensor, ...]]:
        """Pairwise training (§3): two pieces, each one modality of one task, go through the fused
        two-stream graph, and with ``train_single`` also each through the single-stream path (a
        piece's output is then the pair (fused, single), its loss their mean); two modalities of one
        joint task go through its fused path only; a lone modality piece goes single-stream; a
        whole-task piece as ``forward``."""
        if len(pieces) == 2 and all(p.modality is not None for p in pieces):
            views = [self.forecast_view(p.batch, p.task) for p in pieces]
            a, b = (Piece(p.task, p.modality, v.batch) for p, v in zip(pieces, views, strict=True))
            sa, sb = self.stream(a.batch, a.modality), self.stream(b.batch, b.modality)
            if a.task == b.task and self.task(a.task).joint:
                return [self.forecast_output(out, v) for out, v in
                        zip(self.fused_heads(a.task, a.batch, a.modality, b.modality, (sa, sb)), views, strict=True)]
            za, zb = self.fuse(sa, sb)
            fused = [self.head(za, a.task, a.modality), self.head(zb, b.task, b.modality)]
            if self.cfg.train_single:
                fused = [(fused[0], self.head(self.single(sa), a.task, a.modality)),
                         (fused[1], self.head(self.single(sb), b.task, b.modality))]
            return [self.forecast_output(out, v) for out, v in zip(fused, views, strict=True)]
        return [self(p.batch, p.task) if p.modality is None else self._single_piece(p) for p in pieces]

    def _single_piece(self, p: Piece) -> torch.Tensor:
        view = self.forecast_view(p.batch, p.task)
        return self.forecast_output(self.head(self.single(self.stream(view.batch, p.modality)), p.task, p.modality),
                                    view)

    def compile_step(self, **options) -> None:
        """The shared parts, where OmniVec2's FLOPs are: f, its FC layers, the fusion blocks and g.
        The tokenizers and heads (small, one per modality or task) stay eager."""
        for module in (self.f, self.reduce, self.fuse_in, self.g, self.fuse_out):
            module.compile(**options)

    def arch_config(self) -> dict:
        return asdict(self.cfg)


@register_model("omnivec2")
def omnivec2(specs: Sequence[ModalitySpec], tasks: Sequence[Task], preset: str = "small", **overrides) -> OmniVec2:
    return OmniVec2(specs, tasks, resolve_config(preset, **overrides))
