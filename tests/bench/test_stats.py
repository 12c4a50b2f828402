"""Seed summaries: sample standard deviation, and the mean without forecasting tasks beside the mean."""

import math

import pytest

from highmodal.bench.stats import sample_std, seed_summary


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
