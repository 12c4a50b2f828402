"""Choosing the number of groups from a parameter budget."""

import pytest

from highmodal.config import from_mapping
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.experiments.heterogeneity import budget_groups
from highmodal.experiments.suite import SuiteConfig
from highmodal.models import create_model

TASKS = [{"name": "digits", "source": "sklearn_digits"}, {"name": "motions", "source": "basic_motions"}]


def test_most_groups_within_the_budget():
    cfg = from_mapping(SuiteConfig, {"name": "b", "tasks": TASKS, "model": {"preset": "tiny"}}, "b")
    suite = build_suite(TASKS, LoadContext(seed=0))
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base, enc = count(model), count(model.encoder)
    sizes = {"unimodal": 3, "crossmodal": 1}
    assert budget_groups(cfg, suite, sizes, base) == {"unimodal": 1, "crossmodal": 1}
    assert budget_groups(cfg, suite, sizes, base + 2 * enc - 1) == {"unimodal": 2, "crossmodal": 1}
    assert budget_groups(cfg, suite, sizes, 10**9) == {"unimodal": 3, "crossmodal": 1}
    with pytest.raises(HighmodalError, match="below the shared model's"):
        budget_groups(cfg, suite, sizes, base - 1)
