"""Throughput on shared cores: the speed workload alone and beside K busy processes, per thread policy.

Each measurement runs in a fresh Python process, since OpenMP reads its wait policy once, when
torch loads. A policy is a set of environment variables: ``torch`` is torch's own default (OpenMP
threads spin while they wait), ``highmodal`` the library's default (a short spin before sleeping,
``highmodal/runtime.py``), ``passive`` never spins (``OMP_WAIT_POLICY=PASSIVE``) and ``spin:N`` spins
N times before sleeping (``GOMP_SPINCOUNT``). The busy neighbours are single-threaded Python loops,
as a second experiment or a browser tab would be. The report gives each policy's samples/s alone
and contended, and the contended share of the quiet rate (the fair share is 1 / (K + 1) of the
cores' time when K ≥ the cores, more when cores are idle).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

POLICIES: dict[str, dict[str, str | None]] = {
    "torch": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "HIGHMODAL_WAIT_POLICY": "openmp"},
    "highmodal": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "HIGHMODAL_WAIT_POLICY": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None, "HIGHMODAL_WAIT_POLICY": None},
}


def policy_env(name: str) -> dict[str, str | None]:
    """A named policy, or ``spin:N``: OpenMP's default policy with GNU OpenMP spinning N times before
    it sleeps (``GOMP_SPINCOUNT``; its default is 300,000)."""
    from highmodal.errors import HighmodalError

    if name in POLICIES:
        return POLICIES[name]
    if name.startswith("spin:") and name[5:].isdigit():
        return {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": name[5:], "HIGHMODAL_WAIT_POLICY": "openmp"}
    raise HighmodalError(f"--policies: unknown {name!r}; known: {', '.join(POLICIES)}, spin:N")


BUSY = "while True: pass"


@dataclass(frozen=True)
class ContentionSettings:
    model: str = "highmmt"
    workload: str | None = None
    batch: int = 32
    steps: int = 10
    repeats: int = 3
    threads: int | None = None
    contend: int = 1
    policies: tuple[str, ...] = ("torch", "highmodal")
    seed: int = 0


def child(settings: dict) -> dict:
    """Inside a fresh process: train and inference samples/s of our model (median of the repeats)."""
    import statistics

    import torch

    from highmodal.bench.speed import Settings, _rate, make_runner, synthetic_batches

    s = ContentionSettings(**settings)
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    workload, device = Settings(model=s.model, workload=s.workload, batch=s.batch).check()
    batches, targets = synthetic_batches(workload, s.batch, device, s.seed)
    runner = make_runner("highmodal", workload, device, seed=s.seed)
    for _ in range(2):
        runner.train_step(batches, targets)
        runner.infer_step(batches)
    samples = s.batch * len(workload.tasks)
    train = [_rate(lambda: runner.train_step(batches, targets), s.steps, samples, device) for _ in range(s.repeats)]
    infer = [_rate(lambda: runner.infer_step(batches), s.steps, samples, device) for _ in range(s.repeats)]
    return {"train": statistics.median(train), "infer": statistics.median(infer), "threads": torch.get_num_threads()}


def _measure(settings: ContentionSettings, policy: str, busy: int) -> dict:
    env = dict(os.environ)
    for key, value in policy_env(policy).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    neighbours = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0)
        code = ("import json, sys; from highmodal.bench.contention import child; "
                "print(json.dumps(child(json.loads(sys.argv[1]))))")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(settings))], env=env,
                              capture_output=True, text=True, check=False)
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"contention child failed ({policy}, {busy} busy):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_contention(log=print, **options) -> dict:
    """Per policy: samples/s alone and beside ``contend`` busy processes, and contended / alone."""
    from highmodal.errors import HighmodalError
    from highmodal.runtime import available_cpus

    settings = ContentionSettings(**options)
    for policy in settings.policies:
        policy_env(policy)
    if settings.contend < 1:
        raise HighmodalError(f"--contend must be at least 1, got {settings.contend}")
    rows = []
    for policy in settings.policies:
        alone = _measure(settings, policy, 0)
        shared = _measure(settings, policy, settings.contend)
        row = {"policy": policy, "env": policy_env(policy), "threads": alone["threads"],
               "alone": {k: alone[k] for k in ("train", "infer")},
               "contended": {k: shared[k] for k in ("train", "infer")},
               "share": {k: shared[k] / alone[k] for k in ("train", "infer")}}
        log(json.dumps(row))
        rows.append(row)
    return {"settings": asdict(settings), "cpus": available_cpus(), "rows": rows}
