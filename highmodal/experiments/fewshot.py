"""Few-shot linear probes: k labelled examples per class, logistic regression on frozen embeddings.

Each classification task is embedded once (single-stream g∘f, mean-pooled, modalities concatenated,
as the linear probe does); for every k, ``draws`` random draws of k training examples per class (all
of a class's examples when it has fewer) fit a standardised logistic regression, scored by accuracy
on the test split. This measures what pretraining puts into the embedding before any labels are
used; the same on a randomly initialised copy is the baseline.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from highmodal.experiments.probe import embed_task
from highmodal.tasks import TaskSuite


def draw(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k random rows per class of ``y``."""
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c in np.unique(y)]))


def fewshot(model, suite: TaskSuite, shots: list[int], draws: int, seed: int) -> dict[str, dict[int, float]]:
    """Mean test accuracy per classification task and k."""
    out: dict[str, dict[int, float]] = {}
    for td in suite:
        if not td.task.is_classification:
            continue
        embedded, _ = embed_task(model, td, 256, 1.0, seed)
        name = embedded.task.modalities[0]
        (xtr, ytr), (xte, yte) = ((embedded.splits[s].inputs[name][:, 0], embedded.splits[s].y)
                                  for s in ("train", "test"))
        rng = np.random.default_rng([seed, len(out)])
        curve = {}
        for k in shots:
            accs = []
            for _ in range(draws):
                idx = draw(ytr, k, rng)
                if len(np.unique(ytr[idx])) < 2:
                    continue
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
                accs.append(float((clf.fit(xtr[idx], ytr[idx]).predict(xte) == yte).mean()))
            curve[k] = float(np.mean(accs)) if accs else float("nan")
        out[td.task.name] = curve
    return out
