"""3-D shape classification on ModelNet10 as 32³ occupancy grids (binvox of the official meshes).

Two views of the same grids: ``voxels`` (64 tokens of 8³ occupancy blocks, as HighMMT cuts an image
into squares) or ``points`` (the occupied voxels' centres as a point set). Official train / test
split, validation carved from train. Design: docs/data.md#shapes-modelnet10.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import three_way
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

DATASET = "modelnet10_voxel32"
FILES = ["modelnet10.npz"]
CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
GRID = 32


@dataclass
class ShapeOptions:
    """``representation``: ``voxels`` (blocks of ``block``³ voxels) or ``points`` (at most ``points``
    occupied-voxel coordinates, subsampled with ``sample_seed``; fixed rather than the run seed, so
    every run sees the same test inputs). ``val_frac``: share of train held out for validation."""

    representation: str = "voxels"
    block: int = 8
    points: int = 256
    sample_seed: int = 0
    val_frac: float = 0.1


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("X_train", "y_train", "X_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise HighmodalError(f"{path}: cannot read the arrays X_train, y_train, X_test, y_test ({e})") from None
    for split in ("train", "test"):
        x, y = out[f"X_{split}"], out[f"y_{split}"]
        if x.shape[1:] != (GRID,) * 3 or y.shape != (len(x),) or y.min() < 0 or y.max() >= len(CLASSES):
            raise HighmodalError(f"{path}: X_{split} must be (N, 32, 32, 32) with y_{split} (N,) in 0..9; got "
                                 f"{x.shape} and {y.shape}")
    return out


def voxel_blocks(grids: np.ndarray, block: int) -> np.ndarray:
    """``(N, G, G, G)`` → ``(N, G/b, G/b, G/b, b³)``: each token one ``b³`` block, voxels in C order."""
    n, g = len(grids), grids.shape[1]
    k = g // block
    x = grids.reshape(n, k, block, k, block, k, block).transpose(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(n, k, k, k, block**3)


def point_sets(grids: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Occupied-voxel coordinates in [-1, 1], ``(N, size, 3)`` with a ``(N, size)`` mask; empty grids
    give an all-False mask row."""
    x = np.zeros((len(grids), size, 3), dtype=np.float32)
    mask = np.zeros((len(grids), size), dtype=bool)
    for i, grid in enumerate(grids):
        coords = np.argwhere(grid)  # already sorted lexicographically
        if len(coords) > size:
            coords = coords[np.sort(rng.choice(len(coords), size, replace=False))]
        x[i, : len(coords)] = coords / (grid.shape[0] - 1) * 2 - 1
        mask[i, : len(coords)] = True
    return x, mask


@register_loader("modelnet10", ShapeOptions, ("point_cloud",),
                 "ModelNet10 3-D shapes as 32³ voxels (3,991 train / 908 test, 10 classes)",
                 shared_available(DATASET, FILES))
def modelnet10(opts: ShapeOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    if opts.representation not in ("voxels", "points"):
        raise HighmodalError(f"modelnet10: representation must be 'voxels' or 'points', got {opts.representation!r}")
    if opts.representation == "voxels" and GRID % opts.block:
        raise HighmodalError(f"modelnet10: block {opts.block} does not divide the grid size {GRID}")
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, FILES)
    points = opts.representation == "points"
    params = ({"representation": "points", "points": opts.points, "sample_seed": opts.sample_seed} if points
              else {"representation": "voxels", "block": opts.block})

    def build() -> dict[str, np.ndarray]:
        raw = _read_npz(folder / FILES[0])
        out = {}
        rng = np.random.default_rng(opts.sample_seed)
        for split in ("train", "test"):
            grids = raw[f"X_{split}"] != 0
            out[f"y_{split}"] = raw[f"y_{split}"].astype(np.int64)
            if points:
                out[f"x_{split}"], out[f"mask_{split}"] = point_sets(grids, opts.points, rng)
            else:  # occupancy is binary: the cache holds it bit-packed (20 MB instead of 160 MB)
                out[f"x_{split}"] = np.packbits(voxel_blocks(grids, opts.block), axis=-1)
        return out

    arrays = cached_arrays("modelnet10", sums, params, build)
    name = "shape_points" if points else "shape_voxels"
    data = {}
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        if points:
            mask = arrays[f"mask_{split}"]
            keep = mask.any(axis=1)
            data[split] = SplitData({name: arrays[f"x_{split}"][keep]}, y[keep], {name: mask[keep]})
        else:
            x = np.unpackbits(arrays[f"x_{split}"], axis=-1, count=opts.block**3).astype(np.float32)
            data[split] = SplitData({name: x}, y)
    splits = three_way(data["train"], data["test"], opts.val_frac, 0.0, ctx.seed, stratify=True)
    if points:
        dropped = {s: len(arrays[f"y_{s}"]) - len(data[s]) for s in ("train", "test")}
        what = (f"shape category from up to {opts.points} occupied-voxel points; empty grids dropped "
                f"({dropped['train']} train, {dropped['test']} test)")
        shape_spec = spec(name, "point_cloud", (None, 3), max_len=opts.points)
    else:
        what = f"shape category from a 32^3 occupancy grid cut into {opts.block}^3 blocks"
        shape_spec = spec(name, "point_cloud", data["train"].inputs[name].shape[1:])
    td = TaskData(make_task(entry, [name], "classification", len(CLASSES), CLASSES, what), {name: shape_spec},
                  splits, str(folder))
    return fit_normalization(td, {name: "channel"})
