"""OmniVec2's pairwise multitask sampler and the task balancers (equal, DWA, uncertainty),
including bit-identical resumption with balancer state."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.experiments.suite import cap_suite
from highmodal.models import create_model
from highmodal.training.balancing import create_balancer
from highmodal.training.batching import TaskTensors
from highmodal.training.resume import checkpoint_dir
from highmodal.training.samplers import PairwiseSampler
from highmodal.training.trainer import Trainer

TASKS = [
    {"name": "digits", "source": "sklearn_digits"},
    {"name": "motions", "source": "basic_motions", "batch_size": 8},
    {"name": "cancer", "source": "breast_cancer"},
]


@pytest.fixture(scope="module")
def suite():
    return build_suite(TASKS, LoadContext(seed=0))


def data_of(suite):
    return {td.task.name: TaskTensors(td.task, td.splits["train"]) for td in suite}


def test_pairwise_steps_pair_two_modalities_with_half_batches(suite):
    data = data_of(suite)
    sizes = {"digits": 32, "motions": 8, "cancer": 32}
    sampler = PairwiseSampler(data, sizes)
    assert len(sampler) == sum(d.num_batches(sizes[n]) for n, d in data.items())
    steps = list(sampler.epoch(np.random.default_rng(0)))
    assert len(steps) == len(sampler)
    paired = 0
    for a, b in steps:
        assert a.modality != b.modality
        assert a.modality in suite[a.task].task.modalities and b.modality in suite[b.task].task.modalities
        half = min(sizes[a.task], sizes[b.task]) // 2
        assert len(a.batch["target"]) == len(b.batch["target"]) == half
        if a.task == b.task == "motions":  # two modalities of one task: the very same rows
            paired += 1
            assert torch.equal(a.batch["target"], b.batch["target"])
            assert torch.equal(a.batch["accelerometer"], b.batch["accelerometer"])
    assert paired > 0
    again = list(sampler.epoch(np.random.default_rng(0)))
    assert all(torch.equal(x.batch["target"], y.batch["target"]) for s, t in zip(steps, again, strict=True)
               for x, y in zip(s, t, strict=True))


def test_pairwise_modality_draws_follow_alpha(suite):
    data = data_of(suite)
    sizes = dict.fromkeys(data, 32)
    counts = {}
    for alpha in (0.0, 1.0):
        c = Counter()
        for seed in range(20):
            for step in PairwiseSampler(data, sizes, alpha).epoch(np.random.default_rng(seed)):
                c.update(p.modality for p in step)
        counts[alpha] = c
    assert len(data["digits"]) > 30 * len(data["motions"])
    uniform, proportional = counts[0.0], counts[1.0]
    assert abs(uniform["digit_pixels"] / uniform["accelerometer"] - 1) < 0.15
    assert proportional["digit_pixels"] > 1.5 * uniform["digit_pixels"]
    assert proportional["accelerometer"] < 0.25 * uniform["accelerometer"]


def test_one_modality_trains_single_stream(suite):
    one = {"digits": data_of(suite)["digits"]}
    steps = list(PairwiseSampler(one, {"digits": 32}).epoch(np.random.default_rng(0)))
    assert all(len(s) == 1 and s[0].modality == "digit_pixels" and len(s[0].batch["target"]) == 32 for s in steps)


def test_dwa_weights_follow_the_convergence_rate():
    tasks = dict.fromkeys(("a", "b"), 1.0)
    dwa = create_balancer("dwa", tasks, temperature=2.0)
    dwa.end_epoch({"a": 1.0, "b": 1.0})
    assert dwa.weights() == {"a": 1.0, "b": 1.0}  # no rate after one epoch
    dwa.end_epoch({"a": 0.5, "b": 0.9})
    ea, eb = math.exp(0.5 / 2), math.exp(0.9 / 2)
    w = dwa.weights()
    assert w["a"] == pytest.approx(2 * ea / (ea + eb)) and w["b"] == pytest.approx(2 * eb / (ea + eb))
    assert w["b"] > w["a"]  # b converges more slowly, so it is weighted up
    assert sum(w.values()) == pytest.approx(2)
    loss = torch.tensor(3.0)
    assert float(dwa.combine("b", loss)) == pytest.approx(3 * w["b"])


def test_dwa_survives_undrawn_tasks_and_huge_rates():
    """A task not drawn in an epoch (few-shot data) has a NaN loss; a rate may be enormous."""
    tasks = dict.fromkeys(("a", "b", "c"), 1.0)
    dwa = create_balancer("dwa", tasks, temperature=2.0)
    dwa.end_epoch({"a": math.nan, "b": 1e-300, "c": 0.0})
    dwa.end_epoch({"a": 0.5, "b": 1.0, "c": 0.2})
    w = dwa.weights()
    assert all(math.isfinite(v) for v in w.values()) and sum(w.values()) == pytest.approx(3)
    assert w["a"] == pytest.approx(w["c"]) and w["b"] == pytest.approx(3, rel=1e-6)  # rate 1e300 takes all


def test_uncertainty_weights_are_learned():
    tasks = {"a": 1.0}
    unc = create_balancer("uncertainty", tasks, 2.0)
    term = unc.combine("a", torch.tensor(4.0))
    assert float(term.detach()) == pytest.approx(2.0)  # ½·e⁰·4 + ½·0
    term.backward()
    assert float(unc.log_var["a"].grad) == pytest.approx(-1.5)  # −½·4 + ½


def test_unknown_balance_or_sampler(suite):
    model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny")
    with pytest.raises(HighmodalError, match=r"unknown balance 'dwb'.*dwa"):
        Trainer(model, suite, TrainConfig(balance="dwb"), progress=False)
    with pytest.raises(HighmodalError, match=r"unknown sampler 'pairs'.*pairwise"):
        Trainer(model, suite, TrainConfig(sampler="pairs"), progress=False)


@pytest.mark.parametrize("balance", ["dwa", "uncertainty"])
def test_resume_with_balancer_state_is_bit_identical(suite, tmp_path, balance, monkeypatch):
    # 128 digits rows: 4 + 5 pairwise steps an epoch, so the cut below falls mid-epoch 3 (after DWA's
    # weights have left 1) and the resume starts from a mid-epoch checkpoint, as with the full data
    small = cap_suite(build_suite(TASKS[:2], LoadContext(seed=0)), 128, 64, 0)
    cfg = TrainConfig(epochs=4, checkpoint_every=5, balance=balance, lr=0.003)

    def run(path, stop_at=None, resume=False):
        torch.manual_seed(0)
        model = create_model("omnivec2", small.specs, [td.task for td in small], preset="tiny")
        trainer = Trainer(model, small, cfg, seed=3, run_dir=path, progress=False)
        if stop_at is not None:
            real_step, calls = trainer.step, []

            def step(pieces, where):
                calls.append(where)
                if len(calls) == stop_at:
                    raise KeyboardInterrupt
                return real_step(pieces, where)

            monkeypatch.setattr(trainer, "step", step)
        path.mkdir(exist_ok=True)
        trainer.fit(resume=resume)
        return trainer

    ref = run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", stop_at=len(ref.sampler) * 2 + 7)
    monkeypatch.undo()
    cut = json.loads((checkpoint_dir(tmp_path / "cut") / "progress.json").read_text())
    assert cut["epoch"] == 3 and 0 < cut["step_in_epoch"] < len(ref.sampler)  # resumes mid-epoch 3
    resumed = run(tmp_path / "cut", resume=True)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert ref.balancer.weights() == resumed.balancer.weights()
    last = load_file(str(tmp_path / "ref" / "checkpoints" / "last" / "model.safetensors"))
    assert last.keys() == ref.model.state_dict().keys()


def test_a_joint_task_is_only_ever_paired_with_itself(suite):
    """A joint task's label relates its modalities: fused with another task's stream it would be noise."""
    from dataclasses import replace

    data = {td.task.name: TaskTensors(replace(td.task, joint=td.task.name == "motions"), td.splits["train"])
            for td in suite}
    steps = list(PairwiseSampler(data, {"digits": 32, "motions": 8, "cancer": 32}).epoch(np.random.default_rng(0)))
    joint = [(a, b) for a, b in steps if "motions" in (a.task, b.task)]
    assert joint and len(joint) < len(steps)
    for a, b in joint:
        assert a.task == b.task == "motions" and {a.modality, b.modality} == {"accelerometer", "gyroscope"}
        assert torch.equal(a.batch["accelerometer"], b.batch["accelerometer"])  # the very same rows
