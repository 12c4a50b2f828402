"""Hyperspectral shared datasets: Samson (95×95 pixels × 156 bands), per-pixel abundance regression of
its three endmembers (rock, tree, water)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.io as sio

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

SAMSON_FILE = "Samson.mat"
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SamsonOptions:
    """``patch``: odd side of the pixel's neighbourhood; ``band_group``: adjacent bands per token (must
    divide 156); ``val_frac``/``test_frac``: shares of image rows in the validation and test bands."""

    patch: int = 3
    band_group: int = 13
    val_frac: float = 0.2
    test_frac: float = 0.2


def _read_samson(path: Path) -> dict[str, np.ndarray]:
    """The cube ``SamSon`` (H, W, B), abundances ``A`` (H, W, 3) and endmember names from ``cood``.
    ``A`` is stored in the cube's pixel order: a per-pixel linear fit ``cube ≈ A·W`` explains 70 %
    of the spectral variance as stored and 13 % with ``A`` transposed."""
    try:
        mat = sio.loadmat(path)
    except (ValueError, OSError, TypeError, NotImplementedError) as e:  # scipy raises the last for MATLAB v7.3
        raise HighmodalError(f"{path}: cannot read the MATLAB file ({e})") from None
    missing = [k for k in ("SamSon", "A", "cood") if k not in mat]
    if missing:
        raise HighmodalError(f"{path}: variable(s) {missing} not found; the file has "
                             f"{sorted(k for k in mat if not k.startswith('__'))}")
    cube, abund = np.asarray(mat["SamSon"]), np.asarray(mat["A"])
    if cube.ndim != 3 or abund.ndim != 3 or abund.shape[:2] != cube.shape[:2]:
        raise HighmodalError(f"{path}: SamSon {cube.shape} and A {abund.shape} must be (H, W, bands) and (H, W, k)")
    names = [str(np.ravel(c)[0]).split("-", 1)[-1].lower() for c in np.ravel(mat["cood"])]
    if len(names) != abund.shape[2]:
        raise HighmodalError(f"{path}: cood names {len(names)} endmembers but A has {abund.shape[2]}")
    if not (np.isfinite(cube).all() and np.isfinite(abund).all()):
        raise HighmodalError(f"{path}: SamSon or A contains NaN or infinite values")
    return {"cube": cube.astype(np.float32), "abundance": abund.astype(np.float32), "endmembers": np.array(names)}


def _row_bands(height: int, val_frac: float, test_frac: float, radius: int) -> dict[str, np.ndarray]:
    """Rows of each split: consecutive horizontal bands (train on top, then val, then test), minus
    the rows whose patch would reach into a neighbouring band, so no pixel feeds two splits."""
    n_val, n_test = round(val_frac * height), round(test_frac * height)
    n_train = height - n_val - n_test
    if min(n_train, n_val, n_test) <= 2 * radius:
        raise HighmodalError(f"samson: val_frac {val_frac} and test_frac {test_frac} leave a band of "
                             f"{min(n_train, n_val, n_test)} rows, too thin for the {2 * radius + 1}-pixel patch")
    band = np.repeat(np.arange(3), [n_train, n_val, n_test])
    rows = np.arange(height)
    reach = np.clip(rows[:, None] + np.arange(-radius, radius + 1), 0, height - 1)  # edge padding repeats the edge
    inside = (band[reach] == band[:, None]).all(axis=1)
    return {name: rows[(band == k) & inside] for k, name in enumerate(SPLIT_NAMES)}


def _patches(cube: np.ndarray, rows: np.ndarray, patch: int, group: int) -> np.ndarray:
    """``(len(rows)·W, patch, patch, B/group, group)``: each pixel's edge-padded neighbourhood with its
    spectrum cut into runs of ``group`` adjacent bands."""
    r = patch // 2
    padded = np.pad(cube, ((r, r), (r, r), (0, 0)), mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, (patch, patch), axis=(0, 1))  # (H, W, B, p, p)
    x = win[rows].transpose(0, 1, 3, 4, 2)
    h, w, b = x.shape[0], x.shape[1], cube.shape[2]
    return np.ascontiguousarray(x.reshape(h * w, patch, patch, b // group, group), dtype=np.float32)


@register_loader(
    "samson", SamsonOptions, ("hyperspectral",),
    "Samson 95×95×156 hyperspectral scene: rock/tree/water abundances per pixel from a 3×3 spectral patch",
    shared_available("samson_hsi", [SAMSON_FILE]),
)
def samson(opts: SamsonOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Spectral unmixing as supervised regression: the three abundances of a pixel (they sum to 1)
    from its spectral-spatial patch; MAE is the primary metric (mean absolute abundance error, in
    abundance units like the abundance RMSE unmixing papers report).

    Input ``(3, 3, 12, 13)``: the pixel's 3×3 neighbourhood (edge-padded at the border) with its 156
    bands cut into 12 runs of 13 adjacent bands, one token per (row, column, band run): OmniVec2's
    "spectral-spatial patches". That is 108 tokens of 13 values; a flat ``(9, 156)`` would need
    156-wide tokens, and HighMMT pads every modality of a suite to the widest one. Normalised per
    element (per band and patch position) with training statistics, the usual per-band scaling.

    Split: neighbouring pixels are nearly identical (1,317 pairs of adjacent pixels even share a
    byte-identical spectrum and abundance), so a random pixel split leaks. The image is cut
    into horizontal bands (top 60 % train, next 20 % val, bottom 20 % test) and the rows whose patch
    would cross a band border are dropped, so no pixel's spectrum is input to two splits. Rows, not
    columns: the water lies on the left, and column bands would leave val/test with a mean water
    abundance under 1 % (vs 16–19 % with row bands).

    Only the parsed cube is cached: the patches are a cheap strided view but 9× its size.
    """
    if opts.patch < 1 or opts.patch % 2 == 0:
        raise HighmodalError(f"samson: patch must be a positive odd number, got {opts.patch}")
    folder = require_root(ctx, "samson_hsi")
    sums = verified_files(ctx, "samson_hsi", [SAMSON_FILE])
    arrays = cached_arrays("samson", sums, {}, lambda: _read_samson(folder / SAMSON_FILE))
    cube, abund = arrays["cube"], arrays["abundance"]
    bands = cube.shape[2]
    if opts.band_group < 1 or bands % opts.band_group:
        raise HighmodalError(f"samson: band_group {opts.band_group} must divide the {bands} bands")
    rows = _row_bands(cube.shape[0], opts.val_frac, opts.test_frac, opts.patch // 2)
    splits = {name: SplitData({"hsi_pixel": _patches(cube, r, opts.patch, opts.band_group)},
                              abund[r].reshape(-1, abund.shape[2]))
              for name, r in rows.items()}
    names = ", ".join(arrays["endmembers"].tolist())
    task = make_task(entry, ["hsi_pixel"], "regression", abund.shape[2], (),
                     f"abundances of {names} per pixel from its {opts.patch}x{opts.patch} spectral patch")
    shape = (opts.patch, opts.patch, bands // opts.band_group, opts.band_group)
    td = TaskData(replace(task, metric=entry.metric or "mae"), {"hsi_pixel": spec("hsi_pixel", "hyperspectral", shape)},
                  splits, str(folder / SAMSON_FILE))
    return fit_normalization(td, {"hsi_pixel": "element"})
