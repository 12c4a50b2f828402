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


def gradient_magnitude(images: np.ndarray) -> np.ndarray:
    """Grey images ``(N, H, W)`` → their Sobel gradient magnitudes, standardised per image (zero mean,
    unit variance), so a dot product of two flattened maps over H·W is their Pearson correlation.
    Each image is filtered on its own (``ndimage.sobel`` on the stack would also smooth across images)."""
    from scipy import ndimage

    derivative, smooth = np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0])
    images = np.asarray(images, dtype=np.float64)
    kernels = (np.outer(derivative, smooth), np.outer(smooth, derivative))
    rows, cols = (ndimage.correlate(images, k[None]) for k in kernels)
    g = np.hypot(rows, cols).astype(np.float32)
    g -= g.mean((1, 2), keepdims=True)
    return g / np.maximum(g.std((1, 2), keepdims=True), 1e-12)
