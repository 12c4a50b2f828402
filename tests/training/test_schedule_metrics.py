"""Staggered multitask schedule, chance levels and the skill aggregate."""

from __future__ import annotations

import numpy as np
import pytest

from highmodal.errors import HighmodalError
from highmodal.metrics import chance_metrics, compute_metrics, metric_names, skill, threshold_accuracy
from highmodal.tasks import Task
from highmodal.training.samplers import staggered_schedule


def test_staggered_schedule_small_example():
    assert staggered_schedule({"A": 3, "B": 2, "C": 1}) == [["A"], ["A", "B"], ["A", "B", "C"]]


def test_staggered_schedule_counts_and_late_joining():
    counts = {"big": 9, "mid": 5, "small": 2, "also_big": 9}
    sched = staggered_schedule(counts)
    assert len(sched) == 9
    for task, n in counts.items():
        steps = [i for i, tasks in enumerate(sched) if task in tasks]
        assert len(steps) == n
        assert steps == list(range(9 - n, 9))  # contiguous, ending at the last step
    assert all(len(set(s)) == len(s) for s in sched)
    assert sched[-1] == list(counts)  # final step: every task, in the given order


def test_staggered_schedule_single_task():
    assert staggered_schedule({"only": 2}) == [["only"], ["only"]]


CLS = Task("c", ("x",), "classification", 3)
BIN = Task("b", ("x",), "classification", 2)
REG = Task("r", ("x",), "regression", 2)


def test_metric_names():
    assert metric_names(CLS) == ["accuracy", "macro_f1"]
    assert metric_names(BIN) == ["accuracy", "macro_f1", "auroc"]
    assert metric_names(REG) == ["mae", "mse"]


def test_chance_classification_uses_training_majority():
    y_train = np.array([2, 2, 2, 0, 1, 2, 0])  # majority class 2
    y = np.array([0, 0, 0, 1, 2, 2, 1, 0])  # majority here is 0, but chance uses train's
    out = chance_metrics(CLS, y_train, y)
    assert out["accuracy"] == pytest.approx(np.mean(y == 2)) == pytest.approx(0.25)
    # macro-F1 of always predicting class 2: class 2 has P=0.25, R=1 → F1=0.4, others 0.
    assert out["macro_f1"] == pytest.approx(0.4 / 3)


def test_chance_binary_auroc_is_half():
    y_train = np.array([1, 1, 0])
    y = np.array([0, 1, 0, 0, 1])
    out = chance_metrics(BIN, y_train, y)
    assert out["accuracy"] == pytest.approx(0.4)
    assert out["auroc"] == pytest.approx(0.5)


def test_chance_regression_uses_training_mean():
    y_train = np.array([[0.0, 10.0], [2.0, 20.0], [4.0, 30.0]])  # mean (2, 20)
    y = np.array([[1.0, 25.0], [5.0, 20.0]])
    out = chance_metrics(REG, y_train, y)
    err = y - np.array([2.0, 20.0])
    assert out["mae"] == pytest.approx(np.abs(err).mean())
    assert out["mse"] == pytest.approx((err**2).mean())


def test_compute_metrics_values():
    y = np.array([0, 1, 1, 0])
    pred = np.array([0, 1, 0, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    out = compute_metrics(BIN, y, pred, probs)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["auroc"] == pytest.approx(1.0)
    single = compute_metrics(BIN, np.array([1, 1]), np.array([1, 0]), probs[:2])
    assert np.isnan(single["auroc"]) and single["accuracy"] == pytest.approx(0.5)


def test_threshold_accuracy_picks_the_cut_on_validation_only():
    y_val, p_val = np.array([0, 0, 1, 1, 0]), np.array([0.1, 0.2, 0.6, 0.7, 0.65])
    cut, acc = threshold_accuracy(y_val, p_val, np.array([0, 1, 1]), np.array([0.3, 0.5, 0.9]))
    assert 0.2 < cut < 0.6  # 4/5 on validation; the lowest of the best cuts
    assert acc == 1.0
    _, acc = threshold_accuracy(y_val, p_val, np.array([0, 1]), np.array([0.62, 0.64]))
    assert acc == 0.5  # a test score above the cut counts as 1 whatever its label: test chooses nothing
    cut, _ = threshold_accuracy(np.array([1, 1]), np.array([0.2, 0.4]), np.array([1]), np.array([0.3]))
    assert cut < 0.2  # every validation row positive: cut below all scores


def test_skill_regression_is_fraction_of_chance_mae_removed():
    values = {"mae": 0.5, "mse": 1.0}
    chance = {"mae": 2.0, "mse": 9.0}
    assert skill(REG, values, chance) == pytest.approx(1 - 0.5 / 2.0)
    assert skill(REG, chance, chance) == pytest.approx(0.0)
    assert skill(REG, {"mae": 4.0}, chance) == pytest.approx(-1.0)
    assert np.isfinite(skill(REG, {"mae": 0.0}, {"mae": 0.0}))


def test_skill_classification_is_accuracy():
    assert skill(CLS, {"accuracy": 0.7, "macro_f1": 0.2}, {"accuracy": 0.5, "macro_f1": 0.1}) == 0.7


def test_aggregate_skips_undefined_task_skill():
    from highmodal.training.evaluation import aggregate

    assert aggregate({"a": {"skill": 0.8}, "b": {"skill": float("nan")}, "c": {"skill": 0.6}}) == pytest.approx(0.7)
    assert np.isnan(aggregate({"a": {"skill": float("nan")}}))


def test_modality_dropout_hides_some_but_never_all():
    import torch

    from highmodal.config import TrainConfig
    from highmodal.training.trainer import Trainer

    trainer = Trainer.__new__(Trainer)  # only the config is needed for the dropout rule
    trainer.cfg = TrainConfig(modality_dropout=0.7)
    torch.manual_seed(0)
    batch = {"a": torch.zeros(2, 3), "a_mask": torch.ones(2, 3, dtype=torch.bool), "b": torch.zeros(2, 4),
             "target": torch.zeros(2)}
    kept = [trainer._drop_modalities(batch, ("a", "b")) for _ in range(300)]
    assert all("target" in k and ({"a", "b"} & set(k)) for k in kept)
    assert any("a" not in k for k in kept) and any("b" not in k for k in kept)
    assert all(("a" in k) == ("a_mask" in k) for k in kept), "a mask travels with its modality"


def test_token_dropout_hides_real_tokens_keeps_one_per_row_and_leaves_unmasked_inputs():
    import torch

    from highmodal.config import TrainConfig
    from highmodal.training.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.cfg = TrainConfig(token_dropout=0.5)
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]] * 500 + [[1, 0, 0, 0, 0, 0]] * 500, dtype=torch.bool)
    words = torch.ones(1000, 6, 3) * mask[..., None]
    image = torch.ones(1000, 4, 4)
    out = trainer._drop_tokens({"words": words, "words_mask": mask, "image": image, "target": torch.zeros(1000)})
    kept = out["words_mask"]
    assert not (kept & ~mask).any(), "a padded slot never becomes real"
    assert kept.any(1).all(), "every row keeps a token"
    assert 0.4 < kept[:500].sum() / (4 * 500) < 0.65  # about half of four real tokens, a few rescued rows
    assert torch.equal(out["words"], words * kept[..., None]), "hidden tokens are zeroed"
    assert torch.equal(out["image"], image) and "image_mask" not in out
    assert torch.equal(out["words_mask"][500:], mask[500:]), "a one-token row keeps its token"
    with pytest.raises(HighmodalError, match=r"train\.token_dropout"):
        TrainConfig(token_dropout=1.0)
