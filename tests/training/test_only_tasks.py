"""Transfer to a new task and few-shot multitask learning (HighMMT Appendix B.7, B.8)."""

import json

import numpy as np
import pytest
import torch
import yaml

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training.trainer import Trainer

TASKS = [{"name": "digits", "source": "sklearn_digits"}, {"name": "cancer", "source": "breast_cancer"}]


def test_shots_keep_k_labelled_samples_per_class():
    full = build_suite(TASKS[:1], LoadContext(seed=0))["digits"]
    few = build_suite([{**TASKS[0], "shots": 5}], LoadContext(seed=0))["digits"]
    assert np.bincount(few.splits["train"].y).tolist() == [5] * 10
    assert len(few.splits["val"]) == len(full.splits["val"]) and len(few.splits["test"]) == len(full.splits["test"])
    again = build_suite([{**TASKS[0], "shots": 5}], LoadContext(seed=0))["digits"]
    assert np.array_equal(again.splits["train"].inputs["digit_pixels"], few.splits["train"].inputs["digit_pixels"])
    with pytest.raises(HighmodalError, match=r"tasks\[0\].shots: expected k >= 1"):
        build_suite([{**TASKS[0], "shots": 0}], LoadContext(seed=0))


def test_only_tasks_trains_those_and_selects_on_them():
    suite = build_suite(TASKS, LoadContext(seed=0))
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = Trainer(model, suite, TrainConfig(epochs=2, only_tasks=["cancer"]), progress=False).fit()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads.digits."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads.cancer."))
    assert set(summary["val"]) == {"cancer"}
    with pytest.raises(HighmodalError, match=r"train.select_on: unknown task 'digit'.*did you mean 'digits'"):
        Trainer(model, suite, TrainConfig(select_on=["digit"]), progress=False)


def test_selecting_on_a_task_that_is_not_trained(tmp_path):
    """Train one task, choose the epoch on another: the log has no training loss for the second."""
    suite = build_suite(TASKS, LoadContext(seed=0))
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    cfg = TrainConfig(epochs=1, only_tasks=["cancer"], select_on=["digits"])
    summary = Trainer(model, suite, cfg, 0, tmp_path, progress=False).fit()
    (record,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert set(record["train_loss"]) == {"cancer"} and "digits" in record["val"]
    assert record["val_score"] == pytest.approx(summary["val"]["digits"]["skill"])


def test_transfer_to_a_held_out_task_through_the_cli(tmp_path, cli):
    """Pre-train on two tasks with the third's modality codes and head defined but untouched, then
    fine-tune on the third from that run."""
    tasks = [*TASKS, {"name": "motions", "source": "basic_motions", "batch_size": 8}]
    base = {"name": "pre", "seed": 0, "tasks": tasks, "model": {"preset": "tiny"}}
    for name, only in (("pre", ["digits", "cancer"]), ("ft", ["motions"])):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**base, "train": {"epochs": 1, "only_tasks": only}}))
    cli("train", "--config", "pre.yaml", "--out", "pre", "--no-progress", cwd=tmp_path, check=True)
    proc = cli("train", "--config", "ft.yaml", "--init", "pre", "--out", "ft", "--no-progress", cwd=tmp_path,
               check=True)
    assert "0 tensors it lacks or never trained start fresh" in proc.stdout
    log = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert set(log[0]["val"]) == {"motions"} and set(log[0]["train_loss"]) == {"motions"}
