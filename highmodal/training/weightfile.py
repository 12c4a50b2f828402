"""Weights files: safetensors recognised by its own structure, everything else refused, nothing unpickled.

A safetensors file is an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object
(which the format lets a writer pad with spaces), then the tensor bytes that the header's
``data_offsets`` cover exactly. That structure alone decides whether a file is safetensors: N may
start with any byte, 0x80 (pickle's PROTO opcode) and ``PK`` (a zip archive's signature) included,
so a first-byte guess refuses about one valid file in 256. Only a file that is not safetensors is
then named a pickle or a zip archive, to say why it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from highmodal.errors import HighmodalError

MAX_HEADER = 100_000_000  # the safetensors library's own limit on the header length
UNSAFE = "refusing it (unpickling can run arbitrary code); highmodal reads weights only as safetensors"


def not_safetensors(path: Path) -> str | None:
    """Why ``path`` is not a well-formed safetensors file, or None when it is one. Reads the header
    only: the length, the JSON object, and that the tensors' byte ranges tile the data section exactly
    (so a truncated or extended file is caught here). Dtypes and shapes are left to the library."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        n = int.from_bytes(prefix, "little")
        if n > size - 8 or n > MAX_HEADER:
            return f"its header length {n} does not fit a {size}-byte file (truncated, or another format)"
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its header is not UTF-8 JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        span = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
                and 0 <= span[0] <= span[1]):
            return f"tensor {name!r} has no valid data_offsets"
        spans.append(tuple(span))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            return "its tensors' byte ranges overlap or leave gaps"
        covered = end
    if covered != size - 8 - n:
        return f"its tensors take {covered} bytes but the file holds {size - 8 - n} after the header (truncated?)"
    return None


def other_format(path: Path) -> str | None:
    """Name a file known not to be safetensors when it is a format that unpickles on load."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK" and head[2:4] in (b"\x03\x04", b"\x05\x06"):
        return "a zip archive (torch.save's format)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (legacy torch.save's format)"
    return None


def check_weights(path: Path) -> None:
    """Raise one clear line unless ``path`` is a well-formed safetensors file."""
    if not path.is_file():
        raise HighmodalError(f"{path}: not found")
    why = not_safetensors(path)
    if why is None:
        return
    kind = other_format(path)
    if kind is not None:
        raise HighmodalError(f"{path}: is {kind}, not safetensors; {UNSAFE}")
    raise HighmodalError(f"{path}: not a safetensors file: {why}")


def read_weights(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after ``check_weights``; never unpickles."""
    check_weights(path)
    try:
        return load_file(str(path), device=device)
    except SafetensorError as e:
        raise HighmodalError(f"{path}: not a readable safetensors file ({e})") from None
