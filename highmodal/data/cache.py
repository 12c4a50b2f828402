"""Preprocessed arrays cached under the user cache dir, keyed by the source files' checksums.

A second run with unchanged sources and parameters skips preprocessing. Entries are written to a
temporary file and renamed, so an interrupted run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_VERSION = 2  # 2: text tasks keep each split's sentences


def cache_dir() -> Path:
    """``$HIGHMODAL_CACHE``, else ``$XDG_CACHE_HOME/highmodal``, else ``~/.cache/highmodal``."""
    if os.environ.get("HIGHMODAL_CACHE"):
        return Path(os.environ["HIGHMODAL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "highmodal"


def cached_arrays(
    name: str, checksums: dict[str, str], params: dict, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return ``build()``'s arrays, from the cache when sources (by sha256) and params are unchanged.

    ``checksums`` maps each source file (relative name) to its sha256; ``params`` holds every
    preprocessing setting that changes the output. Arrays must not be object arrays (no pickle).
    """
    key_src = json.dumps({"name": name, "v": CACHE_VERSION, "sources": checksums, "params": params},
                         sort_keys=True, default=str)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = cache_dir() / f"{name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # a damaged entry is rebuilt, never trusted
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return arrays
