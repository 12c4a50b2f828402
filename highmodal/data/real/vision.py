"""Image-like shared datasets: MNIST (test split only) and PneumoniaMNIST chest X-rays."""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.real.common import patchify
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import three_way
from highmodal.data.task import SplitData, TaskData
from highmodal.errors import HighmodalError

MNIST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


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
