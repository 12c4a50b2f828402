"""Point-group tokens for point clouds (Point-BERT, Yu et al. 2022; Point-MAE, Pang et al. 2022).

OmniVec2 cites Point-BERT for point clouds, whose tokenizer is the established one for transformers
on points: farthest point sampling picks G centres, each centre's k nearest neighbours form a local
patch, and a mini PointNet turns the patch (coordinates relative to its centre) into one token; the
centre's position enters through an MLP. We follow Point-MAE's patch encoder: shared MLP 3→128→256,
max-pool, the pooled feature concatenated to every point, MLP 512→512→d, max-pool; position MLP
3→128→d with GELU. Points beyond xyz (normals, colours) join the local coordinates as extra inputs of
the first layer.

What the published designs leave open for us, and what we chose:

* LayerNorm in place of Point-MAE's BatchNorm, so a sample's tokens do not depend on the other
  samples of its batch (our batches mix padded clouds, and pairwise training halves the batch).
* Variable-size clouds: padded points are never picked as centres and never join a group (their
  distance is masked), FPS starts at the first real point. A cloud with fewer real points than
  ``group_size`` repeats its nearest real points to fill the group (max-pooling ignores repeats);
  one with fewer than ``groups`` points repeats centres. Every token is therefore real (mask None).
* Defaults G = 32, k = 16: the 256-point ModelNet10 views get about two-fold coverage (Point-BERT
  uses 64 × 32 on 1,024 points, the same ratio).
* Width: Point-MAE's 128/256/512 serve a 384-wide transformer; ``width`` (default: min(128, d_model))
  scales the three layers as w/2w/4w, so a narrow model does not pay for a wide PointNet (at
  d_model 64 the 512→512 layer made point batches 3-4× the cost of any other modality's).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import Tokenizer, Tokens, register_tokenizer


def farthest_point_sample(xyz: torch.Tensor, valid: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``(B, count)`` of farthest-point-sampled real points of ``xyz`` ``(B, N, 3)``, starting
    at each cloud's first real point; padded points (``valid`` False) are never picked."""
    batch = torch.arange(xyz.shape[0], device=xyz.device)
    dist = torch.full(valid.shape, float("inf"), device=xyz.device)
    picks = torch.empty(xyz.shape[0], count, dtype=torch.long, device=xyz.device)
    current = valid.float().argmax(1)
    for i in range(count):
        picks[:, i] = current
        step = ((xyz - xyz[batch, current][:, None]) ** 2).sum(-1)
        dist = torch.minimum(dist, step).masked_fill(~valid, -1.0)
        current = dist.argmax(1)
    return picks


def knn_group(xyz: torch.Tensor, valid: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, G, k)`` of each centre's ``k`` nearest real points, nearest first; a cloud with
    fewer than ``k`` real points repeats them cyclically."""
    dist = ((centres[:, :, None] - xyz[:, None]) ** 2).sum(-1).masked_fill(~valid[:, None], float("inf"))
    near = dist.topk(min(k, xyz.shape[1]), dim=-1, largest=False).indices
    slots = torch.arange(k, device=xyz.device) % valid.sum(1, keepdim=True).clamp(min=1)
    return near.gather(2, slots[:, None].expand(-1, centres.shape[1], -1))


@dataclasses.dataclass
class PointOptions:
    """``groups``: tokens (FPS centres) per cloud; ``group_size``: neighbours per centre; ``width``:
    the PointNet's first layer (then 2× and 4×; None: min(128, d_model))."""

    groups: int = 32
    group_size: int = 16
    width: int | None = None


@register_tokenizer("point_cloud")
class PointGroupEmbedding(Tokenizer):
    Options = PointOptions
    target_loss = "chamfer"
    summary = "Point-BERT groups: FPS centres + kNN patches → mini PointNet per group + MLP(centre) position"

    def __init__(self, spec: ModalitySpec, d_model: int, options: PointOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 1 or spec.channels < 3:
            raise self.fail("expects a point set (points, 3+) with xyz in the first three channels; for "
                            "ModelNet10 add `representation: points` to the task entry (modality shape_points)")
        if options.groups < 1 or options.group_size < 1:
            raise self.fail(f"options groups and group_size must be >= 1, got {options.groups} and "
                            f"{options.group_size}")
        w = options.width or min(128, d_model)
        if w < 1:
            raise self.fail(f"option width must be >= 1, got {w}")
        self.first = nn.Sequential(nn.Linear(spec.channels, w), nn.LayerNorm(w), nn.ReLU(), nn.Linear(w, 2 * w))
        self.second = nn.Sequential(nn.Linear(4 * w, 4 * w), nn.LayerNorm(4 * w), nn.ReLU(), nn.Linear(4 * w, d_model))
        self.pos = nn.Sequential(nn.Linear(3, w), nn.GELU(), nn.Linear(w, d_model))

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        """Targets are each group's xyz relative to its centre, ``(B, G, k · 3)`` (Point-MAE)."""
        self.check_shape(x)
        valid = self.step_mask(x, mask)
        if valid is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        x = self.normalised(x)
        xyz = x[..., :3]
        batch = torch.arange(x.shape[0], device=x.device)[:, None]
        with torch.no_grad():
            picks = farthest_point_sample(xyz, valid, self.options.groups)
            groups = knn_group(xyz, valid, xyz[batch, picks], self.options.group_size)
        centres = xyz[batch, picks]  # (B, G, 3)
        points = x[batch[:, :, None], groups]  # (B, G, k, C)
        local = torch.cat([points[..., :3] - centres[:, :, None], points[..., 3:]], dim=-1)
        feats = self.first(local)
        feats = torch.cat([feats.amax(2, keepdim=True).expand_as(feats), feats], dim=-1)
        shapes = local[..., :3].flatten(2) if targets else None
        return Tokens(self.second(feats).amax(2), self.pos(centres), None, shapes)
