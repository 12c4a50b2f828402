"""Small file utilities shared by data, checkpoints and reports: hashing and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from highmodal.errors import HighmodalError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary sibling, fsync, rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def refuse_to_replace(path: Path, overwrite: bool, resumable: bool = False) -> None:
    """Every command's one check before it writes an output (run directory, folder or file): an
    existing one is replaced only with ``--overwrite`` (or continued with ``--reuse`` where
    ``resumable``), so nothing on disk is lost by accident."""
    if path.exists() and not overwrite:
        how = "--reuse to continue it or --overwrite" if resumable else "--overwrite"
        raise HighmodalError(f"{path}: already exists; pass {how} to replace it")
