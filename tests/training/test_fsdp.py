"""``train.parallel: fsdp``: OmniVec2 sharded over two CPU processes (gloo) with FSDP2 ends where one
process ends at the same global batch, evaluates while sharded, and writes a run directory and a
checkpoint that a plain single process loads (full tensors, the one-process layout)."""

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from test_distributed import (  # tests/training is on the path (no __init__.py)
    TASKS,
    assert_runs_match,
    launch,
    spawn_two,
    train,
)

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training import distributed, fsdp
from highmodal.training.checkpoint import load
from highmodal.training.evaluation import evaluate_suite
from highmodal.training.resume import load_checkpoint
from highmodal.training.trainer import Trainer

# Each process runs grad_accum 2 on its share, the single process whole batches: OmniVec2's pairs of
# the two motion sensors hold 3 rows, so process 1 has none in its second micro-batch and stands in
# with rank 0's at weight 0. Equal up to float rounding, which Adam amplifies in proportion to the low
# learning rate: the measured gap on the weights is 6.5e-6 (2.3e-6 with digits too; ddp's is 3e-6).
TOL = 2e-5


def test_parallel_must_be_ddp_or_fsdp(tmp_path):
    with pytest.raises(HighmodalError, match=r"^train\.parallel: 'zero' is not one of ddp, fsdp$"):
        TrainConfig(parallel="zero")
    cfg = {"name": "x", "tasks": TASKS[:1], "model": {"preset": "tiny"}, "train": {"parallel": "fsdpp"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = launch(["train", "--config", "bad.yaml", "--out", "run", "--no-progress"], tmp_path, 1)
    assert proc.returncode != 0
    assert proc.stderr.strip() == ("error: train.parallel: 'fsdpp' is not one of ddp, fsdp (did you mean 'fsdp'?)")
    assert not (tmp_path / "run").exists()


def test_two_sharded_processes_train_like_one_and_save_full_weights(tmp_path):
    cfg = {"name": "fsdp", "seed": 3, "tasks": TASKS[1:], "model": {"name": "omnivec2", "preset": "tiny"},
           "train": {"threads": 1, "epochs": 1, "lr": 0.0001}}
    sharded = cfg | {"train": cfg["train"] | {"grad_accum": 2, "parallel": "fsdp"}}
    with ThreadPoolExecutor(2) as pool:  # both launches at once: most of their time is start-up
        one, two = pool.map(lambda args: train(tmp_path, *args), [(cfg, "one", 1), (sharded, "two", 2)])

    assert_runs_match(one, two, TOL)  # the validation scores were computed while sharded

    # A plain process reads both the model and the checkpoint (resuming without FSDP would work).
    model = load(two)
    suite = build_suite(TASKS[1:], LoadContext(seed=3))
    results = evaluate_suite(model, suite, "test")
    saved = json.loads((two / "eval_test.json").read_text())
    for task, r in results.items():
        assert r["metrics"] == pytest.approx(saved["tasks"][task]["metrics"]), task
    fresh = create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny")
    trainer = Trainer(fresh, suite, TrainConfig(epochs=1), progress=False)
    load_checkpoint(two, fresh, trainer.optimizer, trainer.scheduler)
    weights = load_file(str(two / "model.safetensors"))
    for name, v in fresh.state_dict().items():
        assert torch.equal(v, weights[name]), name
    saved_state = torch.load(two / "checkpoints" / "last" / "optim.pt", weights_only=True)["optimizer"]["state"]
    assert trainer.optimizer.state_dict()["state"].keys() == saved_state.keys()


def _fit_sharded(rank: int, port: int, out: Path) -> None:
    """One of two processes: an uninterrupted sharded run, one cut short and resumed, then the resumed
    model evaluated while sharded; rank 0 writes the weights and the results."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                   "LOCAL_RANK": str(rank)}
    torch.set_num_threads(1)
    distributed.setup("cpu")
    suite = build_suite(TASKS, LoadContext(seed=0))
    cfg = TrainConfig(epochs=2, checkpoint_every=5, lr=0.001, grad_accum=2, balance="uncertainty", parallel="fsdp")

    def run(path: Path, stop_at: int | None = None, resume: bool = False) -> Trainer:
        torch.manual_seed(0)
        model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny")
        trainer = Trainer(model, suite, cfg, seed=3, run_dir=path, progress=False)
        if stop_at is not None:
            real_step, calls = trainer.step, []

            def step(pieces, where):
                calls.append(where)
                if len(calls) == stop_at:
                    raise KeyboardInterrupt
                return real_step(pieces, where)

            trainer.step = step
        path.mkdir(exist_ok=True)
        with contextlib.suppress(KeyboardInterrupt):  # the cut run: its last checkpoint stays
            trainer.fit(resume=resume)
        return trainer

    ref = run(out / "ref")
    run(out / "cut", stop_at=len(ref.sampler) + 7)
    resumed = run(out / "cut", resume=True)
    weights = {name: fsdp.gather(t.model.state_dict()) for name, t in (("ref", ref), ("resumed", resumed))}
    results = evaluate_suite(resumed.model, suite, "test")
    if rank == 0:
        for name, state in weights.items():
            save_file(state, str(out / f"{name}.safetensors"))
        (out / "results.json").write_text(json.dumps(results))


@pytest.mark.slow
def test_sharded_resume_matches_an_uninterrupted_run_and_evaluates_sharded(tmp_path):
    spawn_two(_fit_sharded, tmp_path, "the sharded processes did not finish")
    ref, resumed = (load_file(str(tmp_path / f"{name}.safetensors")) for name in ("ref", "resumed"))
    assert ref.keys() == resumed.keys()
    for name in ref:
        assert torch.equal(ref[name], resumed[name]), name
    suite = build_suite(TASKS, LoadContext(seed=0))
    model = create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny")
    model.load_state_dict(resumed)
    sharded = json.loads((tmp_path / "results.json").read_text())
    for task, r in evaluate_suite(model, suite, "test").items():
        assert r["metrics"] == pytest.approx(sharded[task]["metrics"], rel=1e-5), task
