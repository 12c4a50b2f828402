"""Settings of a heterogeneity measurement: the ``heterogeneity:`` section of a suite YAML."""

from __future__ import annotations

import dataclasses

from highmodal.errors import HighmodalError

NORMALISATIONS = ("chance", "relative", "none")


@dataclasses.dataclass
class HeterogeneityConfig:
    """``normalise``: the paper compares transfer differences across tasks whose losses differ in
    scale (cross-entropy over 2 vs 26 classes, MSE) without saying how it reconciles them. ``chance``
    divides T(i→j) by target j's input-blind loss (label prior / training mean), so an entry reads
    "fraction of the learnable loss lost by transferring"; ``relative`` divides by L*_j, which
    explodes for nearly solved targets; ``none`` keeps raw differences. ``entries_per_unit`` sets
    the O(M) sampling budget."""

    epochs: int = 4
    max_train: int = 1024
    max_eval: int = 512
    preset: str = "large"
    entries_per_unit: float = 3.0
    holdout_frac: float = 0.25
    rank: int = 3
    normalise: str = "chance"
    linkage: str = "average"
    k_unimodal: int = 3
    k_crossmodal: int = 2
    workers: int = 2
    # Grouped fine-tuning studies (ablations, Pareto): epochs after homogeneous pre-training (which
    # uses the suite's train.epochs), seeds, and a per-task cap on training samples (None: all data;
    # with a cap, validation and test are capped at max_eval too).
    finetune_epochs: int = 3
    seeds: int = 3
    study_max_train: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "max_train": self.max_train >= 2, "max_eval": self.max_eval >= 2,
            "entries_per_unit": self.entries_per_unit > 0, "holdout_frac": 0 < self.holdout_frac < 1,
            "rank": self.rank >= 1, "normalise": self.normalise in NORMALISATIONS,
            "linkage": self.linkage in ("average", "complete", "single", "weighted"),
            "k_unimodal": self.k_unimodal >= 1, "k_crossmodal": self.k_crossmodal >= 1, "workers": self.workers >= 1,
            "finetune_epochs": self.finetune_epochs >= 1, "seeds": self.seeds >= 1,
            "study_max_train": self.study_max_train is None or self.study_max_train >= 2,
        }
        for key, ok in checks.items():
            if not ok:
                raise HighmodalError(f"heterogeneity.{key}: value {getattr(self, key)!r} is out of range")
