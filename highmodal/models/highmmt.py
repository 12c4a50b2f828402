"""HighMMT (Liang et al., 2023): one shared Perceiver for every modality, one shared crossmodal
transformer for every ordered modality pair, and one small head per task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Standardizer
from highmodal.models.base import MultitaskModel, Piece
from highmodal.models.groups import check_groups, crossmodal_units, unimodal_units
from highmodal.models.registry import register_model, resolve_preset
from highmodal.nn.aligned import AlignedComparison
from highmodal.nn.crossmodal import CrossmodalTransformer, ordered_pairs
from highmodal.nn.factored import StandardInput
from highmodal.nn.heads import LinearHead
from highmodal.nn.perceiver import PerceiverEncoder
from highmodal.tasks import Task


@dataclass(frozen=True)
class HighMMTConfig:
    """Architecture settings; field names follow the paper's hyper-parameter tables (Tables 8–10)."""

    num_latents: int = 20
    latent_dim: int = 64
    depth: int = 1
    cross_heads: int = 1
    cross_dim_head: int = 64
    latent_heads: int = 6
    latent_dim_head: int = 64
    latent_blocks: int = 1
    crossmodal_depth: int = 1
    crossmodal_cross_heads: int = 4
    crossmodal_latent_heads: int = 6
    ff_mult: int = 4
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    head_norm: str = "layernorm"
    modality_embedding: bool = True
    # Width of the aligned-token comparison (``nn/aligned.py``) added to the head input of every task
    # declared ``aligned`` (its modalities share one position grid, place by place); 0 turns it off.
    # Not in the paper.
    aligned_dim: int = 32
    # Heterogeneity-aware parameter groups (see ``models/groups.py``); empty: everything shared.
    unimodal_groups: dict[str, int] = field(default_factory=dict)
    crossmodal_groups: dict[str, int] = field(default_factory=dict)


PRESETS: dict[str, HighMMTConfig] = {
    # Table 8 (PUSH + V&T): 20×64 latents, 8 latent heads, 1 crossmodal cross head.
    "small": HighMMTConfig(latent_heads=8, crossmodal_cross_heads=1, crossmodal_latent_heads=8),
    # Table 9 (AV-MNIST + ENRICO + PUSH): 12×64 latents, 8 latent heads.
    "medium": HighMMTConfig(num_latents=12, latent_heads=8, crossmodal_cross_heads=1, crossmodal_latent_heads=8),
    # Table 10 (MIMIC + AV-MNIST + MOSEI + UR-FUNNY): 20×64 latents, 6 latent heads, 4 crossmodal heads.
    "large": HighMMTConfig(),
    # Not from the paper: a fast setting for tests and smoke runs.
    "tiny": HighMMTConfig(num_latents=8, latent_dim=32, cross_dim_head=32, latent_heads=2, latent_dim_head=32,
                          crossmodal_cross_heads=2, crossmodal_latent_heads=2, ff_mult=2),
}


def resolve_config(preset: str = "large", **overrides) -> HighMMTConfig:
    return resolve_preset(PRESETS, preset, overrides, "HighMMT")


class HighMMT(MultitaskModel):
    """Forward: ``model(batch, task)`` with ``batch = {modality: (B, *shape), "<modality>_mask": ...}``."""

    def __init__(self, specs: Sequence[ModalitySpec], tasks: Sequence[Task], cfg: HighMMTConfig) -> None:
        super().__init__(tasks)
        self.cfg = cfg
        self.specs = list(specs)
        self.standardizer = Standardizer(specs, shared_embedding=cfg.modality_embedding)
        layer = dict(ff_mult=cfg.ff_mult, attn_dropout=cfg.attn_dropout, ff_dropout=cfg.ff_dropout,
                     cross_dim_head=cfg.cross_dim_head, latent_dim_head=cfg.latent_dim_head,
                     latent_blocks=cfg.latent_blocks)

        def encoder() -> PerceiverEncoder:
            return PerceiverEncoder(self.standardizer.d_all, cfg.num_latents, cfg.latent_dim, cfg.depth,
                                    cross_heads=cfg.cross_heads, latent_heads=cfg.latent_heads, **layer)

        def crossmodal() -> CrossmodalTransformer:
            return CrossmodalTransformer(cfg.latent_dim, cfg.crossmodal_depth, cross_heads=cfg.crossmodal_cross_heads,
                                         latent_heads=cfg.crossmodal_latent_heads, **layer)

        # Group 0 keeps the shared modules' names, so ungrouped checkpoints load unchanged and a shared
        # model's weights map onto every group for heterogeneity-aware fine-tuning.
        k_uni = check_groups(cfg.unimodal_groups, unimodal_units(tasks), "unimodal_groups")
        k_cross = check_groups(cfg.crossmodal_groups, crossmodal_units(tasks), "crossmodal_groups")
        self.encoder, self.crossmodal = encoder(), crossmodal()
        self.group_encoders = nn.ModuleList(encoder() for _ in range(k_uni - 1))
        self.group_crossmodals = nn.ModuleList(crossmodal() for _ in range(k_cross - 1))
        # Only built when some task is aligned: other suites keep their parameters and checkpoints, and
        # checkpoints saved before tasks could be aligned load as they were trained.
        self.aligned_tasks = {t.name for t in tasks if t.aligned} if cfg.aligned_dim else set()
        self.aligned = AlignedComparison(self.standardizer.d_all, cfg.aligned_dim) if self.aligned_tasks else None
        self.heads = nn.ModuleDict({
            t.name: LinearHead(self.feature_dim(t), t.out_dim, cfg.head_norm) for t in tasks
        })

    def feature_dim(self, task: Task) -> int:
        """Unimodal tasks keep the whole latent array (as the reference code); multimodal tasks get
        one ``latent_dim`` vector per ordered pair, and aligned tasks one ``aligned_dim`` more per pair."""
        m = len(task.modalities)
        if m == 1:
            return self.cfg.num_latents * self.cfg.latent_dim
        return m * (m - 1) * (self.cfg.latent_dim + (self.cfg.aligned_dim if task.name in self.aligned_tasks else 0))

    def encoder_for(self, group: int) -> PerceiverEncoder:
        return self.encoder if group == 0 else self.group_encoders[group - 1]

    def crossmodal_for(self, group: int) -> CrossmodalTransformer:
        return self.crossmodal if group == 0 else self.group_crossmodals[group - 1]

    def encode(self, batch: dict[str, torch.Tensor], names: Sequence[str], group: int = 0) -> list[torch.Tensor]:
        """Latents of each modality in ``names``, all through one encoder call."""
        return self.encoder_for(group).encode_inputs([self._input(batch, n) for n in names])

    def _input(self, batch: dict[str, torch.Tensor], name: str) -> StandardInput:
        return self.standardizer.parts(name, batch[name], batch.get(f"{name}_mask"))

    def features(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        """The representation fed to the task head: ``(B, feature_dim)``."""
        return self.step_features([Piece(task, None, batch)])[0]

    def step_features(self, pieces: Sequence[Piece]) -> list[torch.Tensor]:
        """Head inputs of several task batches, computed together: every modality of every piece
        goes through its encoder in one call, and every ordered pair of every piece (of equal
        batch size) through its crossmodal transformer in one call, so a multitask step costs a
        few large kernels rather than many small ones. Each result equals ``features`` alone."""
        tasks = [self.task(p.task) for p in pieces]  # validates every task name first
        jobs: dict[int, list[tuple[int, str]]] = {}  # encoder group → (piece, modality)
        for k, (p, t) in enumerate(zip(pieces, tasks, strict=True)):
            present = [m for m in t.modalities if m in p.batch]
            if not present:
                raise HighmodalError(f"task {t.name!r}: the batch holds none of its modalities {list(t.modalities)}")
            for m in present:
                jobs.setdefault(self.cfg.unimodal_groups.get(f"{t.name}/{m}", 0), []).append((k, m))
        encoded: dict[tuple[int, str], torch.Tensor] = {}
        standard: dict[tuple[int, str], StandardInput] = {}  # also read by the aligned comparison
        for g, keys in sorted(jobs.items()):
            inputs = [self._input(pieces[k].batch, m) for k, m in keys]
            standard.update(zip(keys, inputs, strict=True))
            encoded.update(zip(keys, self.encoder_for(g).encode_inputs(inputs), strict=True))
        # A missing modality is stood in for by its encoder's learned initial latent array: what the
        # Perceiver holds before it has looked at any input. No extra parameters, and the head keeps
        # its width, so any non-empty subset of a task's modalities can be scored.
        latents: list[list[torch.Tensor]] = []
        for k, t in enumerate(tasks):
            b = next(v.shape[0] for (kk, _), v in encoded.items() if kk == k)
            latents.append([
                encoded[k, m] if (k, m) in encoded
                else self.encoder_for(self.cfg.unimodal_groups.get(f"{t.name}/{m}", 0)).latents.expand(b, -1, -1)
                for m in t.modalities
            ])
        # Pieces of equal batch size share crossmodal calls; each is keyed by the first such piece
        # (not by the size itself, which is symbolic, and unhashable, when exported with a dynamic batch).
        sizes = [x[0].shape[0] for x in latents]
        first = [next(k0 for k0 in range(k + 1) if k0 == k or sizes[k0] == sizes[k]) for k in range(len(tasks))]
        pair_jobs: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (group, first piece) → (piece, pair)
        for k, t in enumerate(tasks):
            mods = t.modalities
            for n, (i, j) in enumerate(ordered_pairs(len(mods))):
                g = self.cfg.crossmodal_groups.get(f"{t.name}/{mods[min(i, j)]}+{mods[max(i, j)]}", 0)
                pair_jobs.setdefault((g, first[k]), []).append((k, n))
        pair_out: dict[tuple[int, int], torch.Tensor] = {}
        for (g, _), keys in sorted(pair_jobs.items()):
            offsets, flat = {}, []
            for k in dict.fromkeys(k for k, _ in keys):
                offsets[k] = len(flat)
                flat.extend(latents[k])
            pairs = []
            for k, n in keys:
                i, j = ordered_pairs(len(tasks[k].modalities))[n]
                pairs.append((offsets[k] + i, offsets[k] + j))
            pair_out.update(zip(keys, self.crossmodal_for(g).pair_outputs(flat, pairs).unbind(0), strict=True))
        return [
            latents[k][0].flatten(1) if len(t.modalities) == 1
            else torch.cat([
                torch.stack([pair_out[k, n] for n in range(len(t.modalities) * (len(t.modalities) - 1))], 1).flatten(1),
                *self._aligned_features({m: x for (kk, m), x in standard.items() if kk == k}, t),
            ], 1)
            for k, t in enumerate(tasks)
        ]

    def _aligned_features(self, inputs: dict[str, StandardInput], task: Task) -> list[torch.Tensor]:
        """The aligned-token comparison of every ordered pair of an aligned task (none otherwise), from
        the standardized inputs of the modalities present; a pair with a missing modality reads zeros,
        as no evidence either way."""
        if task.name not in self.aligned_tasks:
            return []
        tokens = {m: x.tokens() for m, x in inputs.items()}
        some = next(iter(tokens.values()))
        out = []
        for i, j in ordered_pairs(len(task.modalities)):
            a, c = task.modalities[i], task.modalities[j]
            out.append(self.aligned(tokens[a], tokens[c]) if a in tokens and c in tokens
                       else some.new_zeros(some.shape[0], self.cfg.aligned_dim))
        return out

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        return self.step_outputs([Piece(task, None, batch)])[0]

    def step_outputs(self, pieces: Sequence[Piece]) -> list[torch.Tensor]:
        views = [self.forecast_view(p.batch, p.task) for p in pieces]
        pieces = [Piece(p.task, p.modality, v.batch) for p, v in zip(pieces, views, strict=True)]
        return [self.forecast_output(self.heads[p.task](f), v)
                for p, f, v in zip(pieces, self.step_features(pieces), views, strict=True)]

    def compile_step(self, **options) -> None:
        """The encoders' and crossmodal transformers' batched calls, where ``step_features`` spends
        its time; the Python that groups pieces stays eager, so a new mix of tasks in a step costs a
        guard check rather than a new graph of the whole step."""
        for encoder in (self.encoder, *self.group_encoders):
            encoder.encode_inputs = torch.compile(encoder.encode_inputs, **options)
        for crossmodal in (self.crossmodal, *self.group_crossmodals):
            crossmodal.pair_outputs = torch.compile(crossmodal.pair_outputs, **options)

    def arch_config(self) -> dict:
        return asdict(self.cfg)


@register_model("highmmt")
def highmmt(specs: Sequence[ModalitySpec], tasks: Sequence[Task], preset: str = "large", **overrides) -> HighMMT:
    return HighMMT(specs, tasks, resolve_config(preset, **overrides))
