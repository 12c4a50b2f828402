"""Access to the shared dataset folder (``--data-root`` / ``$HIGHMODAL_DATA``): locating and
verifying source files before any loader reads them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from highmodal.data.loaders import LoadContext
from highmodal.errors import HighmodalError
from highmodal.fileio import sha256_file


@cache
def _manifest(root: Path) -> dict[str, str]:
    """``CHECKSUMS.sha256`` of the data root (``sha256  ./folder/file`` lines), if present."""
    path = root / "CHECKSUMS.sha256"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            out[name.removeprefix("./")] = digest
    return out


def require_root(ctx: LoadContext, dataset: str) -> Path:
    if ctx.data_root is None:
        raise HighmodalError(f"dataset {dataset!r} needs the shared data folder: pass --data-root or set "
                             "HIGHMODAL_DATA")
    folder = Path(ctx.data_root) / dataset
    if not folder.is_dir():
        raise HighmodalError(f"{folder}: dataset folder not found under the data root {ctx.data_root}")
    return folder


def verified_files(ctx: LoadContext, dataset: str, names: list[str]) -> dict[str, str]:
    """Check that each ``dataset/name`` exists and matches the root's CHECKSUMS.sha256 (when it
    lists it). Returns ``{name: sha256}``, used as the preprocessing cache key."""
    folder = require_root(ctx, dataset)
    manifest = _manifest(Path(ctx.data_root).resolve())
    out = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise HighmodalError(f"{path}: required file of dataset {dataset!r} is missing")
        digest = sha256_file(path)
        expected = manifest.get(f"{dataset}/{name}")
        if expected is not None and digest != expected:
            raise HighmodalError(f"{path}: file is corrupted (sha256 {digest[:12]}… does not match "
                                 f"CHECKSUMS.sha256 {expected[:12]}…)")
        out[name] = digest
    return out


def shared_available(dataset: str, names: list[str]):
    """``Loader.available`` check: the files exist under the data root (not verified: that is cheap)."""

    def check(ctx: LoadContext) -> bool:
        return ctx.data_root is not None and all((Path(ctx.data_root) / dataset / n).is_file() for n in names)

    return check
