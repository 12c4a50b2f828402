"""Helpers shared by the real-dataset loaders."""

from __future__ import annotations

import numpy as np


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` → ``(N, H/p, W/p, p·p·C)``: HighMMT's "cut into p×p squares"
    (AV-MNIST images become 7×7 tokens of 16 values with p = 4)."""
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not divisible by patch {patch}")
    x = images.reshape(n, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // patch, w // patch, patch * patch * c)
