"""``docs/heterogeneity.json`` and its figures from the outputs of ``highmodal heterogeneity``
(sampled and ``--full``), ``highmodal ablations`` and ``highmodal pareto``.

Usage: ``python -m highmodal.heterogeneity.report SAMPLED FULL ABLATIONS [PARETO] --out docs``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from highmodal.fileio import atomic_write_text

KINDS = ("unimodal", "crossmodal")


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _summary(study: dict) -> dict:
    return {n: {k: r[k] for k in ("mean", "std", "seeds", "params")} for n, r in study["variants"].items()}


def matrix_cost(sampled: dict, full: dict) -> dict:
    """Wall time of the O(M) sample + completion vs the full O(M²) matrix, over both kinds."""
    done = [k for k in KINDS if "units" in sampled[k]]
    return {
        "full_s": sum(full[k]["seconds"] for k in done),
        "sampled_s": sum(sampled[k]["seconds"] for k in done),
        "entries_measured": sum(sampled[k]["entries_measured"] for k in done),
        "entries_total": sum(sampled[k]["entries_total"] for k in done),
        "runs_full": sum(full[k]["runs"] for k in done),
        "runs_sampled": sum(sampled[k]["runs"] for k in done),
    }


def _portable(doc: dict, dirs: dict[str, Path]) -> dict:
    """Commands name the output folders as ``runs/<name>``, not as wherever they were written."""
    text = json.dumps(doc)
    for name, d in sorted(((n, d) for n, d in dirs.items() if d is not None), key=lambda kv: -len(str(kv[1]))):
        text = text.replace(str(d), f"runs/{name}")
    return json.loads(text)


def build(sampled_dir: Path, full_dir: Path, ablations_dir: Path, pareto_dir: Path | None, out: Path,
          heterogeneity_dir: Path | None = None) -> dict:
    """``heterogeneity_dir``: the folder the studies were given (default: ``sampled_dir``)."""
    dirs = {"heterogeneity-real": heterogeneity_dir or sampled_dir, "heterogeneity-real-full": full_dir,
            "ablations-real": ablations_dir, "pareto-real": pareto_dir}
    sampled, full = _read(sampled_dir / "heterogeneity.json"), _read(full_dir / "heterogeneity.json")
    sampled = _portable(sampled, {**dirs, "heterogeneity-real": sampled_dir})
    full, ablations = _portable(full, dirs), _portable(_read(ablations_dir / "ablations.json"), dirs)
    doc = {
        "command": ablations["command"],
        "ablations": _summary(ablations),
        "matrix_cost": matrix_cost(sampled, full),
        "commands": {"sampled": sampled["command"], "full": full["command"], "ablations": ablations["command"]},
        "completion": {k: {"holdout_sampled": sampled[k]["holdout"], "holdout_full": full[k]["holdout"],
                           "sampled_vs_full": full[k].get("sampled_vs_full")} for k in KINDS if "units" in sampled[k]},
    }
    figures = out / "heterogeneity"
    figures.mkdir(parents=True, exist_ok=True)
    for src, tag in ((sampled_dir, "sampled"), (full_dir, "full")):
        for png in src.glob("*.png"):
            shutil.copyfile(png, figures / f"{tag}_{png.name}")
    if pareto_dir is not None:
        pareto = _portable(_read(pareto_dir / "pareto.json"), dirs)
        doc["pareto"] = _summary(pareto)
        doc["commands"]["pareto"] = pareto["command"]
        shutil.copyfile(pareto_dir / "pareto.png", figures / "pareto.png")
    atomic_write_text(out / "heterogeneity.json", json.dumps(doc, indent=1))
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("sampled", type=Path)
    p.add_argument("full", type=Path)
    p.add_argument("ablations", type=Path)
    p.add_argument("pareto", type=Path, nargs="?")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--studies-used", type=Path, help="the --heterogeneity folder the studies were given")
    a = p.parse_args()
    doc = build(a.sampled, a.full, a.ablations, a.pareto, a.out, a.studies_used)
    print(json.dumps({k: doc[k] for k in ("ablations", "matrix_cost")}, indent=1))


if __name__ == "__main__":
    main()
