"""Pictures of masked reconstructions for image-like modalities (a look at what pretraining learned).

For a few held-out images: the input, what the encoder saw (hidden patches grey) and the input with
the hidden patches replaced by the decoder's prediction. With per-patch normalised targets (MAE's
``norm_pix_loss``) a prediction has no brightness or contrast of its own; as in MAE's figures it is
shown with the true patch's mean and spread. Values are in the model's normalised units, scaled per
image for display. Loaders hand images over already cut into q×q squares (``(H/q, W/q, q·q·c)``);
the picture puts the pixels back in place.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from highmodal.models.masked import MaskedModeling
from highmodal.nn.masking import gather_tokens
from highmodal.tasks import TaskSuite
from highmodal.training.batching import TaskTensors

IMAGE_KINDS = ("image", "xray", "infrared", "depth")


def pixels(cells: np.ndarray) -> np.ndarray:
    """``(H, W, q·q·c)`` loader cells → ``(H·q, W·q, c)`` pixels (c = 3 when the cell size allows it,
    else 1; a cell size that is no square leaves the channel mean)."""
    h, w, k = cells.shape
    for c in (3, 1):
        q = math.isqrt(k // c) if k % c == 0 else 0
        if q and q * q * c == k:
            return cells.reshape(h, w, q, q, c).transpose(0, 2, 1, 3, 4).reshape(h * q, w * q, c)
    return cells.mean(-1, keepdims=True)


@torch.no_grad()
def views(mm: MaskedModeling, batch: dict[str, torch.Tensor], mods: tuple[str, ...], modality: str, stage: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Original, visible and reconstructed images ``(B, H, W, C)`` of ``modality`` (normalised units)."""
    encoded = {m: mm.encode(batch, m, stage) for m in mods}
    h = encoded[modality].h
    if len(mods) == 2:
        fused = mm.model.fuse(*((encoded[m].h, encoded[m].mask) for m in mods))
        h = fused[mods.index(modality)][0]
    e = encoded[modality]
    pred, _, valid = mm.reconstruct(e, modality, h)
    target = e.tokens.targets
    idx = e.scored[0]
    true = gather_tokens(target, idx)
    if mm.options[modality].norm_targets:
        pred = pred * true.std(-1, unbiased=False, keepdim=True) + true.mean(-1, keepdim=True)
    slots = idx.unsqueeze(-1).expand_as(true)
    recon = target.scatter(1, slots, torch.where(valid.unsqueeze(-1), pred, true))
    seen = target.masked_fill(e.predicted.unsqueeze(-1), math.nan)
    tok = mm.model.tokenizers[modality]
    height, width = mm.model.modalities[modality].ref_lengths()
    size = (tok.grid[0] * tok.patch, tok.grid[1] * tok.patch)

    def image(tokens: torch.Tensor) -> np.ndarray:
        x = F.fold(tokens.transpose(1, 2), size, tok.patch, stride=tok.patch)[:, :, :height, :width]
        return x.permute(0, 2, 3, 1).cpu().numpy()

    return image(target), image(seen), image(recon)


def save_reconstructions(mm: MaskedModeling, suite: TaskSuite, modalities: list[str], folder: Path, prefix: str,
                         rows: int = 4) -> list[str]:
    """One PNG per image-like modality in ``modalities``, from the first test rows; returns the names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage = 2 if prefix.endswith("2") else 1
    names = []
    for m in modalities:
        spec = mm.model.modalities[m]
        if spec.kind not in IMAGE_KINDS or mm.options[m].strategy != "drop":
            continue
        td = next(td for td in suite if m in td.task.modalities)
        mods = td.task.modalities[:2] if stage == 2 and m in td.task.modalities[:2] else (m,)
        device = next(mm.parameters()).device
        batch = {k: v.to(device) for k, v in TaskTensors(td.task, td.splits["test"]).batch(slice(0, rows)).items()}
        mm.eval()
        shown = [np.stack([pixels(img) for img in v]) for v in views(mm, batch, mods, m, stage)]
        mm.train()
        fig, axes = plt.subplots(len(shown[0]), 3, figsize=(6, 2 * len(shown[0])), squeeze=False)
        for i in range(len(shown[0])):
            lo, hi = np.nanmin(shown[0][i]), np.nanmax(shown[0][i])
            for j, (title, v) in enumerate(zip(("input", "encoder input", "reconstruction"), shown, strict=True)):
                img = np.clip((v[i] - lo) / max(hi - lo, 1e-6), 0, 1)
                img = np.where(np.isnan(img), 0.5, img)
                axes[i, j].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                axes[i, j].set_axis_off()
                if i == 0:
                    axes[i, j].set_title(title, fontsize=9)
        ratio = mm.options[m].ratio
        fig.suptitle(f"{m}: stage {stage}, {ratio:.0%} of patches hidden", fontsize=10)
        fig.tight_layout()
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}-{m}.png"
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names
