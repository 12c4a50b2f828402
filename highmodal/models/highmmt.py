"""HighMMT (Liang et al., 2023): one shared Perceiver for every modality, one shared crossmodal
transformer for every ordered modality pair, and one small head per task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from highmodal.data.task import Task
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Standardizer
from highmodal.models.base import MultitaskModel
from highmodal.models.groups import check_groups, crossmodal_units, unimodal_units
from highmodal.models.registry import register_model, resolve_preset
from highmodal.nn.crossmodal import CrossmodalTransformer, ordered_pairs
from highmodal.nn.heads import LinearHead
from highmodal.nn.perceiver import PerceiverEncoder


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
        self.heads = nn.ModuleDict({
            t.name: LinearHead(self.feature_dim(t), t.out_dim, cfg.head_norm) for t in tasks
        })

    def feature_dim(self, task: Task) -> int:
        """Unimodal tasks keep the whole latent array (as the reference code); multimodal tasks get
        one ``latent_dim`` vector per ordered pair."""
        m = len(task.modalities)
        return self.cfg.num_latents * self.cfg.latent_dim if m == 1 else m * (m - 1) * self.cfg.latent_dim

    def encoder_for(self, group: int) -> PerceiverEncoder:
        return self.encoder if group == 0 else self.group_encoders[group - 1]

    def crossmodal_for(self, group: int) -> CrossmodalTransformer:
        return self.crossmodal if group == 0 else self.group_crossmodals[group - 1]

    def encode(self, batch: dict[str, torch.Tensor], names: Sequence[str], group: int = 0) -> list[torch.Tensor]:
        """Run one encoder over all ``names`` in one call (padded to a common length, masked)."""
        seqs = [self.standardizer(n, batch[n], batch.get(f"{n}_mask")) for n in names]
        lmax = max(t.shape[1] for t, _ in seqs)
        b = seqs[0][0].shape[0]
        need_mask = any(m is not None or t.shape[1] < lmax for t, m in seqs)
        tokens = torch.cat([nn.functional.pad(t, (0, 0, 0, lmax - t.shape[1])) for t, _ in seqs])
        mask = None
        if need_mask:
            mask = torch.cat([
                nn.functional.pad(m if m is not None else t.new_ones(b, t.shape[1], dtype=torch.bool),
                                  (0, lmax - t.shape[1]), value=False)
                for t, m in seqs
            ])
        return list(self.encoder_for(group)(tokens, mask).unflatten(0, (len(seqs), -1)).unbind(0))

    def features(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        """The representation fed to the task head: ``(B, feature_dim)``."""
        t = self.task(task)
        present = [m for m in t.modalities if m in batch]
        if not present:
            raise HighmodalError(f"task {task!r}: the batch holds none of its modalities {list(t.modalities)}")
        uni = {m: self.cfg.unimodal_groups.get(f"{task}/{m}", 0) for m in t.modalities}
        encoded = {}
        for g in sorted({uni[m] for m in present}):  # one batched call per encoder group
            names = [m for m in present if uni[m] == g]
            encoded.update(zip(names, self.encode(batch, names, g), strict=True))
        # A missing modality is stood in for by its encoder's learned initial latent array: what the
        # Perceiver holds before it has looked at any input. No extra parameters, and the head keeps
        # its width, so any non-empty subset of a task's modalities can be scored.
        b = encoded[present[0]].shape[0]
        latents = [encoded[m] if m in encoded else self.encoder_for(uni[m]).latents.expand(b, -1, -1)
                   for m in t.modalities]
        if len(latents) == 1:
            return latents[0].flatten(1)
        if not self.group_crossmodals:
            return self.crossmodal(latents)
        pairs = ordered_pairs(len(latents))
        mods = t.modalities
        group = [self.cfg.crossmodal_groups.get(f"{task}/{mods[min(i, j)]}+{mods[max(i, j)]}", 0) for i, j in pairs]
        out: list[torch.Tensor | None] = [None] * len(pairs)
        for g in sorted(set(group)):  # one batched call per crossmodal group
            idx = [k for k, gk in enumerate(group) if gk == g]
            for k, y in zip(idx, self.crossmodal_for(g).pair_outputs(latents, [pairs[k] for k in idx]), strict=True):
                out[k] = y
        return torch.stack(out, 1).reshape(b, -1)

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        features = self.features(batch, task)  # validates the task name first
        return self.heads[task](features)

    def arch_config(self) -> dict:
        return asdict(self.cfg)


@register_model("highmmt")
def highmmt(specs: Sequence[ModalitySpec], tasks: Sequence[Task], preset: str = "large", **overrides) -> HighMMT:
    return HighMMT(specs, tasks, resolve_config(preset, **overrides))
