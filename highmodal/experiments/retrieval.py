"""Cross-modal retrieval in a model's embedding space: for each held-out query (e.g. an AVLetters
audio clip), rank every gallery item of the other modality (the videos) by cosine similarity of their
single-stream embeddings; the true partner's rank gives R@K and the median rank.

Ties count against the query (a rank is one plus the number of gallery items scoring *at least* as
high as the partner, other than the partner), so a constant embedding scores chance, not perfect.
``tokens`` (two streams with the same token grid, e.g. aligned images) compares the unpooled token
embeddings position by position. ``aligned`` fits CCA on the training pairs first (a linear map per
modality into a common space): what the embeddings hold about the correspondence, as opposed to
whether the raw spaces line up.
"""

from __future__ import annotations

import numpy as np
import torch

from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData
from highmodal.training.batching import TaskTensors

KS = (1, 5, 10)


def ranks(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of gallery row i for query row i, by cosine similarity."""
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    sim = q @ g.T
    return (sim >= np.diag(sim)[:, None]).sum(1)


def scores(r: np.ndarray) -> dict[str, float]:
    n = len(r)
    out = {f"R@{k}": float(np.mean(r <= k)) for k in KS}
    out |= {"median_rank": float(np.median(r)), "pairs": n, "chance_R@1": 1.0 / n}
    out |= {f"chance_R@{k}": min(k / n, 1.0) for k in KS[1:]}
    return out


def paired_rows(data: SplitData, keep_target: int | None) -> SplitData:
    return data if keep_target is None else data.subset(np.flatnonzero(data.y == keep_target))


@torch.no_grad()
def embed(model, td: TaskData, data: SplitData, modality: str, batch_size: int = 256) -> np.ndarray:
    model.eval()
    tensors = TaskTensors(td.task, data)
    return torch.cat([model.embed(b, modality) for b in tensors.ordered(batch_size)]).numpy()


@torch.no_grad()
def embed_tokens(model, td: TaskData, data: SplitData, modality: str, batch_size: int = 256) -> np.ndarray | None:
    """Unit token embeddings flattened ``(N, tokens·dim)`` (cosine = mean position-wise cosine), or
    None when the modality's tokens are masked (no fixed grid)."""
    model.eval()
    out = []
    for b in TaskTensors(td.task, data).ordered(batch_size):
        z, mask = model.embed_tokens(b, modality)
        if mask is not None:
            return None
        out.append(torch.nn.functional.normalize(z, dim=-1).flatten(1))
    return torch.cat(out).numpy()


def retrieve(model, td: TaskData, query: str, gallery: str, keep_target: int | None = None) -> dict[str, dict]:
    """Raw and CCA-aligned retrieval, query → gallery and back, on ``td``'s test pairs."""
    from sklearn.cross_decomposition import CCA

    for m in (query, gallery):
        if m not in td.task.modalities:
            raise HighmodalError(f"transfer.retrieval: task {td.task.name!r} has no modality {m!r}; it has "
                                 f"{', '.join(td.task.modalities)}")
    test, train = (paired_rows(td.splits[s], keep_target) for s in ("test", "train"))
    if len(test) < 2:
        raise HighmodalError(f"transfer.retrieval: task {td.task.name!r} has {len(test)} test pairs; need 2 or more")
    q, g = embed(model, td, test, query), embed(model, td, test, gallery)
    qt, gt = embed(model, td, train, query), embed(model, td, train, gallery)
    cca = CCA(n_components=min(16, q.shape[1], len(train) - 1), max_iter=1000).fit(qt, gt)
    qa, ga = cca.transform(q, g)
    out = {"raw": {"forward": scores(ranks(q, g)), "backward": scores(ranks(g, q))},
           "aligned": {"forward": scores(ranks(qa, ga)), "backward": scores(ranks(ga, qa))}}
    qt, gt = embed_tokens(model, td, test, query), embed_tokens(model, td, test, gallery)
    if qt is not None and gt is not None and qt.shape == gt.shape:
        out["tokens"] = {"forward": scores(ranks(qt, gt)), "backward": scores(ranks(gt, qt))}
    return out
