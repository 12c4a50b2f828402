"""Seed summaries: sample standard deviation, and the mean without forecasting tasks beside the mean."""

import math
import warnings

import pytest

from highmodal.experiments.stats import sample_std, seed_summary


def test_seed_summary_reports_the_mean_without_forecasting_tasks():
    skills = [{"a": 80.0, "b": 60.0, "ett": -900.0}, {"a": 82.0, "b": 62.0, "ett": -300.0},
              {"a": 78.0, "b": math.nan, "ett": -600.0}]
    s = seed_summary(skills, {"ett"})
    assert s["scores"][0] == pytest.approx((80 + 60 - 900) / 3)
    assert s["scores_without_forecasting"] == pytest.approx([70.0, 72.0, 78.0])  # an undefined skill is left out
    assert s["mean_without_forecasting"] == pytest.approx(220 / 3)
    assert s["std_without_forecasting"] == pytest.approx(sample_std([70.0, 72.0, 78.0]))
    assert s["forecasting"] == ["ett"] and s["per_seed_skill"] is skills
    assert sample_std([1.0]) == 0.0 and sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("metric, classes", [("auroc", 2), ("macro_f1", 2), ("macro_f1", 5)])
def test_vectorised_bootstrap_equals_scoring_each_resample(metric, classes):
    """The batched AUROC / macro-F1 give scikit-learn's value on every resample: ties in the scores,
    rows drawn twice, classes missing from a resample, and resamples holding a single class."""
    import numpy as np

    from highmodal.experiments import stats
    from highmodal.metrics import METRICS
    from highmodal.tasks import Task

    task = Task("t", ("x",), "classification", classes, metric=metric)
    rng = np.random.default_rng(0)
    n = 9  # small enough that some resamples miss a class or hold only one
    y = rng.integers(0, classes, n)
    probs = rng.dirichlet(np.ones(classes), n).round(1)  # rounding makes ties
    pred = probs.argmax(1)
    got = stats._bootstrap(task, y, [(pred, probs)], seed=3, draws=400)[:, 0]
    fn = METRICS.get(metric)[0]
    expected = []
    for i in stats._resamples(n, 3, 400):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AUROC of a one-class resample: NaN with a warning, or an error
            try:
                expected.append(fn(y[i], pred[i], probs[i]))
            except ValueError:
                expected.append(math.nan)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.isnan(got).any() == (metric == "auroc")
