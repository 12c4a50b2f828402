"""Gradient accumulation gives the full batch's update with less memory; the resource guard refuses
a step that cannot fit with a hint, and an allocator failure becomes the same clear error."""

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.models import create_model
from highmodal.models.base import Piece
from highmodal.training.batching import micro_batches
from highmodal.training.memory import OutOfMemory, check_step_fits, measure_costs
from highmodal.training.trainer import Trainer

TASKS = [{"name": "digits", "source": "sklearn_digits"}, {"name": "cancer", "source": "breast_cancer"}]


@pytest.fixture(scope="module")
def suite():
    return build_suite(TASKS, LoadContext(seed=0))


def trainer(suite, **train) -> Trainer:
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    return Trainer(model, suite, TrainConfig(**train), progress=False)


def step_grads(t: Trainer, rows: int) -> tuple[dict, dict]:
    pieces = [Piece(n, None, d.batch(slice(0, rows))) for n, d in t.train_data.items()]
    losses = dict(t.step(pieces, "test"))
    return losses, {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("accum,rows", [(3, 32), (4, 2)])
def test_grad_accum_gives_the_full_batch_gradient(suite, accum, rows):
    full, split = trainer(suite), trainer(suite, grad_accum=accum)
    split.model.load_state_dict(copy.deepcopy(full.model.state_dict()))
    loss_a, grad_a = step_grads(full, rows)
    loss_b, grad_b = step_grads(split, rows)
    assert grad_a.keys() == grad_b.keys() and grad_a
    for name in grad_a:
        torch.testing.assert_close(grad_b[name], grad_a[name], rtol=1e-4, atol=1e-6, msg=name)
    for task in loss_a:
        torch.testing.assert_close(loss_b[task], loss_a[task], rtol=1e-5, atol=1e-6)


def test_micro_batches_cover_every_row_once():
    batch = {"x": torch.arange(10).view(5, 2), "target": torch.arange(5)}
    parts = micro_batches(batch, 3)
    assert [len(p["target"]) for p in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    assert [len(p["target"]) for p in micro_batches(batch, 7)] == [1, 1, 1, 1, 1, 0, 0]


def test_estimate_grows_with_batch_and_shrinks_with_accumulation(suite):
    t = trainer(suite)
    costs = measure_costs(t.model, t.train_data)
    assert all(c.per_sample > 0 for c in costs.values())

    def need(batch: int, accum: int) -> int:
        return check_step_fits(t.model, t.optimizer, t.train_data, t.sampler.schedule,
                               dict.fromkeys(t.train_data, batch), accum, None)

    assert need(64, 1) > need(16, 1) and need(64, 4) < need(64, 1)
    assert need(64, 4) == need(16, 1)  # four micro-batches of 16 cost what one batch of 16 does


def test_guard_names_task_and_the_accumulation_that_fits(suite):
    t = trainer(suite, batch_size=256)
    need = check_step_fits(t.model, t.optimizer, t.train_data, t.sampler.schedule, t.sampler.batch_sizes, 1, None)
    with pytest.raises(OutOfMemory, match=r"largest task '(digits|cancer)' at micro-batch 256.*set train.grad_accum: "
                                          r"([2-9]|\d\d+) "):
        check_step_fits(t.model, t.optimizer, t.train_data, t.sampler.schedule, t.sampler.batch_sizes, 1,
                        int(need * 0.6))
    with pytest.raises(OutOfMemory, match="even one sample per micro-batch does not fit"):
        check_step_fits(t.model, t.optimizer, t.train_data, t.sampler.schedule, t.sampler.batch_sizes, 1, 1000)


LIMITED = textwrap.dedent("""
    import resource, sys
    from highmodal.cli import main
    main(["train", "--config", "warm.yaml", "--out", "warm", "--no-progress", "--overwrite"])  # load every module first
    status = open("/proc/self/status").read().splitlines()
    used = next(int(x.split()[1]) * 1024 for x in status if x.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + 500 * 2**20, resource.RLIM_INFINITY))
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limits are read from /proc")
def test_real_memory_limit_gives_clear_error_not_a_kill(tmp_path):
    """Under ``ulimit -v``-style limits: the guard refuses a step needing ~0.9 GiB with 0.5 GiB
    left; without the guard the allocator's failure becomes the same kind of error; with the
    suggested accumulation the same batch trains. An existing run is never touched."""
    (tmp_path / "limited.py").write_text(LIMITED)
    (tmp_path / "warm.yaml").write_text(yaml.safe_dump({"name": "w", "tasks": TASKS[:1], "model": {"preset": "tiny"},
                                                        "train": {"epochs": 1}}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("old run")

    def train(**train_cfg):
        big = {"name": "big", "tasks": [{**t, "batch_size": 2000} for t in TASKS], "model": {"preset": "large"},
               "train": {"epochs": 1, **train_cfg}}
        (tmp_path / "big.yaml").write_text(yaml.safe_dump(big))
        return subprocess.run([sys.executable, "limited.py", "train", "--config", "big.yaml", "--out", "run",
                               "--overwrite", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)

    guarded = train()
    assert guarded.returncode == 2, guarded.stderr
    last = guarded.stderr.strip().splitlines()[-1]
    assert "a step needs about" in last and "set train.grad_accum" in last and "Traceback" not in guarded.stderr
    unguarded = train(memory_guard=False)
    assert unguarded.returncode == 2, unguarded.stderr
    assert "out of memory at epoch 1, step 1" in unguarded.stderr and "Traceback" not in unguarded.stderr
    assert (tmp_path / "run" / "keep.txt").read_text() == "old run"
    assert not (tmp_path / ".run.partial").exists()
    accum = int(last.split("set train.grad_accum: ")[1].split()[0])
    fitted = train(grad_accum=accum)
    assert fitted.returncode == 0, fitted.stderr
    assert not (tmp_path / "run" / "keep.txt").exists()
