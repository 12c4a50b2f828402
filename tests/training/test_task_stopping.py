"""Per-task early stopping: tasks leave the loss sum on patience or budget with their best head, rejoin
when the shared layers' drift costs them skill, and a run that uses it resumes bit-identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.experiments.suite import cap_suite
from highmodal.models import create_model
from highmodal.training.batching import TaskTensors
from highmodal.training.resume import checkpoint_dir
from highmodal.training.samplers import PairwiseSampler, StaggeredSampler
from highmodal.training.task_stopping import TaskStopping
from highmodal.training.trainer import Trainer

TASKS = [
    {"name": "digits", "source": "sklearn_digits"},
    {"name": "motions", "source": "basic_motions", "batch_size": 8},
    {"name": "cancer", "source": "breast_cancer"},
]


@pytest.fixture(scope="module")
def small():
    return cap_suite(build_suite(TASKS, LoadContext(seed=0)), 96, 64, 0)


def heads() -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict({n: torch.nn.Linear(2, 2) for n in ("a", "b")})


def test_patience_stops_a_task_with_its_best_head_and_drift_brings_it_back():
    h = heads()
    stop = TaskStopping(h, ["a", "b"], patience=2, budgets=None, reentry=0.05)
    assert stop.end_epoch(1, {"a": 0.50, "b": 0.30}) == []
    best_a = {k: v.clone() for k, v in h["a"].state_dict().items()}
    with torch.no_grad():
        h["a"].weight.add_(1.0)  # training moves the head on after its best epoch
    stop.end_epoch(2, {"a": 0.48, "b": 0.40})
    assert stop.active() == {"a", "b"}
    events = stop.end_epoch(3, {"a": 0.49, "b": 0.45})
    assert stop.active() == {"b"} and events and "a: stops" in events[0] and "epoch 1" in events[0]
    for k, v in h["a"].state_dict().items():
        assert torch.equal(v, best_a[k]), k
    stop.end_epoch(4, {"a": 0.47, "b": 0.46})  # 0.03 below its best: within the re-entry margin
    assert stop.active() == {"b"}
    events = stop.end_epoch(5, {"a": 0.44, "b": 0.47})
    assert stop.active() == {"a", "b"} and "a: rejoins" in events[0]
    assert stop.status["a"].waited == 0 and stop.status["a"].epochs == 3


def test_budgets_stop_for_good_and_unknown_tasks_are_named():
    stop = TaskStopping(heads(), ["a", "b"], patience=None, budgets={"a": 2}, reentry=0.0)
    stop.end_epoch(1, {"a": 0.5, "b": 0.5})
    stop.end_epoch(2, {"a": 0.6, "b": 0.5})
    assert stop.active() == {"b"}
    stop.end_epoch(3, {"a": 0.1, "b": 0.5})  # a budgeted task never rejoins
    assert stop.active() == {"b"}
    with pytest.raises(HighmodalError, match=r"task_epochs: unknown or untrained task.*zz"):
        TaskStopping(heads(), ["a"], patience=None, budgets={"zz": 1}, reentry=0.0)
    with pytest.raises(HighmodalError, match=r"train\.task_patience"):
        TrainConfig(task_patience=0)


def test_a_model_with_one_head_for_all_tasks_stops_tasks_without_restoring(small):
    model = create_model("omnivec2", small.specs, [td.task for td in small], preset="tiny", head="unified")
    trainer = Trainer(model, small, TrainConfig(epochs=2, task_epochs={"cancer": 1}), seed=0, progress=False)
    out = trainer.fit()
    assert out["tasks"]["cancer"]["stopped"] and trainer.stopping.best_heads == {}


def test_disabled_stopping_changes_nothing():
    stop = TaskStopping(heads(), ["a", "b"], patience=None, budgets=None, reentry=0.02)
    assert not stop.enabled and stop.end_epoch(1, {"a": 0.1, "b": 0.1}) == [] and stop.active() == {"a", "b"}


@pytest.mark.parametrize("sampler", [StaggeredSampler, PairwiseSampler])
def test_samplers_leave_out_stopped_tasks_and_keep_the_epoch_length(small, sampler):
    data = {td.task.name: TaskTensors(td.task, td.splits["train"]) for td in small}
    s = sampler(data, dict.fromkeys(data, 16))
    every = list(s.epoch(np.random.default_rng(0)))
    same = list(s.epoch(np.random.default_rng(0), set(data)))
    assert [[p.task for p in x] for x in every] == [[p.task for p in x] for x in same]
    some = list(s.epoch(np.random.default_rng(0), {"digits"}))
    assert len(some) == len(every) == len(s)
    assert {p.task for step in some for p in step} == {"digits"}
    assert all(step == [] for step in s.epoch(np.random.default_rng(0), set()))


def _fit(small, cfg, path=None, resume=False, seed=1, **options):
    torch.manual_seed(0)
    model = create_model("highmmt", small.specs, [td.task for td in small], preset="tiny", **options)
    trainer = Trainer(model, small, cfg, seed=seed, run_dir=path, progress=False)
    if path is not None:
        path.mkdir(exist_ok=True)
    return trainer, trainer.fit(resume=resume)


def test_a_budgeted_task_stops_training_and_its_head_stays_put(small, tmp_path):
    cfg = TrainConfig(epochs=3, task_epochs={"cancer": 1}, lr=3e-3)
    trainer, out = _fit(small, cfg, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["trained"] == ["cancer", "digits", "motions"] and "cancer: stops" in log[0]["task_events"][0]
    assert [r["trained"] for r in log[1:]] == [["digits", "motions"]] * 2
    assert all(np.isnan(r["train_loss"]["cancer"]) for r in log[1:])  # no step of it after epoch 1
    assert trainer.scheduler.last_epoch == 3 * len(trainer.sampler)  # the schedule stays tied to epochs
    assert out["tasks"]["cancer"]["stopped"] and out["tasks"]["cancer"]["epochs"] == 1
    best = trainer.stopping.best_heads["cancer"]
    # whichever epoch was best overall, cancer's head is its epoch-1 head
    for k, v in trainer.model.heads["cancer"].state_dict().items():
        assert torch.equal(v, best[k]), k


def test_training_ends_when_every_task_has_stopped(small):
    cfg = TrainConfig(epochs=5, task_epochs={"digits": 1, "motions": 2, "cancer": 1})
    trainer, out = _fit(small, cfg)
    assert all(s["stopped"] for s in out["tasks"].values())
    assert trainer.scheduler.last_epoch == 2 * len(trainer.sampler)


def test_resume_with_stopped_tasks_is_bit_identical(small, tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=4, task_patience=1, task_reentry=0.0, task_epochs={"cancer": 1}, lr=3e-3)
    ref, ref_out = _fit(small, cfg, tmp_path / "ref")

    calls = []
    real = Trainer.step

    def step(self, pieces, where):  # interrupted at the third step of epoch 2, after "cancer" stopped
        calls.append(where)
        if sum(w.startswith("epoch 2,") for w in calls) == 3:
            raise KeyboardInterrupt
        return real(self, pieces, where)

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        _fit(small, TrainConfig(**{**cfg.__dict__, "checkpoint_every": 1}), tmp_path / "cut")
    monkeypatch.undo()
    progress = json.loads((checkpoint_dir(tmp_path / "cut") / "progress.json").read_text())
    assert progress["tasks"]["cancer"]["stopped"]
    resumed, out = _fit(small, TrainConfig(**{**cfg.__dict__, "checkpoint_every": 1}), tmp_path / "cut", resume=True)
    assert out["tasks"] == ref_out["tasks"]
    assert ref.stopping.best_heads.keys() == resumed.stopping.best_heads.keys()
    for task, params in ref.stopping.best_heads.items():  # the snapshots came back from the checkpoint
        for k, v in params.items():
            assert torch.equal(v, resumed.stopping.best_heads[task][k]), (task, k)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize("head_norm", ["layernorm", "batchnorm"])
def test_hold_keeps_a_stopped_task_in_the_loss_at_its_weight_with_its_head_frozen(small, tmp_path, monkeypatch,
                                                                                   head_norm):
    stop = TaskStopping(heads(), ["a", "b"], patience=None, budgets={"a": 1}, reentry=0.0, hold=0.25)
    stop.end_epoch(1, {"a": 0.5, "b": 0.5})
    assert stop.active() == {"b"} and stop.sampled() == {"a", "b"}
    assert (stop.weight("a"), stop.weight("b")) == (0.25, 1.0)
    assert stop.held() == [stop.heads["a"]]
    with pytest.raises(HighmodalError, match=r"train\.task_hold"):
        TrainConfig(task_hold=1.5)

    held_steps = []
    real = Trainer.step

    def step(self, pieces, where):  # after every update: a held head is still its best epoch's
        out = real(self, pieces, where)
        if self.stopping.status["cancer"].stopped:
            best = self.stopping.best_heads["cancer"]
            held_steps.append(all(torch.equal(v, best[k]) for k, v in self.model.heads["cancer"].state_dict().items()))
        return out

    monkeypatch.setattr(Trainer, "step", step)
    cfg = TrainConfig(epochs=3, task_epochs={"cancer": 1}, task_hold=0.5, lr=3e-3)
    _fit(small, cfg, tmp_path, head_norm=head_norm)  # a BatchNorm head's statistics stay too
    assert held_steps and all(held_steps)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["trained"] for r in log[1:]] == [["digits", "motions"]] * 2
    assert [r["held"] for r in log[1:]] == [["cancer"]] * 2
    assert all(np.isfinite(r["train_loss"]["cancer"]) for r in log[1:])  # still drawn and in the loss sum
