"""Image-like shared datasets: MNIST (test split only) and PneumoniaMNIST chest X-rays."""

from __future__ import annotations

import gzip
import zipfile
import zlib
from dataclasses import dataclass, replace

import numpy as np

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.real.common import patchify
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import three_way
from highmodal.errors import HighmodalError
from highmodal.tasks import SPLITS, SplitData, TaskData

MNIST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
PNEUMONIA_FILE = "pneumoniamnist.npz"


@dataclass
class ImageOptions:
    """``patch``: side of the square cut into one token (HighMMT uses 4 for 28×28 digits)."""

    patch: int = 4
    val_frac: float = 0.1
    test_frac: float = 0.2


def _read_idx(path, offset: int, what: str) -> np.ndarray:
    try:
        return np.frombuffer(gzip.open(path).read(), np.uint8, offset=offset)
    except (OSError, EOFError) as e:
        raise HighmodalError(f"{path}: cannot read the gzip'd IDX {what} file ({e})") from None


@register_loader("mnist", ImageOptions, ("image",), "MNIST test split (10,000 28×28 digits), split carved here",
                 shared_available("mnist_test", MNIST_FILES))
def mnist(opts: ImageOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Only MNIST's official *test* split is available, so train/val/test are carved from those
    10,000 images: stratified 20 % test, then 10 % of the rest for validation, seeded by the run."""
    folder = require_root(ctx, "mnist_test")
    sums = verified_files(ctx, "mnist_test", MNIST_FILES)

    def build() -> dict[str, np.ndarray]:
        x = _read_idx(folder / MNIST_FILES[0], 16, "image").reshape(-1, 28, 28)
        y = _read_idx(folder / MNIST_FILES[1], 8, "label")
        return {"x": patchify(x, opts.patch), "y": y.astype(np.int64)}

    arrays = cached_arrays("mnist", sums, {"patch": opts.patch}, build)
    x = arrays["x"].astype(np.float32)
    splits = three_way(SplitData({"mnist_image": x}, arrays["y"]), None, opts.val_frac, opts.test_frac,
                       ctx.seed, stratify=True)
    td = TaskData(make_task(entry, ["mnist_image"], "classification", 10, [str(i) for i in range(10)],
                            "digit from a 28x28 image cut into patches"),
                  {"mnist_image": spec("mnist_image", "image", x.shape[1:])}, splits, str(folder))
    return fit_normalization(td, {"mnist_image": "channel"})


@dataclass
class PatchOptions:
    """``patch``: side of the square cut into one token (4 → 7×7 tokens of 16 values for 28×28 images)."""

    patch: int = 4


def _read_pneumonia(path, patch: int) -> dict[str, np.ndarray]:
    """Patchified images ``x_<split>`` and 0/1 labels ``y_<split>`` of the MedMNIST npz."""
    try:
        with np.load(path, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as e:
        raise HighmodalError(f"{path}: cannot read the npz file ({e})") from None
    out = {}
    for split in SPLITS:
        x, y = raw.get(f"{split}_images"), raw.get(f"{split}_labels")
        if x is None or y is None or x.shape[1:] != (28, 28) or y.size != len(x):
            raise HighmodalError(f"{path}: expected arrays {split}_images (N, 28, 28) and {split}_labels (N, 1); "
                                 f"found {', '.join(f'{k} {v.shape}' for k, v in raw.items())}")
        out[f"x_{split}"], out[f"y_{split}"] = patchify(x, patch), y.reshape(-1).astype(np.int64)
    return out


@register_loader("pneumoniamnist", PatchOptions, ("xray",),
                 "PneumoniaMNIST chest X-rays (28×28), pneumonia vs normal, the file's train/val/test splits",
                 shared_available("pneumoniamnist", [PNEUMONIA_FILE]))
def pneumoniamnist(opts: PatchOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """MedMNIST v2 PneumoniaMNIST: normal (0) vs pneumonia (1) from a 28×28 chest X-ray cut into patches
    as the MNIST digits. The file's splits are kept. Its val (524) and test (624) splits are the official
    ones, but its train split is not (dataset README, caveat A): 3,882 instead of 4,708 images, keeping
    only 388 of the 1,214 normal ones. Training is therefore 90 % pneumonia, against 63 % in test, and
    scores are not comparable with published MedMNIST results. Under that imbalance accuracy rewards
    always answering "pneumonia", so the primary metric is AUROC (MedMNIST reports AUC and ACC)."""
    folder = require_root(ctx, "pneumoniamnist")
    sums = verified_files(ctx, "pneumoniamnist", [PNEUMONIA_FILE])
    arrays = cached_arrays("pneumoniamnist", sums, {"patch": opts.patch},
                           lambda: _read_pneumonia(folder / PNEUMONIA_FILE, opts.patch))
    splits = {s: SplitData({"chest_xray": arrays[f"x_{s}"].astype(np.float32)}, arrays[f"y_{s}"]) for s in SPLITS}
    task = make_task(entry, ["chest_xray"], "classification", 2, ["normal", "pneumonia"],
                     "pneumonia vs normal from a 28x28 chest X-ray cut into patches")
    td = TaskData(replace(task, metric=entry.metric or "auroc"),
                  {"chest_xray": spec("chest_xray", "xray", splits["train"].inputs["chest_xray"].shape[1:])},
                  splits, str(folder))
    return fit_normalization(td, {"chest_xray": "channel"})
