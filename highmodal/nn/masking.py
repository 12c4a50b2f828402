"""Token masks and reconstruction losses for masked pretraining (OmniVec2 §3.2.2).

Masks are drawn per sample over its *real* tokens (padding is never masked or scored), with at
least one token kept and, when a sample has two or more, at least one masked, so every sample both
conditions on something and is scored on something whatever the ratio.

Every size a step needs (how many tokens the encoder keeps, how many are scored) is known on the
host from the padded length alone: the per-sample counts never exceed the counts of a full-length
sample, so a batch is cut to those bounds and short samples fill the spare slots with flagged
filler. Nothing here reads a device value back, so the host never waits for the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from highmodal.registry import Registry


def real_tokens(mask: torch.Tensor | None, batch: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.ones(batch, n, dtype=torch.bool, device=device) if mask is None else mask


def most_masked(n: int, ratio: float) -> int:
    """How many of ``n`` real tokens are masked: ``round(ratio · n)``, at least one, at most all but
    one. It grows by at most one per token, so neither it nor ``n`` minus it is ever larger for a
    shorter sample: at the padded length it bounds every sample of the batch."""
    return max(min(max(round(n * ratio), 1), n - 1), 0)


def random_masked(real: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(B, N)`` real-token mask → ``(B, N)`` True at the ``most_masked(n, ratio)`` tokens chosen per
    sample (the same float64 arithmetic and half-to-even rounding as the host formula)."""
    n = real.sum(1)
    count = (n.double() * ratio).round().long().clamp(min=1).minimum(n - 1).clamp(min=0)
    noise = torch.rand(real.shape, device=real.device).masked_fill(~real, 2.0)  # padding ranks last
    rank = noise.argsort(1).argsort(1)
    return real & (rank < count[:, None])


def first_true(flags: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``(B, k)`` of each row's first ``k`` True flags in token order, and which of those
    slots hold one (``k`` at least every row's count; rows with fewer fill up with False positions)."""
    idx = (~flags).to(torch.int8).argsort(dim=1, stable=True)[:, :k]
    return idx, flags.gather(1, idx)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Tokens ``idx`` ``(B, K)`` of ``x``: ``(B, N, D)`` → ``(B, K, D)``, or ids ``(B, N)`` → ``(B, K)``."""
    return x.gather(1, idx if x.dim() == 2 else idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def random_real_tokens(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``x``'s shape filled with tokens drawn uniformly from ``x``'s real ones (the batch's, any
    sample): the k-th real token is found by a search in the running count, not by a boolean
    selection whose size the host would have to read."""
    count = real.flatten().long().cumsum(0)
    k = (torch.rand(real.shape, device=real.device) * count[-1]).long().minimum(count[-1] - 1).clamp(min=0)
    src = torch.searchsorted(count, k, right=True).clamp(max=count.numel() - 1)
    return x.flatten(0, 1).index_select(0, src.flatten()).view_as(x)


def permutation_mask(real: torch.Tensor, predicted: torch.Tensor, most: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MPNet-style permuted language modelling (Song et al. 2020, cited by OmniVec2 for text) as one
    attention mask over ``[N content tokens, M query tokens]``.

    The predicted tokens get a random order; a query (mask embedding + the position of predicted token
    r) sees every non-predicted token and the *content* of predicted tokens earlier than r, never its
    own; predicted content tokens see the non-predicted ones and predicted ones up to their own rank;
    non-predicted tokens see only each other. ``most`` bounds how many tokens a sample predicts.
    Returns the query positions ``(B, M)``, which query slots are real ``(B, M)`` and the mask
    ``(B, N + M, N + M)``.
    """
    b, n = real.shape
    noise = torch.rand(real.shape, device=real.device).masked_fill(~predicted, 2.0)
    order = noise.argsort(1)
    m = max(most, 1)
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
