"""A whole experiment: config → suite → model → training → run directory → test metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from highmodal.config import ExperimentConfig, from_mapping, read_yaml, to_mapping
from highmodal.data.loaders import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.fileio import atomic_write_text
from highmodal.models.groups import initialise_from
from highmodal.models.registry import create_model
from highmodal.tasks import TaskSuite
from highmodal.training import distributed, fsdp
from highmodal.training.checkpoint import RunDir, load, save_model, untrained_parts
from highmodal.training.evaluation import evaluate_suite
from highmodal.training.trainer import Trainer


def suite_for(cfg: ExperimentConfig, config_dir: Path, data_root: Path | None) -> TaskSuite:
    return build_suite(cfg.tasks, LoadContext(config_dir=config_dir, data_root=data_root, seed=cfg.seed))


def train_experiment(
    cfg: ExperimentConfig, out: Path, config_dir: Path, data_root: Path | None = None,
    overwrite: bool = False, progress: bool = True, log=print, suite: TaskSuite | None = None,
    resume: bool = False, init: Path | None = None,
) -> tuple[Path, dict, dict]:
    """Train and write the run directory; returns it, the saved model's test results, and a summary
    (best epoch, validation skill, train seconds, parameters).

    Test metrics are computed on the model *reloaded from disk*, exactly as ``highmodal evaluate``
    does, so the two always agree. A prebuilt ``suite`` (e.g. subsampled) skips loading. ``init``
    starts from a trained run's weights (a grouped model takes the shared modules into every group).

    Under ``torchrun`` every process trains its share of each batch (``training/distributed.py``);
    rank 0 alone logs, writes the run directory and evaluates; the others return no test results.
    With ``train.parallel: fsdp`` the model is sharded over the processes while it trains; the run
    directory holds its full weights.
    """
    device = distributed.setup(cfg.train.device)
    main = distributed.is_main()
    log = log if main else silent
    run = distributed.agree(lambda: RunDir(out, overwrite, resume))
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        suite = suite if suite is not None else suite_for(cfg, config_dir, data_root)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model.name, suite.specs, [td.task for td in suite],
                             preset=cfg.model.preset, **cfg.model.options).to(device)
        if init is not None and not resume:
            fresh = initialise_from(model, load(init), f"--init {init}", untrained_parts(init))
            log(f"initialised from {init}; {len(fresh)} tensors it lacks or never trained start fresh")
        params = sum(p.numel() for p in model.parameters())
        log(f"{cfg.model.name} ({cfg.model.preset}): {params:,} parameters, {len(suite)} tasks, "
            f"{len(suite.specs)} modalities")
        if not resume and main:
            resolved = to_mapping(cfg)
            resolved["config_dir"] = str(config_dir.resolve())
            atomic_write_text(run.path / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        t0 = time.perf_counter()
        train_cfg = dataclasses.replace(cfg.train, device=device)
        summary = Trainer(model, suite, train_cfg, cfg.seed, run.path, progress).fit(resume=resume)
        weights = fsdp.gather(model.state_dict())  # every process joins when the model is sharded
        summary["train_seconds"] = time.perf_counter() - t0
        summary["params"] = params
        summary["init"] = None if init is None else str(init)
        log(f"trained in {summary['train_seconds']:.1f} s; best epoch {summary['best_epoch']} "
            f"(validation skill {summary['best_val_score']:.4f})")
        if not main:
            return run.final, {}, summary
        save_model(run.path, model, cfg.model.name, cfg.model.preset, state=weights)
        atomic_write_text(run.path / "summary.json", json.dumps(
            {k: v for k, v in summary.items() if k != "val"}, indent=2))
        final = run.commit()
    except BaseException:
        if main and run.abort():
            log(f"the last checkpoint is kept in {run.path}; continue with: highmodal train --resume {out}")
        raise
    results = evaluate_suite(load(final, device), suite, "test", cfg.train.eval_batch_size, device)
    return final, results, summary


def silent(*args, **kwargs) -> None:
    """The log of processes other than rank 0: one process reports for all."""


def reuse_run(exp: ExperimentConfig, run: Path, suite: TaskSuite, log, strict: bool = True
              ) -> tuple[dict, dict] | None:
    """Test results and summary of a finished run of exactly ``exp`` (same tasks, model, training and
    seed; the name, which only names a default output folder, may differ), or None when ``run`` holds no
    finished run. A finished run of other settings is an error, or with ``strict`` off (runs read from
    another folder) a run to train again: None."""
    if not (run / "model.json").is_file() or not (run / "summary.json").is_file():
        return None
    saved = {k: v for k, v in read_yaml(run / "config.yaml").items() if k != "config_dir"}
    # A setting added since, at its default, is the same setting; one since removed stays and differs.
    with contextlib.suppress(HighmodalError):
        saved = to_mapping(from_mapping(ExperimentConfig, saved, str(run / "config.yaml")))
    wanted = to_mapping(exp)
    differ = sorted(k for k in wanted if k != "name" and saved.get(k) != wanted[k])
    if differ and strict:
        raise HighmodalError(f"--reuse: {run} was trained with other settings ({', '.join(differ)} differ); "
                             "train it again without --reuse")
    if differ:
        log(f"not reusing {run}: other settings ({', '.join(differ)} differ); training it again")
        return None
    log(f"reusing {run}")
    results = evaluate_suite(load(run, exp.train.device), suite, "test", exp.train.eval_batch_size, exp.train.device)
    return results, json.loads((run / "summary.json").read_text())


def seed_runs(
    make: Callable[[int], ExperimentConfig], seeds: int, out: Path, config_dir: Path, data_root: Path | None,
    suite: TaskSuite, reuse: bool = False, overwrite: bool = False, progress: bool = True, log=print,
    init: Path | Callable[[int], Path] | None = None,
) -> list[tuple[dict, dict]]:
    """Every study's seed loop: ``make(seed)`` trained into ``out/seed<seed>`` for seeds 0..``seeds``-1
    (with ``reuse``, a finished run of the same settings there is evaluated instead), from ``init``
    (one run, or ``init(seed)``); each run's test results and summary, in seed order."""
    runs = []
    for seed in range(seeds):
        cfg, where = make(seed), out / f"seed{seed}"
        found = reuse_run(cfg, where, suite, log) if reuse else None
        if found is None:
            start = init(seed) if callable(init) else init
            _, results, summary = train_experiment(cfg, where, config_dir, data_root, overwrite or reuse, progress,
                                                   log, suite=suite, init=start)
            found = results, summary
        runs.append(found)
    return runs

