"""Heatmaps and dendrograms of heterogeneity matrices (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.cluster.hierarchy import dendrogram


def heatmap(d: np.ndarray, measured: np.ndarray, units: list[str], title: str, path: Path) -> None:
    """Distances coloured green (similar) to red (heterogeneous); a dot marks a pair measured in both
    directions, a ring a pair measured in one; the rest of d comes from the completed matrix."""
    size = max(4.0, 0.42 * len(units) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(d, cmap="RdYlGn_r")
    ax.set_xticks(range(len(units)), units, rotation=90, fontsize=7)
    ax.set_yticks(range(len(units)), units, fontsize=7)
    off = ~np.eye(len(units), dtype=bool)
    both, one = measured & measured.T & off, (measured ^ measured.T) & off
    for mask, style, label in ((both, dict(c="black"), "both directions measured"),
                               (one, dict(facecolors="none", edgecolors="black"), "one direction measured")):
        ys, xs = np.nonzero(mask)
        if len(xs):
            ax.scatter(xs, ys, s=10, marker="o", linewidths=0.6, label=label, **style)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="d(i, j)")
    if (both | one).any():
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def dendrogram_plot(z: np.ndarray, units: list[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(units) + 2), 4))
    dendrogram(z, labels=units, ax=ax, leaf_rotation=90, leaf_font_size=7, color_threshold=0)
    ax.set_ylabel("average-linkage distance")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def pareto_plot(rows: dict[str, dict], path: Path) -> None:
    """Mean test skill (± std over seeds) against parameter count, one point per number of groups."""
    fig, ax = plt.subplots(figsize=(6, 4))
    params = [r["params"] for r in rows.values()]
    ax.errorbar(params, [r["mean"] for r in rows.values()], yerr=[r["std"] for r in rows.values()], fmt="o-",
                capsize=3)
    labels: dict[tuple[int, float], list[str]] = {}  # variants that formed the same groups share a point
    for name, r in rows.items():
        labels.setdefault((r["params"], r["mean"]), []).append(name)
    for (x, y), names in labels.items():
        ax.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("parameters")
    ax.set_ylabel("mean test skill (points)")
    ax.set_title("performance vs parameters over the number of groups", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
