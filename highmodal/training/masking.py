"""Token masks and reconstruction losses for masked pretraining (OmniVec2 §3.2.2).

Masks are drawn per sample over its *real* tokens (padding is never masked or scored), with at
least one token kept and, when a sample has two or more, at least one masked, so every sample both
conditions on something and is scored on something whatever the ratio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from highmodal.registry import Registry


def real_tokens(mask: torch.Tensor | None, batch: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.ones(batch, n, dtype=torch.bool, device=device) if mask is None else mask


def random_masked(real: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(B, N)`` real-token mask → ``(B, N)`` True at the ``round(ratio · n)`` tokens chosen per sample."""
    n = real.sum(1)
    count = (n.float() * ratio).round().long().clamp(min=1).minimum(n - 1).clamp(min=0)
    noise = torch.rand(real.shape, device=real.device).masked_fill(~real, 2.0)  # padding ranks last
    rank = noise.argsort(1).argsort(1)
    return real & (rank < count[:, None])


def visible_index(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(B, K)`` of the kept tokens in token order, K the most any sample keeps, and which of
    those slots hold a kept token (shorter samples are padded with masked tokens' indices)."""
    k = int(keep.sum(1).max())
    idx = (~keep).to(torch.int8).argsort(dim=1, stable=True)[:, :k]
    return idx, keep.gather(1, idx)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` ``(B, K)`` of ``x`` ``(B, N, D)``."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def permutation_mask(real: torch.Tensor, predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MPNet-style permuted language modelling (Song et al. 2020, cited by OmniVec2 for text) as one
    attention mask over ``[N content tokens, M query tokens]``.

    The predicted tokens get a random order; a query (mask embedding + the position of predicted token
    r) sees every non-predicted token and the *content* of predicted tokens earlier than r, never its
    own; predicted content tokens see the non-predicted ones and predicted ones up to their own rank;
    non-predicted tokens see only each other. Returns the query positions ``(B, M)``, which query slots
    are real ``(B, M)`` and the mask ``(B, N + M, N + M)``.
    """
    b, n = real.shape
    noise = torch.rand(real.shape, device=real.device).masked_fill(~predicted, 2.0)
    order = noise.argsort(1)
    m = max(int(predicted.sum(1).max()), 1)
    query_idx, query_real = order[:, :m], predicted.gather(1, order[:, :m])
    rank = order.argsort(1)  # predicted tokens rank 0..|S|-1
    big = n + m + 1
    key_rank = torch.where(predicted, rank, torch.where(real, -1, big))  # content keys
    row_rank = torch.where(predicted, rank, torch.where(real, -1, -2))  # content queries
    content_rows = key_rank[:, None, :] <= row_rank[:, :, None]  # (B, N, N)
    query_rows = key_rank[:, None, :] < rank.gather(1, query_idx)[:, :, None]  # (B, M, N)
    eye_n = torch.eye(n, dtype=torch.bool, device=real.device).expand(b, n, n)
    content_rows = content_rows | (eye_n & ~real[:, :, None])  # padding attends to itself only
    top = torch.cat([content_rows, real.new_zeros(b, n, m)], 2)
    bottom = torch.cat([query_rows, torch.eye(m, dtype=torch.bool, device=real.device).expand(b, m, m)], 2)
    return query_idx, query_real, torch.cat([top, bottom], 1)


def per_token_normalised(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's ``norm_pix_loss`` target: each token's values standardised on their own."""
    return (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True, unbiased=False) + eps).sqrt()


RECONSTRUCTION: Registry = Registry("reconstruction loss")


@RECONSTRUCTION.register("l2")
def l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per token: ``(n, P)`` → ``(n,)``."""
    return (pred - target).pow(2).mean(-1)


@RECONSTRUCTION.register("chamfer")
def chamfer(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Point-MAE's L2 Chamfer distance per point group: ``(n, k·3)`` → ``(n,)``."""
    p, t = pred.reshape(len(pred), -1, 3), target.reshape(len(target), -1, 3)
    d = torch.cdist(p, t).pow(2)
    return d.min(2).values.mean(1) + d.min(1).values.mean(1)


@RECONSTRUCTION.register("ce")
def cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Masked-token prediction: logits ``(n, V)`` against ids ``(n,)``."""
    return F.cross_entropy(pred, target, reduction="none")
