"""Forecasting heads predict the change from the last observed value (``Task.forecast_residual``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from highmodal.config import TrainConfig
from highmodal.data.loaders import fit_normalization
from highmodal.modalities.spec import ModalitySpec
from highmodal.models import create_model
from highmodal.tasks import SplitData, Task, TaskData, TaskSuite
from highmodal.training.evaluation import evaluate_suite
from highmodal.training.trainer import Trainer

SPEC = ModalitySpec("h", "time_series", (48, 2))


def random_walk_task(residual: bool) -> TaskData:
    """A random walk (plus a noise channel) in 48-step windows, 6 steps ahead: the last value is
    the best forecast there is, and the training mean a very poor one."""
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=4000)).astype(np.float32)
    starts = np.arange(0, 4000 - 54, 3)
    x = np.stack([np.stack([rng.normal(size=48), walk[s:s + 48]], -1) for s in starts]).astype(np.float32)
    y = np.stack([walk[s + 48:s + 54] for s in starts]).astype(np.float32)
    n = len(y)
    cut = {"train": slice(0, n // 2), "val": slice(n // 2, 3 * n // 4), "test": slice(3 * n // 4, n)}
    splits = {s: SplitData({"h": x[c]}, y[c]) for s, c in cut.items()}
    task = Task("walk", ("h",), "regression", 6, metric="mse", forecast=("h", 1), forecast_residual=residual)
    td = fit_normalization(TaskData(task, {"h": SPEC}, splits), {"h": "channel"})
    return td


@pytest.mark.parametrize("model", ["highmmt", "omnivec2"])
def test_the_offset_is_the_last_value_in_target_units(model):
    task = Task("walk", ("h",), "regression", 6, target_mean=(2.0,) * 6, target_std=(4.0,) * 6, forecast=("h", 1))
    torch.manual_seed(0)
    task = dataclasses.replace(task, forecast_instance_norm=False)
    residual = create_model(model, [SPEC], [task], preset="tiny").eval()
    direct = create_model(model, [SPEC], [dataclasses.replace(task, forecast_residual=False)], preset="tiny").eval()
    direct.load_state_dict(residual.state_dict())
    x = torch.randn(5, 48, 2)
    mask = torch.ones(5, 48, dtype=torch.bool)
    mask[0, 40:] = False  # a shorter series: its last real step is 39
    batch = {"h": x, "h_mask": mask}
    diff = residual.predict(batch, "walk")["pred"] - direct.predict(batch, "walk")["pred"]
    last = x[:, -1, 1].clone()
    last[0] = x[0, 39, 1]
    # residual: head·std + last; direct: head·std + mean
    torch.testing.assert_close(diff, (last - 2.0)[:, None].expand(-1, 6), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("model", "residual"), [("highmmt", True), ("omnivec2", True), ("highmmt", False)])
def test_instance_norm_makes_forecasts_follow_the_window_level_and_scale(model, residual):
    """RevIN: the encoder reads each window standardised, so forecasting a·x + b gives a·f(x) + b
    (from the last value, or without ``forecast_residual`` from the window's mean)."""
    task = Task("walk", ("h",), "regression", 6, target_mean=(2.0,) * 6, target_std=(4.0,) * 6, forecast=("h", 1),
                forecast_residual=residual)
    torch.manual_seed(0)
    net = create_model(model, [SPEC], [task], preset="tiny").eval()
    x = torch.randn(5, 48, 2)
    base = net.predict({"h": x}, "walk")["pred"]
    moved = net.predict({"h": 3.0 * x + 7.0}, "walk")["pred"]
    torch.testing.assert_close(moved, 3.0 * base + 7.0, atol=1e-3, rtol=1e-4)


def test_a_residual_forecaster_starts_at_naive_and_beats_the_direct_one():
    scores = {}
    for residual in (True, False):
        td = random_walk_task(residual)
        suite = TaskSuite([td])
        torch.manual_seed(0)
        model = create_model("highmmt", suite.specs, [td.task], preset="tiny")
        Trainer(model, suite, TrainConfig(epochs=2, lr=1e-3), progress=False).fit()
        result = evaluate_suite(model, suite, "test")["walk"]
        scores[residual] = (result["metrics"]["mse"], result["chance"]["mse"])
    (mse, naive), (direct, _) = scores[True], scores[False]
    assert mse < 1.1 * naive, scores  # near the naive forecast from the start (a random walk: nothing to add)
    assert direct > 2 * mse, scores  # the direct head is far from it
