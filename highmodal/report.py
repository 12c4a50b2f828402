"""What every study writes: markdown tables and the ``<stem>.json`` + ``<stem>.md`` pair of a report."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from highmodal.fileio import atomic_write_text


def row(cells: Iterable[object]) -> str:
    """One markdown table row; an empty cell stays one space wide."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """A markdown table's lines: the header, the rule, then the rows. ``align`` has one letter per
    column, ``l`` (left, the default for columns it does not reach) or ``r`` (right: numbers)."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header), "l"))
    return [row(header), rule, *(row(r) for r in rows)]


def write_report(out: Path, stem: str, report: dict, markdown: str) -> tuple[Path, Path]:
    """``out/<stem>.json`` (the report) and ``out/<stem>.md`` (its markdown), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write_text(paths[0], json.dumps(report, indent=2))
    atomic_write_text(paths[1], markdown if markdown.endswith("\n") else markdown + "\n")
    return paths
