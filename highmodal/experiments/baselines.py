"""The strongest simple baseline per task: a panel of the standard models a practitioner builds first.

Every registered baseline that applies to a task is fit on the training split and scored on the
validation split (the task's primary metric); the winner is refit on train + validation and
predicts the test split. Test labels never choose anything. The panel, by what it reads:

* every task: gradient boosting and a linear model (logistic / ridge regression, standardised) on
  flattened small inputs or pooled per-channel statistics (``bench.classical.features``), and an
  RBF-kernel SVM on the same features for classification with at most 12,000 rows;
* graphs: the Weisfeiler-Lehman subtree kernel in an SVM (``SplitData.meta["wl"]``);
* sequences (time series, audio features, IMU): MiniRocket features (sktime) + a ridge model;
* text: TF-IDF of word 1–2-grams and character 2–5-grams + logistic regression, on each split's
  sentences (``SplitData.meta["text"]``);
* forecasting: the naive last value, the seasonal-naive value (one day back for hourly data) and
  ridge regression on the window predicting the residual to the last value;
* two or more modalities: late fusion, one model per modality with their class probabilities (or
  predictions) averaged;
* pairs of aligned images with a same/different target: the correlation of their Sobel gradient
  magnitudes, thresholded (no learning but the threshold).

Hyper-parameters are the libraries' defaults or a small validation-free internal search (RidgeCV's
leave-one-out over alphas), as a practitioner's first model would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from highmodal.data.real.common import gradient_magnitude
from highmodal.experiments.features import features
from highmodal.experiments.retrieval import paired_rows, ranks, scores
from highmodal.metrics import METRICS, chance_metrics, compute_metrics, metric_names, naive_forecast, skill
from highmodal.registry import Registry
from highmodal.tasks import SplitData, TaskData

SEQUENCE_KINDS = {"time_series", "audio", "imu"}
IMAGE_KINDS = {"image", "infrared", "xray", "depth"}
ALPHAS = np.logspace(-3, 3, 13)

# (pred, probs or None) for the rows of a split
Predictor = Callable[[SplitData], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class Baseline:
    """``applies(td)``: whether the model can read this task; ``fit(td, data)``: a predictor trained on
    ``data`` (train, or train + validation for the final refit)."""

    applies: Callable[[TaskData], bool]
    fit: Callable[[TaskData, SplitData], Predictor]
    what: str


BASELINES: Registry[Baseline] = Registry("baseline")


def join(a: SplitData, b: SplitData) -> SplitData:
    """Two splits' rows as one (train + validation for the refit)."""
    cat = lambda x, y: {k: np.concatenate([x[k], y[k]]) for k in x}  # noqa: E731
    return SplitData(cat(a.inputs, b.inputs), np.concatenate([a.y, b.y]), cat(a.masks, b.masks), cat(a.meta, b.meta))


def _probs_for(td: TaskData, model, x: np.ndarray) -> np.ndarray:
    """Class probabilities over all of the task's classes (a class absent from training gets 0)."""
    full = np.zeros((x.shape[0], td.task.out_dim))
    full[:, model.classes_] = model.predict_proba(x)
    return full


def _tabular(make_classifier, make_regressor, modalities: tuple[str, ...] | None = None):
    """A ``fit`` for a scikit-learn model on ``features`` of the task (or of some of its modalities)."""

    def fit(td: TaskData, data: SplitData) -> Predictor:
        x = features(td, data, modalities)
        if td.task.is_classification:
            model = make_classifier(len(x)).fit(x, data.y)

            def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
                probs = _probs_for(td, model, features(td, split, modalities))
                return probs.argmax(1), probs
        else:
            model = make_regressor(len(x)).fit(x, data.y)

            def predict(split: SplitData) -> tuple[np.ndarray, None]:
                return model.predict(features(td, split, modalities)).reshape(split.y.shape), None
        return predict

    return fit


def _hgb_classifier(n: int):
    return HistGradientBoostingClassifier(min_samples_leaf=int(np.clip(n // 50, 2, 20)), random_state=0)


def _hgb_regressor(n: int):
    return MultiOutputRegressor(HistGradientBoostingRegressor(min_samples_leaf=int(np.clip(n // 50, 2, 20)),
                                                              random_state=0))


def _linear_classifier(n: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _linear_regressor(n: int):
    return make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))


def _any(td: TaskData) -> bool:
    return True


BASELINES.register("hgb")(Baseline(_any, _tabular(_hgb_classifier, _hgb_regressor),
                                   "HistGradientBoosting on flattened or pooled features"))
BASELINES.register("linear")(Baseline(_any, _tabular(_linear_classifier, _linear_regressor),
                                      "logistic / ridge regression on standardised flattened or pooled features"))


def _softmax_probs(td: TaskData, model, scores: np.ndarray) -> np.ndarray:
    """Class probabilities from a margin classifier's decision scores (a softmax, for AUROC)."""
    scores = np.stack([-scores, scores], 1) if scores.ndim == 1 else scores
    z = np.exp(scores - scores.max(1, keepdims=True))
    probs = np.zeros((len(scores), td.task.out_dim))
    probs[:, model.classes_] = z / z.sum(1, keepdims=True)
    return probs


SVM_MAX_ROWS = 12_000  # kernel SVMs grow quadratically in rows; beyond this a practitioner moves on


def _small_classification(td: TaskData) -> bool:
    return td.task.is_classification and len(td.splits["train"]) + len(td.splits["val"]) <= SVM_MAX_ROWS


def _svm(td: TaskData, data: SplitData) -> Predictor:
    from sklearn.svm import SVC

    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale")).fit(features(td, data), data.y)

    def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
        probs = _softmax_probs(td, model, model.decision_function(features(td, split)))
        return probs.argmax(1), probs
    return predict


BASELINES.register("svm_rbf")(Baseline(_small_classification, _svm,
                                       "RBF-kernel SVM (C = 10) on standardised flattened or pooled features"))


def _graphs(td: TaskData) -> bool:
    return td.task.is_classification and all("wl" in d.meta for d in td.splits.values())


def _wl(td: TaskData, data: SplitData) -> Predictor:
    """The Weisfeiler-Lehman subtree kernel (a linear kernel on the label counts) in an SVM, its C
    chosen by 5-fold cross-validation on the rows it is fit on, as Shervashidze et al. did."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    folds = int(min(5, np.bincount(data.y).min()))
    search = GridSearchCV(SVC(kernel="linear"), {"C": np.logspace(-3, 1, 5)}, cv=max(folds, 2))
    model = search.fit(data.meta["wl"], data.y).best_estimator_

    def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
        probs = _softmax_probs(td, model, model.decision_function(split.meta["wl"]))
        return probs.argmax(1), probs
    return predict


BASELINES.register("wl_kernel_svm")(Baseline(_graphs, _wl, "Weisfeiler-Lehman subtree kernel (3 rounds) + SVM"))


def _late_fusion(make_classifier, make_regressor) -> Callable[[TaskData, SplitData], Predictor]:
    def fit(td: TaskData, data: SplitData) -> Predictor:
        members = [_tabular(make_classifier, make_regressor, (m,))(td, data) for m in td.task.modalities]

        def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray | None]:
            outs = [member(split) for member in members]
            if td.task.is_classification:
                probs = np.mean([p for _, p in outs], axis=0)
                return probs.argmax(1), probs
            return np.mean([p for p, _ in outs], axis=0), None
        return predict

    return fit


def _multimodal(td: TaskData) -> bool:
    return len(td.task.modalities) > 1


BASELINES.register("late_fusion_hgb")(Baseline(_multimodal, _late_fusion(_hgb_classifier, _hgb_regressor),
                                               "late fusion: HistGradientBoosting per modality, outputs averaged"))
BASELINES.register("late_fusion_linear")(Baseline(_multimodal, _late_fusion(_linear_classifier, _linear_regressor),
                                                  "late fusion: a linear model per modality, outputs averaged"))


def _panel(td: TaskData, data: SplitData, m: str) -> np.ndarray:
    """``(N, channels, length)`` for sktime: the sequence with padding zeroed."""
    x = data.inputs[m].reshape(len(data), data.inputs[m].shape[1], -1).astype(np.float64)
    mask = data.masks.get(m)
    if mask is not None:
        x = x * mask.reshape(len(data), -1)[:, : x.shape[1], None]
    return np.ascontiguousarray(x.transpose(0, 2, 1))


def _sequences(td: TaskData) -> bool:
    return all(td.specs[m].kind in SEQUENCE_KINDS and len(td.specs[m].shape) == 2
               and (td.specs[m].max_len or td.specs[m].shape[0] or 0) >= 9 for m in td.task.modalities)


def _minirocket(td: TaskData, data: SplitData) -> Predictor:
    """MiniRocket (Dempster et al. 2021) per modality, features concatenated, then ridge (the paper's
    classifier: RidgeClassifierCV over log-spaced alphas on standardised features)."""
    from sktime.transformations.panel.rocket import MiniRocketMultivariate

    rockets = {}
    for m in td.task.modalities:
        panel = _panel(td, data, m)
        rockets[m] = MiniRocketMultivariate(random_state=0).fit(panel)

    def transform(split: SplitData) -> np.ndarray:
        return np.concatenate([np.asarray(rockets[m].transform(_panel(td, split, m))) for m in td.task.modalities],
                              axis=1)

    x = transform(data)
    if td.task.is_classification:
        model = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=ALPHAS)).fit(x, data.y)

        def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
            probs = _softmax_probs(td, model, model.decision_function(transform(split)))
            return probs.argmax(1), probs
    else:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(x, data.y)

        def predict(split: SplitData) -> tuple[np.ndarray, None]:
            return model.predict(transform(split)).reshape(split.y.shape), None
    return predict


BASELINES.register("minirocket")(Baseline(_sequences, _minirocket, "MiniRocket features (sktime) + ridge"))


def _texts(td: TaskData) -> bool:
    return td.task.is_classification and all("text" in d.meta for d in td.splits.values())


def _tfidf(td: TaskData, data: SplitData) -> Predictor:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    vectorizer = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))
    x = vectorizer.fit_transform(data.meta["text"])
    model = LogisticRegression(C=4.0, max_iter=4000).fit(x, data.y)

    def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
        probs = _probs_for(td, model, vectorizer.transform(split.meta["text"]))
        return probs.argmax(1), probs
    return predict


BASELINES.register("tfidf_logreg")(Baseline(_texts, _tfidf,
                                            "TF-IDF word 1-2-grams + char 2-5-grams, logistic regression"))


def _forecasting(td: TaskData) -> bool:
    return td.task.forecast is not None


def _naive(td: TaskData, data: SplitData) -> Predictor:
    return lambda split: (naive_forecast(td.task, split.inputs, split.y.shape[1]), None)


def _seasonal_naive(td: TaskData, data: SplitData, period: int = 24) -> Predictor:
    """The value one period back from each target step (hourly data: the same hour yesterday)."""
    modality, channel = td.task.forecast

    def predict(split: SplitData) -> tuple[np.ndarray, None]:
        history = split.inputs[modality][:, :, channel]
        steps = np.arange(split.y.shape[1])
        back = history.shape[1] - period + (steps % period)
        return history[:, back], None
    return predict


def _ridge_residual(td: TaskData, data: SplitData) -> Predictor:
    """Ridge on the flattened window predicting each step's change from the last value."""
    modality = td.task.forecast[0]

    def x_of(split: SplitData) -> np.ndarray:
        return split.inputs[modality].reshape(len(split), -1)

    def last(split: SplitData) -> np.ndarray:
        return naive_forecast(td.task, split.inputs, split.y.shape[1])

    model = RidgeCV(alphas=ALPHAS).fit(x_of(data), data.y - last(data))
    return lambda split: (last(split) + model.predict(x_of(split)), None)


BASELINES.register("naive_last")(Baseline(_forecasting, _naive, "naive forecast: the last observed value"))
BASELINES.register("seasonal_naive")(Baseline(_forecasting, _seasonal_naive,
                                              "seasonal-naive forecast: the value one day (24 steps) back"))
BASELINES.register("ridge_residual")(Baseline(_forecasting, _ridge_residual,
                                              "ridge on the window predicting the residual to the last value"))


def _patch_channels(d: int) -> int | None:
    """Channels of a square patch token of ``d`` values: the smallest of 1, 3, 4 that leaves a square
    (None when none does)."""
    return next((c for c in (1, 3, 4) if d % c == 0 and math.isqrt(d // c) ** 2 == d // c), None)


def _gray(x: np.ndarray) -> np.ndarray:
    """Patch tokens ``(N, gh, gw, p·p·c)`` → grey images ``(N, gh·p, gw·p)`` (``c`` from ``_patch_channels``)."""
    n, gh, gw, d = x.shape
    c = _patch_channels(d)
    p = math.isqrt(d // c)
    img = x.reshape(n, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, gh * p, gw * p, c)
    return img.mean(-1)


def _images(td: TaskData, modalities: tuple[str, ...]) -> bool:
    """Every one of ``modalities`` is a grid of square patch tokens that ``_gray`` can read."""
    return all(td.specs[m].kind in IMAGE_KINDS and len(td.specs[m].shape) == 3
               and _patch_channels(td.specs[m].channels) is not None for m in modalities)


def _aligned_pair(td: TaskData) -> bool:
    mods = td.task.modalities
    return td.task.is_classification and td.task.out_dim == 2 and len(mods) == 2 and _images(td, mods)


def _unit_rows(img: np.ndarray) -> np.ndarray:
    """Images ``(N, H, W)`` → flattened, centred rows of unit norm (dot product = Pearson correlation)."""
    x = img.reshape(len(img), -1)
    x = x - x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def gradient_magnitudes(img: np.ndarray) -> np.ndarray:
    """Grey images ``(N, H, W)`` → their Sobel gradient magnitudes as ``_unit_rows``, so that a dot
    product of two rows is the Pearson correlation of their magnitudes."""
    return _unit_rows(gradient_magnitude(img))


def gradient_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the Pearson correlation of two images' Sobel gradient magnitudes."""
    return (gradient_magnitudes(a) * gradient_magnitudes(b)).sum(1)


def image_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the Pearson correlation of two grey images themselves."""
    return (_unit_rows(a) * _unit_rows(b)).sum(1)


Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _thresholded(similarity: Similarity) -> Callable[[TaskData, SplitData], Predictor]:
    """A fit: class 1 when ``similarity`` of the two grey images passes the threshold that is most
    accurate on ``data`` (its labels say whether higher scores mean class 1)."""

    def fit(td: TaskData, data: SplitData) -> Predictor:
        first, second = td.task.modalities

        def score(split: SplitData) -> np.ndarray:
            return similarity(_gray(split.inputs[first]), _gray(split.inputs[second]))

        s = score(data)
        sign = 1.0 if np.corrcoef(s, data.y)[0, 1] >= 0 else -1.0
        candidates = np.sort(sign * s)
        accuracy = [((sign * s > t) == data.y.astype(bool)).mean() for t in candidates]
        threshold = candidates[int(np.argmax(accuracy))]

        def predict(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
            z = sign * score(split) - threshold
            p1 = 1.0 / (1.0 + np.exp(-10.0 * z))
            return (z > 0).astype(np.int64), np.stack([1 - p1, p1], 1)
        return predict
    return fit


BASELINES.register("gradient_correlation")(Baseline(
    _aligned_pair, _thresholded(gradient_correlation),
    "correlation of the two images' Sobel gradient magnitudes, thresholded"))
BASELINES.register("image_correlation")(Baseline(
    _aligned_pair, _thresholded(image_correlation),
    "correlation of the two images themselves, thresholded (on gradient views: the gradient correlation)"))


def simple_retrieval(td: TaskData, query: str, gallery: str, keep_target: int | None = None) -> dict[str, dict]:
    """The yardstick beside a model's cross-modal retrieval on ``td``'s test pairs. Two aligned
    images: ranked by the correlation of their Sobel gradient magnitudes, and of the images themselves
    (the same on a gradient view; nothing learned). Other pairs: CCA (16 components) fit on the
    training pairs' ``features`` (a linear map per modality)."""
    from sklearn.cross_decomposition import CCA

    test, train = (paired_rows(td.splits[s], keep_target) for s in ("test", "train"))
    if _images(td, (query, gallery)):
        found = {}
        for space, embed in (("gradient_correlation", gradient_magnitudes), ("image_correlation", _unit_rows)):
            q, g = (embed(_gray(test.inputs[m])) for m in (query, gallery))
            found[space] = {"forward": scores(ranks(q, g)), "backward": scores(ranks(g, q))}
        return found
    qt, gt = (StandardScaler().fit(features(td, train, (m,))) for m in (query, gallery))
    q, g = qt.transform(features(td, test, (query,))), gt.transform(features(td, test, (gallery,)))
    train_q, train_g = qt.transform(features(td, train, (query,))), gt.transform(features(td, train, (gallery,)))
    cca = CCA(n_components=min(16, q.shape[1], g.shape[1], len(train) - 1), max_iter=1000).fit(train_q, train_g)
    q, g = cca.transform(q, g)
    return {"cca_features": {"forward": scores(ranks(q, g)), "backward": scores(ranks(g, q))}}


def primary_value(td: TaskData, split: SplitData, pred: np.ndarray, probs: np.ndarray | None) -> float:
    return compute_metrics(td.task, split.y, pred, probs)[metric_names(td.task)[0]]


def strongest_simple(td: TaskData, names: list[str] | None = None, log=None) -> dict:
    """Fit every applicable baseline on train, choose the best on validation, refit it on train +
    validation and score it on test. Returns the test ``metrics``, ``chance``, ``skill``, ``pred`` /
    ``probs``, the winner's validation scores from its train-only fit (``val_probs``, ``val_y``: what
    a threshold is chosen on), the winner (``model``), each candidate's validation and test value of the primary metric
    (test from its train-only fit, for the record: it chooses nothing), and seconds."""
    t0 = time.perf_counter()
    train, val, test = (td.splits[s] for s in ("train", "val", "test"))
    higher = METRICS.get(metric_names(td.task)[0])[1]
    candidates, val_probs = {}, {}
    for name in (names or list(BASELINES)):
        if not BASELINES.get(name).applies(td):
            continue
        t1 = time.perf_counter()
        predict = BASELINES.get(name).fit(td, train)
        val_pred, val_probs[name] = predict(val)
        candidates[name] = {"val": primary_value(td, val, val_pred, val_probs[name]),
                            "test": primary_value(td, test, *predict(test)), "seconds": time.perf_counter() - t1}
        if log:
            log(f"  {td.task.name}: {name} validation {candidates[name]['val']:.4f} "
                f"({candidates[name]['seconds']:.1f} s)")
    best = max(candidates, key=lambda n: candidates[n]["val"] if higher else -candidates[n]["val"])
    pred, probs = BASELINES.get(best).fit(td, join(train, val))(test)
    values = compute_metrics(td.task, test.y, pred, probs)
    chance = chance_metrics(td.task, train.y, test.y, test.inputs)
    return {"model": best, "what": BASELINES.get(best).what, "metrics": values, "chance": chance,
            "skill": skill(td.task, values, chance), "pred": pred, "probs": probs, "y": test.y,
            "val_probs": val_probs[best], "val_y": val.y, "candidates": candidates,
            "seconds": time.perf_counter() - t0}


def against_simple(suite, results: dict[str, dict], seed: int = 0, log=None) -> dict[str, dict]:
    """A trained model's test results (``evaluate_suite(..., predictions=True)``) beside the strongest
    simple baseline of each task on the same test rows: the winner's name and value, both 95%
    intervals, and the paired bootstrap difference model − baseline (positive: the model is better)."""
    from highmodal.experiments.stats import interval, paired

    out = {}
    for td in suite:
        t, r = td.task, results.get(td.task.name)
        if r is None:
            continue
        simple = strongest_simple(td, log=log)
        primary = metric_names(t)[0]
        out[t.name] = {
            "metric": primary, "model": r["metrics"][primary], "simple_best": simple["metrics"][primary],
            "simple_best_model": simple["model"], "simple_best_what": simple["what"],
            "ci": {"model": list(interval(t, r["y"], r["pred"], r["probs"], seed)),
                   "simple_best": list(interval(t, simple["y"], simple["pred"], simple["probs"], seed))},
            "model_vs_simple": paired(t, r["y"], (r["pred"], r["probs"]), (simple["pred"], simple["probs"]), seed),
            "candidates": {k: v["val"] for k, v in simple["candidates"].items()},
        }
    return out


def format_against_simple(rows: dict[str, dict]) -> str:
    """Plain-text table of ``against_simple``: model and baseline with intervals, the paired verdict."""
    table = [("task", "metric", "model [95% CI]", "simple best [95% CI]", "model - simple [95% CI]", "verdict")]
    for name, r in rows.items():
        d = r["model_vs_simple"]
        table.append((name, r["metric"], f"{r['model']:.4f} [{r['ci']['model'][0]:.3f}, {r['ci']['model'][1]:.3f}]",
                      f"{r['simple_best']:.4f} [{r['ci']['simple_best'][0]:.3f}, {r['ci']['simple_best'][1]:.3f}]"
                      f" {r['simple_best_model']}",
                      f"{d['difference']:+.4f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]", d["verdict"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["against the strongest simple baseline (chosen on validation, refit on train + validation; "
             "paired bootstrap on the test rows)"]
    for k, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
