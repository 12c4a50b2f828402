"""The simple-baseline panel: each baseline beats chance where it should, the winner is chosen on
validation only, and the intervals and paired comparisons behave."""

from __future__ import annotations

import numpy as np
import pytest

from highmodal.data import LoadContext, build_suite
from highmodal.data.real.common import patchify
from highmodal.experiments.baselines import BASELINES, gradient_correlation, simple_retrieval, strongest_simple
from highmodal.experiments.stats import interval, paired, wilson
from highmodal.metrics import chance_metrics, compute_metrics, skill
from highmodal.modalities.spec import ModalitySpec
from highmodal.tasks import SplitData, Task, TaskData


@pytest.fixture(scope="module")
def packaged():
    return build_suite([{"name": "digits", "source": "sklearn_digits"}, {"name": "motions", "source": "basic_motions"},
                        {"name": "power", "source": "italy_power_demand"}, {"name": "diabetes", "source": "diabetes"}],
                       LoadContext(seed=0))


def skill_over_chance(td: TaskData, name: str) -> float:
    """Skill of one baseline fit on train, on test (skill is 0 at chance)."""
    test = td.splits["test"]
    values = compute_metrics(td.task, test.y, *BASELINES.get(name).fit(td, td.splits["train"])(test))
    chance = chance_metrics(td.task, td.splits["train"].y, test.y, test.inputs)
    return skill(td.task, values, chance) - skill(td.task, chance, chance)


@pytest.mark.parametrize("task,name,margin", [
    ("digits", "hgb", 0.7), ("digits", "linear", 0.7), ("digits", "svm_rbf", 0.8),
    ("diabetes", "linear", 0.2), ("diabetes", "hgb", 0.1),
    ("motions", "late_fusion_linear", 0.4), ("motions", "late_fusion_hgb", 0.4),
    ("motions", "minirocket", 0.5), ("power", "minirocket", 0.3),
])
def test_baselines_beat_chance_on_package_data(packaged, task, name, margin):
    td = packaged[task]
    assert BASELINES.get(name).applies(td)
    assert skill_over_chance(td, name) > margin


def test_which_baselines_apply(packaged):
    applies = {t: [n for n in BASELINES if BASELINES.get(n).applies(packaged[t])] for t in ("digits", "motions")}
    assert applies["digits"] == ["hgb", "linear", "svm_rbf"]
    assert set(applies["motions"]) == {"hgb", "linear", "svm_rbf", "late_fusion_hgb", "late_fusion_linear",
                                       "minirocket"}


def _task(name: str, inputs: dict, y: np.ndarray, specs: dict, target="classification", out_dim=2, meta=None,
          **task_kw) -> TaskData:
    n = len(y)
    cut = {"train": slice(0, n // 2), "val": slice(n // 2, 3 * n // 4), "test": slice(3 * n // 4, n)}
    splits = {s: SplitData({k: v[c] for k, v in inputs.items()}, y[c], {}, {k: v[c] for k, v in (meta or {}).items()})
              for s, c in cut.items()}
    return TaskData(Task(name, tuple(inputs), target, out_dim, **task_kw), specs, splits)


def test_tfidf_reads_the_sentences():
    rng = np.random.default_rng(0)
    words = [["good", "great", "fine", "lovely"], ["bad", "awful", "dull", "poor"]]
    filler = ["the", "film", "was", "plot", "and", "a", "very"]
    y = rng.integers(0, 2, 400)
    text = np.array([" ".join([*rng.choice(filler, 6).tolist(), rng.choice(words[c])]) for c in y])
    td = _task("t", {"x": np.zeros((400, 3, 1), np.float32)}, y, {"x": ModalitySpec("x", "text", (3, 1))},
               meta={"text": text})
    assert BASELINES.get("tfidf_logreg").applies(td)
    assert skill_over_chance(td, "tfidf_logreg") > 0.4


def _forecast_task() -> TaskData:
    """A daily-seasonal AR(1) series in 48-step windows, 12 steps ahead, the last channel the target."""
    rng = np.random.default_rng(0)
    t = np.arange(6000)
    noise = np.zeros(len(t))
    for i in range(1, len(t)):
        noise[i] = 0.9 * noise[i - 1] + rng.normal(scale=0.3)
    series = np.sin(2 * np.pi * t / 24) + noise
    starts = np.arange(0, len(t) - 60, 5)
    x = np.stack([series[s:s + 48] for s in starts])[..., None].astype(np.float32)
    y = np.stack([series[s + 48:s + 60] for s in starts]).astype(np.float32)
    return _task("f", {"h": x}, y, {"h": ModalitySpec("h", "time_series", (48, 1))}, "regression", 12,
                 metric="mse", forecast=("h", 0))


def test_forecasting_baselines_and_naive_chance():
    td = _forecast_task()
    test = td.splits["test"]
    mse = {n: compute_metrics(td.task, test.y, *BASELINES.get(n).fit(td, td.splits["train"])(test))["mse"]
           for n in ("naive_last", "seasonal_naive", "ridge_residual")}
    naive = chance_metrics(td.task, td.splits["train"].y, test.y, test.inputs)["mse"]
    assert mse["naive_last"] == pytest.approx(naive)
    assert mse["ridge_residual"] < min(mse["naive_last"], mse["seasonal_naive"])
    mean_forecast = chance_metrics(td.task, td.splits["train"].y, test.y)["mse"]  # without inputs: training mean
    assert mean_forecast != pytest.approx(naive)


def test_gradient_correlation_pairs_aligned_images():
    from sklearn.datasets import load_digits

    images = np.kron(load_digits().images[:300], np.ones((4, 4)))  # 32x32
    rng = np.random.default_rng(0)
    n = len(images)
    partner = np.roll(np.arange(n), 1)
    visible = np.concatenate([images, images[partner]])
    thermal = np.concatenate([images, images])
    thermal = 16 - thermal + rng.normal(scale=2.0, size=thermal.shape)  # inverted contrast, noisy
    y = np.repeat([1, 0], n)
    order = rng.permutation(2 * n)
    inputs = {"ir": patchify(thermal[order], 8), "vis": patchify(np.repeat(visible[order, ..., None], 3, -1), 8)}
    specs = {"ir": ModalitySpec("ir", "infrared", (4, 4, 64)), "vis": ModalitySpec("vis", "image", (4, 4, 192))}
    td = _task("pairs", inputs, y[order], specs)
    assert BASELINES.get("gradient_correlation").applies(td)
    assert skill_over_chance(td, "gradient_correlation") > 0.3
    same = gradient_correlation(images[:5], images[:5])
    assert np.allclose(same, 1.0)
    found = simple_retrieval(td, "ir", "vis", keep_target=1)["gradient_correlation"]
    test_pairs = int((td.splits["test"].y == 1).sum())
    assert found["forward"]["pairs"] == test_pairs
    assert found["forward"]["R@1"] > 10 / test_pairs and found["backward"]["R@1"] > 10 / test_pairs


def test_gradient_correlation_of_a_pair_does_not_depend_on_the_other_rows():
    """Each image is filtered on its own: a filter over the stack would smooth across neighbouring rows."""
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 16, 16)), rng.random((6, 16, 16))
    whole = gradient_correlation(a, b)
    alone = [gradient_correlation(a[i:i + 1], b[i:i + 1])[0] for i in range(6)]
    np.testing.assert_allclose(whole, alone, atol=1e-6)
    shuffled = gradient_correlation(a[::-1], b[::-1])[::-1]
    np.testing.assert_allclose(whole, shuffled, atol=1e-6)


def test_simple_retrieval_off_images_is_cca_on_features(packaged):
    td = packaged["motions"]
    found = simple_retrieval(td, "accelerometer", "gyroscope")
    assert set(found) == {"cca_features"}
    forward = found["cca_features"]["forward"]
    assert forward["pairs"] == len(td.splits["test"]) and 0 <= forward["R@1"] <= forward["R@10"] <= 1


def test_the_winner_is_chosen_on_validation_only(packaged):
    td = packaged["motions"]
    result = strongest_simple(td)
    vals = {n: c["val"] for n, c in result["candidates"].items()}
    assert result["model"] == max(vals, key=vals.get)
    shuffled = TaskData(td.task, td.specs, td.splits | {"test": SplitData(
        td.splits["test"].inputs, np.random.default_rng(1).permutation(td.splits["test"].y))})
    again = strongest_simple(shuffled)
    assert again["model"] == result["model"] and np.array_equal(again["pred"], result["pred"])


def test_wilson_and_paired_bootstrap():
    low, high = wilson(80, 100)
    assert (round(low, 3), round(high, 3)) == (0.711, 0.867)
    task = Task("c", ("x",), "classification", 2)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, y, 1 - y)
    poor = np.where(rng.random(300) < 0.6, y, 1 - y)
    assert paired(task, y, (good, None), (poor, None))["verdict"] == "above"
    assert paired(task, y, (poor, None), (good, None))["verdict"] == "below"
    same = paired(task, y, (good, None), (good, None))
    assert same["verdict"] == "tie" and same["difference"] == 0.0
    reg = Task("r", ("x",), "regression", 1, metric="mse")
    target = rng.normal(size=(300, 1))
    close, far = target + rng.normal(scale=0.1, size=(300, 1)), target + rng.normal(scale=1.0, size=(300, 1))
    assert paired(reg, target, (close, None), (far, None))["verdict"] == "above"  # lower error is better
    lo, hi = interval(reg, target, close, None)
    assert lo < float(np.mean((close - target) ** 2)) < hi


def test_wl_features_are_invariant_to_node_order_and_separate_structures():
    from highmodal.data.real.graphs import wl_histogram

    def ring(n):
        adj = np.zeros((n, n))
        adj[np.arange(n), (np.arange(n) + 1) % n] = 1
        return np.maximum(adj, adj.T)

    def path(n):
        adj = ring(n)
        adj[0, n - 1] = adj[n - 1, 0] = 0
        return adj

    labels = np.array([0, 1, 0, 1, 0, 1])
    order = np.array([3, 0, 5, 1, 4, 2])
    assert np.array_equal(wl_histogram(ring(6), labels, 3), wl_histogram(ring(6)[order][:, order], labels[order], 3))
    assert not np.array_equal(wl_histogram(ring(6), labels, 3), wl_histogram(path(6), labels, 3))
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 12, 120)
    y = np.arange(120) % 2
    wl = np.stack([wl_histogram(ring(n) if c else path(n), np.zeros(n, int), 3) for n, c in zip(sizes, y, strict=True)])
    td = _task("g", {"x": np.zeros((120, 2, 1), np.float32)}, y, {"x": ModalitySpec("x", "graph", (2, 1))},
               meta={"wl": wl})
    assert BASELINES.get("wl_kernel_svm").applies(td)
    assert skill_over_chance(td, "wl_kernel_svm") > 0.4
