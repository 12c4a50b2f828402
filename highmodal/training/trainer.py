"""One training loop for every model: staggered multitask steps, AdamW + warm-up/cosine, selection
of the best epoch by aggregated validation skill, metrics.jsonl and TensorBoard logging."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from highmodal.config import TrainConfig
from highmodal.data.task import TaskSuite
from highmodal.models.base import MultitaskModel
from highmodal.training.batching import TaskTensors
from highmodal.training.evaluation import aggregate, evaluate_suite
from highmodal.training.losses import LOSSES
from highmodal.training.schedule import staggered_schedule


def warmup_cosine(total_steps: int, warmup_frac: float, min_ratio: float):
    warmup = max(int(total_steps * warmup_frac), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class Trainer:
    def __init__(
        self, model: MultitaskModel, suite: TaskSuite, cfg: TrainConfig, seed: int = 0,
        run_dir: Path | None = None, progress: bool = True,
    ) -> None:
        self.model, self.suite, self.cfg, self.seed = model, suite, cfg, seed
        self.run_dir, self.progress = run_dir, progress
        self.device = torch.device(cfg.device)
        self.train_data = {td.task.name: TaskTensors(td.task, td.splits["train"], self.device) for td in suite}
        self.val_data = {td.task.name: TaskTensors(td.task, td.splits["val"], self.device) for td in suite}
        self.batch_sizes = {td.task.name: td.task.batch_size or cfg.batch_size for td in suite}
        self.num_batches = {n: d.num_batches(self.batch_sizes[n]) for n, d in self.train_data.items()}
        self.schedule = staggered_schedule(self.num_batches)
        self.total_steps = cfg.epochs * len(self.schedule)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, cfg.warmup_frac, cfg.min_lr_ratio)
        )

    def _step(self, batches: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        losses = {}
        for name, batch in batches.items():
            task = self.model.task(name)
            out = self.model(batch, name)
            losses[name] = LOSSES.get(task.target)(out, batch["target"])
        total = sum(self.model.task(n).weight * loss for n, loss in losses.items())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {n: loss.detach() for n, loss in losses.items()}

    def fit(self) -> dict:
        """Train for ``cfg.epochs``; leave the model holding the best validation epoch's weights."""
        writer = log = None
        if self.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            log = (self.run_dir / "metrics.jsonl").open("a")
        rng = np.random.default_rng(self.seed)
        best = {"score": -math.inf, "epoch": -1, "state": None, "val": None}
        bar = tqdm(total=self.total_steps, disable=not self.progress, desc="train", unit="step", leave=False)
        step = 0
        try:
            for epoch in range(1, self.cfg.epochs + 1):
                t0 = time.perf_counter()
                self.model.train()
                iters = {n: d.shuffled(self.batch_sizes[n], rng) for n, d in self.train_data.items()}
                sums = {n: torch.zeros((), device=self.device) for n in self.train_data}
                for active in self.schedule:
                    losses = self._step({n: next(iters[n]) for n in active})
                    for n, loss in losses.items():
                        sums[n] += loss
                    step += 1
                    bar.update()
                train_loss = {n: float(sums[n]) / self.num_batches[n] for n in sums}
                self.model.eval()
                val = evaluate_suite(self.model, self.suite, "val", self.cfg.eval_batch_size, tensors=self.val_data)
                score = aggregate(val)
                if best["state"] is None or score > best["score"]:  # NaN never wins, but epoch 1 always counts
                    best = {"score": score, "epoch": epoch, "val": val,
                            "state": copy.deepcopy(self.model.state_dict())}
                record = {
                    "epoch": epoch, "step": step, "lr": self.scheduler.get_last_lr()[0],
                    "train_loss": train_loss, "val_score": score,
                    "val": {n: r["metrics"] for n, r in val.items()}, "seconds": time.perf_counter() - t0,
                }
                bar.set_postfix(epoch=epoch, val=f"{score:.3f}")
                if writer is not None and log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    writer.add_scalar("val/score", score, step)
                    writer.add_scalar("lr", record["lr"], step)
                    for n, r in val.items():
                        writer.add_scalar(f"train_loss/{n}", train_loss[n], step)
                        for metric, value in r["metrics"].items():
                            writer.add_scalar(f"val/{n}/{metric}", value, step)
        finally:
            bar.close()
            if writer is not None and log is not None:
                writer.close()
                log.close()
        self.model.load_state_dict(best["state"])
        self.model.eval()
        return {"best_epoch": best["epoch"], "best_val_score": best["score"], "val": best["val"]}
