"""Sampling, low-rank completion and clustering of heterogeneity matrices."""

import numpy as np
import pytest

from highmodal.heterogeneity.clustering import distance, groups
from highmodal.heterogeneity.completion import complete, holdout_error, sample_entries


def structured(m: int, seed: int = 0) -> np.ndarray:
    """Source and target effects plus one interaction factor: a rank-3 transfer matrix."""
    rng = np.random.default_rng(seed)
    t = 0.2 + rng.normal(size=m)[:, None] + rng.normal(size=m)[None] + np.outer(rng.normal(size=m), rng.normal(size=m))
    np.fill_diagonal(t, 0.0)
    return t


@pytest.mark.parametrize("m,budget", [(5, 15), (12, 36), (4, 100)])
def test_sample_covers_every_row_and_column(m, budget):
    e = sample_entries(m, budget, np.random.default_rng(0))
    assert len(e) == min(budget, m * (m - 1)) and len({tuple(x) for x in e}) == len(e)
    assert (e[:, 0] != e[:, 1]).all()
    assert set(e[:, 0]) == set(range(m)) and set(e[:, 1]) == set(range(m))


def test_completion_recovers_a_low_rank_matrix_from_half_its_entries():
    t = structured(16)
    rng = np.random.default_rng(1)
    known = rng.random(t.shape) < 0.5
    np.fill_diagonal(known, True)
    mean = np.sqrt(np.mean((t[known & ~np.eye(16, dtype=bool)].mean() - t)[~known] ** 2))
    for reg, bound in ((0.1, 0.1), (None, 0.3)):  # fixed light ridge; ridge chosen by cross-validation
        filled = complete(t, known, rank=3, reg=reg)
        assert np.array_equal(filled[known], t[known])
        assert np.sqrt(np.mean((filled - t)[~known] ** 2)) < bound * mean


def test_holdout_error_prefers_completion_on_structured_and_not_on_noise():
    m = 12
    measured = np.ones((m, m), dtype=bool)
    good = holdout_error(structured(m), measured, 0.25, 3, np.random.default_rng(0))
    assert good["rmse_completion"] < 0.5 * good["rmse_mean_predictor"]
    noise = np.random.default_rng(3).normal(size=(m, m))
    np.fill_diagonal(noise, 0)
    bad = holdout_error(noise, measured, 0.25, 3, np.random.default_rng(0))
    assert bad["rmse_completion"] > 0.9 * bad["rmse_mean_predictor"]  # nothing to find: no better than the mean


def test_distance_is_a_symmetric_nonnegative_sum_of_positive_parts():
    t = np.array([[0.0, 0.3, -0.2], [0.1, 0.0, 0.5], [-0.4, 0.2, 0.0]])
    d = distance(t)
    assert np.allclose(d, d.T) and (d >= 0).all() and np.allclose(np.diag(d), 0)
    assert d[0, 1] == pytest.approx(0.4) and d[0, 2] == 0.0 and d[1, 2] == pytest.approx(0.7)


def test_groups_follow_the_distance():
    d = np.array([[0, 0.1, 5, 5], [0.1, 0, 5, 5], [5, 5, 0, 0.2], [5, 5, 0.2, 0]], dtype=float)
    assert groups(d, 2) == [0, 0, 1, 1]
    assert groups(d, 1) == [0, 0, 0, 0] and groups(d, 4) == [0, 1, 2, 3]
