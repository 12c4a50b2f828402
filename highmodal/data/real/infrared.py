"""RoadScene: 221 pixel-aligned thermal-infrared / visible image pairs of road scenes (FLIR ADAS frames).

A constructed pairing task, "do this infrared and this visible image show the same scene?", in which
neither modality alone says anything about the label; scenes split 70/10/20 with the run seed;
images resized and cut into squares, declared ``aligned`` and ``joint``. Design: docs/data.md#infrared-roadscene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.real.common import gradient_magnitude, patchify
from highmodal.data.shared import require_root, verified_files
from highmodal.data.splits import carve
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

DATASET = "roadscene_ir_visible"
IR_DIR = "cropinfrared"
VIS_DIR = "crop_LR_visible"
CLASSES = ["different scene", "same scene"]
# "pixels": the intensities (grey IR, RGB visible); "gradients": each image's Sobel gradient magnitude of
# its grey image, standardised per image, one value per pixel in both modalities; "both": the two side by
# side. Thermal and visible intensities of one scene are unrelated (a warm tyre is bright in IR and black in
# RGB) while their edges coincide, which is what the gradient view exposes.
REPRESENTATIONS = ("pixels", "gradients", "both")


@dataclass
class PairOptions:
    """``size``: side of the resized square images; ``patch``: side of one token's square.
    ``representation``: what each pixel holds, one of ``REPRESENTATIONS``.
    ``val_frac``/``test_frac``: fractions of all scenes."""

    size: int = 64
    patch: int = 8
    representation: str = "pixels"
    val_frac: float = 0.1
    test_frac: float = 0.2


def scene_names(folder: Path) -> list[str]:
    """Every file name found in either image folder (each must exist in both: a missing partner is
    reported by the checksum step, naming the file)."""
    names: set[str] = set()
    for sub in (IR_DIR, VIS_DIR):
        if not (folder / sub).is_dir():
            raise HighmodalError(f"{folder / sub}: image folder of dataset {DATASET!r} is missing")
        names |= {p.name for p in (folder / sub).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not names:
        raise HighmodalError(f"{folder}: no images found in {IR_DIR}/ or {VIS_DIR}/")
    return sorted(names)


def _read_image(path: Path, mode: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise HighmodalError(f"{path}: cannot decode the image ({e})") from None


def _available(ctx: LoadContext) -> bool:
    if ctx.data_root is None:
        return False
    folder = Path(ctx.data_root) / DATASET
    return (folder / IR_DIR).is_dir() and (folder / VIS_DIR).is_dir() and any((folder / IR_DIR).iterdir())


def _view(images: np.ndarray, representation: str) -> np.ndarray:
    """Decoded ``(N, H, W[, C])`` uint8 images → the chosen representation, ``(N, H, W, C')``: the
    pixels stay uint8 (a quarter of the cache), the other views are float32."""
    pixels = images.reshape(*images.shape[:3], -1)
    if representation == "pixels":
        return pixels
    edges = gradient_magnitude(pixels.mean(-1))[..., None]
    return edges if representation == "gradients" else np.concatenate([pixels.astype(np.float32), edges], -1)


def pair_up(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> SplitData:
    """The scenes of one split (row i of ``ir`` and ``vis`` is scene i) → one positive and one negative
    pair per scene (see the module doc); needs at least two scenes."""
    n = len(ir)
    order = rng.permutation(n)
    partner = np.empty_like(order)
    partner[order] = np.roll(order, -1)  # a single cycle: no scene is its own partner
    ir_of = np.concatenate([np.arange(n), np.arange(n)])
    vis_of = np.concatenate([np.arange(n), partner])
    y = np.repeat(np.array([1, 0], dtype=np.int64), n)
    return SplitData({"road_infrared": ir[ir_of], "road_visible": vis[vis_of]}, y)


@register_loader("roadscene", PairOptions, ("infrared", "image"),
                 "RoadScene IR/visible pairs: same scene or not (221 scenes, constructed pairing task)", _available)
def roadscene(opts: PairOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    if opts.representation not in REPRESENTATIONS:
        raise HighmodalError(f"roadscene: representation {opts.representation!r} is not one of {list(REPRESENTATIONS)}")
    if opts.size % opts.patch:
        raise HighmodalError(f"roadscene: patch {opts.patch} does not divide the image size {opts.size}")
    folder = require_root(ctx, DATASET)
    names = scene_names(folder)
    sums = verified_files(ctx, DATASET, [f"{sub}/{n}" for sub in (IR_DIR, VIS_DIR) for n in names])

    def build() -> dict[str, np.ndarray]:
        ir = np.stack([_read_image(folder / IR_DIR / n, "L", opts.size) for n in names])
        vis = np.stack([_read_image(folder / VIS_DIR / n, "RGB", opts.size) for n in names])
        return {"ir": patchify(_view(ir, opts.representation), opts.patch),
                "vis": patchify(_view(vis, opts.representation), opts.patch)}

    arrays = cached_arrays("roadscene", sums, {"size": opts.size, "patch": opts.patch,
                                               "representation": opts.representation}, build)
    ir, vis = arrays["ir"].astype(np.float32), arrays["vis"].astype(np.float32)
    scenes = SplitData({"scene": np.arange(len(names))[:, None]}, np.zeros(len(names), dtype=np.int64))
    rest, test = carve(scenes, opts.test_frac, ctx.seed, stratify=False)
    train, val = carve(rest, opts.val_frac / (1 - opts.test_frac), ctx.seed + 1, stratify=False)
    splits = {}
    for k, (split, part) in enumerate({"train": train, "val": val, "test": test}.items()):
        idx = part.inputs["scene"][:, 0]
        splits[split] = pair_up(ir[idx], vis[idx], np.random.default_rng([ctx.seed, k]))
    td = TaskData(
        make_task(entry, ["road_infrared", "road_visible"], "classification", 2, CLASSES,
                  "constructed: do a thermal and a visible image show the same road scene (chance 0.5)",
                  aligned=True, joint=True),
        {"road_infrared": spec("road_infrared", "infrared", ir.shape[1:]),
         "road_visible": spec("road_visible", "image", vis.shape[1:])},
        splits, str(folder))
    return fit_normalization(td, {"road_infrared": "channel", "road_visible": "channel"})
