"""Data-parallel training through the real CLI: ``torchrun --nproc_per_node 2 -m highmodal train`` on
CPU (gloo) ends where one process ends at the same global batch, and only rank 0 writes."""

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file

from highmodal.config import TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.models import create_model
from highmodal.training import distributed
from highmodal.training.resume import TrainingDiverged
from highmodal.training.trainer import Trainer

TASKS = [  # odd batch sizes: the two processes get uneven shares of every batch (8/7, 4/3, 2/1 rows)
    {"name": "digits", "source": "sklearn_digits", "shots": 20, "batch_size": 15},
    {"name": "motions", "source": "basic_motions", "batch_size": 7},
]
# (train settings of both launches, the one-process run's own settings, tolerance on weights). HighMMT with
# learned uncertainty weights and modality dropout: N processes compute exactly what one process computes
# with grad_accum N (the same row partition; a sum of two floats does not depend on order), which
# test_memory.py checks against the full batch. OmniVec2's fused pairs, with grad_accum inside each
# process, against one process on whole batches: equal up to float rounding, which Adam amplifies in
# proportion to the learning rate (hence a low one: the measured gap is 3e-6).
RUNS = {
    "highmmt": ({"epochs": 2, "lr": 0.003, "balance": "uncertainty", "modality_dropout": 0.3}, {"grad_accum": 2}, 0.0),
    "omnivec2": ({"epochs": 1, "lr": 0.0001, "grad_accum": 2}, {"grad_accum": 1}, 1e-5),
}

# Every process started with this folder on PYTHONPATH records what it creates, changes or removes
# under $WATCH (Python's audit events) into $WATCH_LOG/writes-<rank>.json when it exits.
AUDIT = textwrap.dedent("""
    import atexit, json, os, sys

    if os.environ.get("RANK") is not None and os.environ.get("WATCH"):
        watch, seen = os.path.realpath(os.environ["WATCH"]), []
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

        def hook(event, args):
            if event == "open":
                path, mode, flags = args
                writes = set(mode or "") & set("wax+") if mode is not None else flags & write_flags
                if isinstance(path, int) or not writes:
                    return
            elif event not in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
                return
            else:
                path = args[0]
            if isinstance(path, (str, bytes, os.PathLike)):
                real = os.path.realpath(os.fsdecode(path))
                if real == watch or real.startswith(watch + os.sep):
                    seen.append([event, real])

        def dump():
            with open(os.path.join(os.environ["WATCH_LOG"], f"writes-{os.environ['RANK']}.json"), "w") as f:
                json.dump(seen, f)

        atexit.register(dump)
        sys.addaudithook(hook)
""")


def launch(args: list[str], cwd: Path, procs: int, watch: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("HIGHMODAL_DEBUG", None)
    if watch is not None:
        (cwd / "audit").mkdir(exist_ok=True)
        (cwd / "audit" / "sitecustomize.py").write_text(AUDIT)
        env |= {"PYTHONPATH": os.pathsep.join([str(cwd / "audit"), env.get("PYTHONPATH", "")]),
                "WATCH": str(watch), "WATCH_LOG": str(cwd)}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else []
    return subprocess.run([sys.executable, *launcher, "-m", "highmodal", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def train(cwd: Path, config: dict, out: str, procs: int, watch: Path | None = None) -> Path:
    (cwd / f"{out}.yaml").write_text(yaml.safe_dump(config))
    proc = launch(["train", "--config", f"{out}.yaml", "--out", f"{out}/run", "--no-progress"], cwd, procs, watch)
    assert proc.returncode == 0, f"{procs} process(es) failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.count("run directory:") == 1, proc.stdout  # rank 0 alone reports
    return cwd / out / "run"


def assert_runs_match(one: Path, two: Path, tol: float) -> list[list[dict]]:
    """Two run directories hold the same weights (within ``tol``), Adam moments and per-epoch train
    loss and validation score; returns both metrics logs for further checks. The moments keep the
    gradient's scale, which Adam's update hides: a gradient off by a constant factor (each process on
    the whole batch, no weighting by rows, FSDP averaging instead of summing) shows there."""
    a, b = (load_file(str(run / "model.safetensors")) for run in (one, two))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=tol, atol=tol, msg=name)
    moments = [torch.load(run / "checkpoints" / "last" / "optim.pt", weights_only=True)["optimizer"]["state"]
               for run in (one, two)]
    assert moments[0].keys() == moments[1].keys()
    for i in moments[0]:
        torch.testing.assert_close(moments[1][i]["exp_avg"], moments[0][i]["exp_avg"], rtol=1e-4, atol=1e-6)
    logs = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    for r1, r2 in zip(*logs, strict=True):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-5)
        assert r1["val_score"] == pytest.approx(r2["val_score"], rel=1e-5)
    return logs


@pytest.mark.parametrize("model", list(RUNS))
def test_two_processes_train_like_one_and_only_rank_0_writes(tmp_path, model):
    settings, single, tol = RUNS[model]
    cfg = {"name": "ddp", "seed": 3, "tasks": TASKS, "model": {"name": model, "preset": "tiny"},
           "train": {"threads": 1, **settings}}
    one = train(tmp_path, cfg | {"train": cfg["train"] | single}, "one", 1)
    two = train(tmp_path, cfg, "two", 2, watch=tmp_path / "two")

    logs = assert_runs_match(one, two, tol)
    assert [r["epoch"] for r in logs[1]] == list(range(1, settings["epochs"] + 1))
    for r1, r2 in zip(*logs, strict=True):
        assert r1["loss_weights"] == pytest.approx(r2["loss_weights"], rel=1e-4)

    writes = {r: json.loads((tmp_path / f"writes-{r}.json").read_text()) for r in (0, 1)}
    assert writes[0], "the audit hook saw no write of rank 0"
    assert writes[1] == [], f"rank 1 wrote to the run folder: {writes[1][:5]}"
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["run"]


def test_two_processes_pretrain_and_only_rank_0_writes(tmp_path):
    """Masked pretraining runs through the same Trainer under torchrun: both stages, one report, one
    writer. (Each process draws its own masks, so the weights are not those of one process.)"""
    suite = {"name": "s", "seed": 0, "tasks": TASKS,
             "models": [{"label": "ov", "model": {"name": "omnivec2", "preset": "tiny"}}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    pre = {"suite": "suite.yaml", "model": "ov", "threads": 1, "log_every": 3,
           "stage1": {"steps": 6, "batch_size": 9}, "stage2": {"steps": 3, "batch_size": 7}}
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(pre))
    proc = launch(["pretrain", "--config", "pre.yaml", "--out", "two/run", "--no-progress"], tmp_path, 2,
                  watch=tmp_path / "two")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pretrained stage 1 (6 steps") == 1, proc.stdout
    run = tmp_path / "two" / "run"
    assert [json.loads(line)["step"] for line in (run / "stage2" / "metrics.jsonl").read_text().splitlines()] == [3]
    assert json.loads((tmp_path / "writes-1.json").read_text()) == []
    assert json.loads((tmp_path / "writes-0.json").read_text())


def test_processes_fail_together_and_leave_an_existing_run_alone(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "x", "tasks": TASKS[:1], "model": {"preset": "tiny"}}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("old run")
    proc = launch(["train", "--config", "exp.yaml", "--out", "run", "--no-progress"], tmp_path, 2)
    assert proc.returncode != 0
    assert "error: run: already exists; pass --overwrite" in proc.stderr, proc.stderr
    assert (tmp_path / "run" / "keep.txt").read_text() == "old run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "run"]


def spawn_two(fn, out: Path, hang_message: str, timeout: float = 240) -> None:
    """Run ``fn(rank, port, out)`` in two spawned processes on a free local port; fail, killing both,
    if they have not finished after ``timeout`` seconds (a hang is the failure these tests look for)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = mp.spawn(fn, (port, out), nprocs=2, join=False)
    deadline = time.monotonic() + timeout
    while not procs.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in procs.processes:
                proc.kill()
            pytest.fail(hang_message)


def _train_with_one_bad_row(rank: int, port: int, out: Path) -> None:
    """One of two processes: digits with one NaN pixel, a row only one process's share of its batch holds."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                   "LOCAL_RANK": str(rank)}
    torch.set_num_threads(1)
    distributed.setup("cpu")
    suite = build_suite(TASKS[:1], LoadContext(seed=0))
    suite["digits"].splits["train"].inputs["digit_pixels"][3, 2, 2] = float("nan")
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny")
    try:
        Trainer(model, suite, TrainConfig(epochs=1), progress=False).fit()
    except TrainingDiverged as e:
        (out / f"rank{rank}.txt").write_text(str(e))


@pytest.mark.slow
def test_non_finite_loss_in_one_process_stops_both_with_one_message(tmp_path):
    spawn_two(_train_with_one_bad_row, tmp_path, "a process kept waiting for the other after the non-finite loss")
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1]
    assert messages[0].startswith("non-finite loss in task digits at epoch 1, step "), messages[0]


def _sum_partly_used(rank: int, port: int, out: Path, device_backend: bool = False) -> None:
    """One of two processes: rank 0 used parameter a, rank 1 used b, neither used c.
    ``device_backend``: the default group is taken for nccl's (device tensors only), so which
    parameters were used goes through a separate gloo group, as on GPUs."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                   "LOCAL_RANK": str(rank)}
    distributed.setup("cpu")
    if device_backend:
        distributed.dist.get_backend = lambda group=None: "nccl"
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    params[rank].grad = torch.full((3,), rank + 1.0)
    total = distributed.sum_gradients(params, torch.tensor([rank + 1.0]))
    result = {"grads": [None if p.grad is None else p.grad.tolist() for p in params], "extra": total.tolist(),
              "host_group": distributed.host_group() is not None}
    (out / f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.parametrize("device_backend", [False, True])
def test_a_gradient_only_some_processes_have_is_summed_and_an_unused_one_stays_none(tmp_path, device_backend):
    spawn_two(functools.partial(_sum_partly_used, device_backend=device_backend), tmp_path,
              "sum_gradients did not return in both processes")
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == {
            "grads": [[1.0] * 3, [2.0] * 3, None], "extra": [3.0], "host_group": device_backend}
