"""One training loop for every model: multitask steps from a sampler (HighMMT's staggered schedule,
OmniVec2's modality pairs), task balancing, AdamW + warm-up/cosine, selection of the best epoch by
aggregated validation skill, metrics.jsonl and TensorBoard logging. Under ``torchrun`` the same loop
runs data-parallel in every process (``training/distributed.py``), the model whole in each (``ddp``) or
sharded over them (``fsdp``, ``training/fsdp.py``); rank 0 alone writes and reports."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from highmodal.config import TrainConfig
from highmodal.errors import HighmodalError, did_you_mean
from highmodal.models.base import MultitaskModel, Piece
from highmodal.tasks import TaskSuite
from highmodal.training import distributed, fsdp
from highmodal.training.balancing import create_balancer
from highmodal.training.batching import TaskTensors, micro_batches
from highmodal.training.divergence import FiniteWatch
from highmodal.training.evaluation import aggregate, evaluate_suite
from highmodal.training.memory import GIB, available_bytes, check_step_fits, hint, oom_as_error
from highmodal.training.precision import autocast
from highmodal.training.resume import Progress, load_checkpoint, save_checkpoint, trim_log
from highmodal.training.samplers import create_sampler
from highmodal.training.schedule import warmup_cosine
from highmodal.training.task_stopping import TaskStopping


class Trainer:
    def __init__(
        self, model: MultitaskModel, suite: TaskSuite | None, cfg: TrainConfig, seed: int = 0,
        run_dir: Path | None = None, progress: bool = True, sampler=None,
    ) -> None:
        """``sampler`` (None: the model's multitask sampler over ``suite``'s training splits) brings
        steps from elsewhere, as masked pretraining's (``training/pretrain.py``): it names its loss
        keys in ``weights``, its pieces' kind in ``piece`` and a prefix for messages in ``label``, and
        the run has no validation (the last epoch's weights are kept)."""
        self.model, self.cfg, self.seed = model, cfg, seed
        self.run_dir, self.progress = run_dir, progress
        self.main = distributed.is_main()
        self.device = torch.device(cfg.device)
        if sampler is None:
            self._supervised(suite, cfg)
        else:
            self.sampler, self.weights = sampler, dict(sampler.weights)
            self.train_data, self.select, self.val_suite, self.val_data = {}, set(), None, {}
        self.label, piece = getattr(self.sampler, "label", ""), getattr(self.sampler, "piece", "task")
        self.epochs = cfg.epochs_for(len(self.sampler))
        self.total_steps = self.epochs * len(self.sampler)
        self.balancer = create_balancer(cfg.balance, self.weights, cfg.balance_temperature).to(self.device)
        extra = list(self.balancer.parameters())
        distributed.broadcast_([*model.parameters(), *extra, *model.buffers()])
        self.sharded = cfg.parallel == "fsdp" and distributed.world() > 1
        if self.sharded:  # before the optimizer, which must hold the shards
            fsdp.shard(model)
        if cfg.compile:
            model.compile_step()
        groups = [{"params": list(model.parameters())}]
        if extra:
            groups.append({"params": extra, "weight_decay": 0.0})
        # Fused: one kernel for the whole update instead of a loop of small ones (not for sharded DTensors).
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                                           fused=not self.sharded or None)
        # The parameters whose gradients the trainer sums over processes itself: all under ddp, only
        # the balancer's under fsdp (FSDP reduces the model's in backward).
        self.summed = extra if self.sharded else [p for g in groups for p in g["params"]]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, cfg.warmup_frac, cfg.min_lr_ratio)
        )
        self.watch = FiniteWatch(self.device, piece=piece)
        self.stopping = TaskStopping(getattr(model, "heads", None), list(self.weights), cfg.task_patience,
                                     cfg.task_epochs, cfg.task_reentry, cfg.task_hold)
        if self.stopping.enabled and self.sharded:
            raise HighmodalError("train.task_patience / train.task_epochs: not supported with train.parallel: "
                                 "fsdp (heads are restored from full weights); use ddp")

    def _supervised(self, suite: TaskSuite, cfg: TrainConfig) -> None:
        """Steps from the model's multitask sampler over the suite's training splits; validation on
        the trained tasks (or ``select_on``)."""
        names = [td.task.name for td in suite]
        for key in ("only_tasks", "select_on"):
            for n in getattr(cfg, key) or ():
                if n not in names:
                    raise HighmodalError(f"train.{key}: unknown task {n!r}{did_you_mean(n, names)}; "
                                         f"tasks: {', '.join(names)}")
        trained = [td for td in suite if cfg.only_tasks is None or td.task.name in cfg.only_tasks]
        if not trained:
            raise HighmodalError("train.only_tasks: lists no task; name at least one task to train")
        self.select = set(cfg.select_on or [td.task.name for td in trained])
        watched = self.select | {td.task.name for td in trained}
        self.val_suite = TaskSuite([td for td in suite if td.task.name in watched])
        self.train_data = {td.task.name: TaskTensors(td.task, td.splits["train"], self.device) for td in trained}
        self.val_data = {td.task.name: TaskTensors(td.task, td.splits["val"], self.device) for td in self.val_suite}
        self.weights = {n: d.task.weight for n, d in self.train_data.items()}
        batch_sizes = {td.task.name: td.task.batch_size or cfg.batch_size for td in trained}
        self.sampler = create_sampler(cfg.sampler or self.model.default_sampler, self.train_data, batch_sizes,
                                      cfg.pair_alpha)

    def _drop_modalities(self, batch: dict[str, torch.Tensor], modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Modality dropout: hide each modality with probability p, always keeping at least one, so
        the model learns to predict from any subset (the torch RNG drives it, so resumes replay it)."""
        drop = (torch.rand(len(modalities)) < self.cfg.modality_dropout).tolist()
        if all(drop):
            drop[int(torch.randint(len(modalities), ()))] = False
        drop = distributed.from_main(drop)  # every process hides the same inputs
        hidden = {m for m, d in zip(modalities, drop, strict=True) if d}
        return {k: v for k, v in batch.items() if k not in hidden and k.removesuffix("_mask") not in hidden}

    def _drop_tokens(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Token dropout (word dropout for text, Iyyer et al. 2015): every input given with a mask
        loses each real token with probability p, its mask set false and its content zeroed, while
        each row keeps at least one (the torch RNG drives it, so resumes replay it)."""
        out = dict(batch)
        for key, mask in batch.items():
            name = key.removesuffix("_mask")
            if name == key or name not in batch:
                continue
            real = mask.bool().flatten(1)
            keep = real & (torch.rand(real.shape, device=real.device) >= self.cfg.token_dropout)
            first = torch.zeros_like(real).scatter_(1, real.long().argmax(1, keepdim=True), True) & real
            keep = (keep | first & ~keep.any(1, keepdim=True)).view(mask.shape)
            x = batch[name]
            out[key] = keep.to(mask.dtype)
            out[name] = x * keep.reshape(*keep.shape, *([1] * (x.dim() - keep.dim()))).to(x.dtype)
        return out

    def step(self, pieces: list[Piece], where: str = "step") -> list[tuple[str, torch.Tensor]]:
        """One optimizer update; returns each piece's (task, loss). With ``grad_accum`` = K every
        piece's batch is cut into K micro-batches (row-aligned, so paired streams stay paired) and
        each slice of the step is backpropagated before the next, so activations shrink K-fold while
        the gradient stays the full batch's: each micro-batch's balanced loss is weighted by its share
        of the piece's rows (weighting after balancing keeps the uncertainty balancer's loss-free
        term counted once; only BatchNorm heads see different statistics). Under torchrun each
        process first takes its own rows of every piece, and the shares are of the whole batch's
        rows, so the gradients summed over processes are one process's (``_sum_over_processes``).

        Under fsdp every forward and backward gathers or reduces over all processes, so all of them run
        the same micro-batches, in step: a process with no rows where rank 0 (which holds the most) has
        some runs rank 0's at weight 0.

        Non-finite losses and gradients are flagged on the device and read by ``FiniteWatch``
        (``training/divergence.py``), so a step does not wait for the device to finish."""
        for p in pieces:
            if p.modality is None and self.cfg.modality_dropout > 0 and len(self.model.task(p.task).modalities) > 1:
                p.batch = self._drop_modalities(p.batch, self.model.task(p.task).modalities)
            if self.cfg.token_dropout > 0:
                p.batch = self._drop_tokens(p.batch)
        accum = self.cfg.grad_accum
        rows = [len(p.batch["target"]) for p in pieces]
        slices = [micro_batches(distributed.shard(p.batch), accum) for p in pieces]
        lead = [micro_batches(distributed.shard(p.batch, 0), accum) for p in pieces] if self.sharded else slices
        losses: list[torch.Tensor | None] = [None] * len(pieces)
        # Per micro-batch, non-zero where a piece's loss (last column: the balanced sum) is not finite;
        # read later by the watch, so no step waits for the device.
        nonfinite = torch.zeros(accum, len(pieces) + 1, device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with oom_as_error(where, hint(accum)):
            for k in range(accum):
                keep = [i for i, sl in enumerate(lead) if len(sl[k]["target"])]
                if not keep:  # fewer rows than micro-batches
                    break
                shares = [len(slices[i][k]["target"]) / rows[i] for i in keep]
                micro = [dataclasses.replace(pieces[i], batch=slices[i][k] if share else lead[i][k])
                         for i, share in zip(keep, shares, strict=True)]
                with autocast(self.device, self.cfg.amp):  # forward and loss; backward outside, as torch advises
                    parts = list(zip(keep, self.model.step_losses(micro), shares, strict=True))
                    total = sum(self.balancer.combine(pieces[i].task, loss) * share
                                * self.stopping.weight(pieces[i].task) for i, loss, share in parts)
                for i, loss, _ in parts:
                    nonfinite[k, i] = ~torch.isfinite(loss.detach())
                nonfinite[k, -1] = ~torch.isfinite(total.detach())
                total.backward()
                for i, loss, share in parts:
                    part = loss.detach() * share
                    losses[i] = part if losses[i] is None else losses[i] + part
        if distributed.world() > 1:
            losses, nonfinite = self._sum_over_processes(losses, nonfinite)
        for head in self.stopping.held():  # a held task's head stays at its best epoch
            for param in head.parameters():
                param.grad = None
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or math.inf)
        self.watch.add(where, [p.task for p in pieces], nonfinite, fsdp.full(norm))
        self.watch.poll()
        self.optimizer.step()
        self.scheduler.step()
        return [(p.task, loss) for p, loss in zip(pieces, losses, strict=True) if loss is not None]

    def _sum_over_processes(self, losses: list[torch.Tensor | None], nonfinite: torch.Tensor
                            ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sum gradients, per-piece losses and non-finite flags over processes in one all-reduce, so
        every process updates identically, logs the whole batch's loss and stops together.

        An explicit all-reduce rather than ``DistributedDataParallel``: steps run through
        ``model.step_outputs`` (OmniVec2 fuses two pieces in one graph), not the wrapper's
        ``forward`` that arms its gradient hooks; a process may hold no rows of a piece and then
        runs no forward at all; ``grad_accum`` would need ``no_sync``; most steps leave some heads
        unused (``find_unused_parameters`` territory); and the balancer's learnable weights are not
        in the model. Summing once after the last backward handles all of these, and a parameter
        no process used keeps ``grad=None`` exactly as in one process."""
        n = len(losses)
        zero = torch.zeros((), device=self.device)
        extra = torch.cat([torch.stack([zero if v is None else v.float() for v in losses]), nonfinite.flatten()])
        total = distributed.sum_gradients(self.summed, extra)
        return list(total[:n]), total[n:].view_as(nonfinite)

    def check_memory(self) -> int | None:
        """The resource guard: refuse, before the first step, a step that cannot fit in memory."""
        if not self.cfg.memory_guard or not self.train_data:  # steps from elsewhere are not planned
            return None
        budget = (int(self.cfg.memory_budget_gb * GIB) if self.cfg.memory_budget_gb is not None
                  else available_bytes(self.device))
        steps, rows = self.sampler.memory_plan()
        return check_step_fits(self.model, self.optimizer, self.train_data, steps, rows, self.cfg.grad_accum, budget)

    def _save(self, p: Progress, best_state: dict | None) -> None:
        """Checkpoint the training state: every process joins (gathering a sharded model's full
        tensors), rank 0 writes. Every pending step is checked first: no diverged weights are saved."""
        self.watch.drain()
        weights, optimizer = fsdp.gather(self.model.state_dict()), fsdp.gather(self.optimizer.state_dict())
        best = None if best_state is None else fsdp.gather(best_state)
        if self.main:
            save_checkpoint(self.run_dir, weights, optimizer, self.scheduler, p, best, self.stopping.flat_heads())

    def _validate(self, p: Progress, record: dict) -> dict:
        """Score the epoch on the validation splits into ``record``; a better score than any before
        becomes the best epoch (NaN never wins, but epoch 1 always counts). Returns the results."""
        with oom_as_error(f"validation after epoch {p.epoch}", "lower train.eval_batch_size"):
            val = distributed.agree(lambda: evaluate_suite(
                self.model, self.val_suite, "val", self.cfg.eval_batch_size, tensors=self.val_data),
                everywhere=self.sharded)
        score = aggregate({n: r for n, r in val.items() if n in self.select})
        if p.best_epoch < 1 or score > p.best_score:
            p.best_score, p.best_epoch, p.best_val = score, p.epoch, val
        record |= {"val_score": score, "val": {n: r["metrics"] for n, r in val.items()}}
        return val

    def fit(self, resume: bool = False) -> dict:
        """Train for ``cfg.epochs_for(steps per epoch)`` epochs (or until per-task early stopping has stopped
        every task); leave the model holding the best validation epoch's weights.

        With a run directory, the full training state is checkpointed atomically at every epoch end
        and every ``cfg.checkpoint_every`` steps; ``resume=True`` continues from the last checkpoint
        and ends bit-identical to an uninterrupted run (same batches, RNG streams and optimizer state).
        """
        rng = np.random.default_rng(self.seed)
        p = Progress(epoch_rng=rng.bit_generator.state)
        best_state = None
        if resume and self.run_dir is not None:
            p, best_state, heads = load_checkpoint(self.run_dir, self.model, self.optimizer, self.scheduler)
            self.balancer.load_state(p.balance)
            if p.tasks:
                self.stopping.load_state(p.tasks, heads)
            if self.main:
                trim_log(self.run_dir / "metrics.jsonl", p.epoch)
        distributed.agree(self.check_memory, everywhere=self.sharded)
        writer = log = None
        if self.run_dir is not None and self.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            log = (self.run_dir / "metrics.jsonl").open("a")
        bar = tqdm(total=self.total_steps, initial=p.step, disable=not (self.progress and self.main), desc="train",
                   unit="step", leave=False)
        try:
            while p.epoch <= self.epochs and self.stopping.active():
                t0 = time.perf_counter()
                self.model.train()
                for head in self.stopping.held():
                    head.eval()
                rng.bit_generator.state = p.epoch_rng
                seen = dict.fromkeys(self.weights, 0)
                active = self.stopping.active() if self.stopping.enabled else None  # at full weight
                drawn = None if active is None else self.stopping.sampled()
                for i, pieces in enumerate(self.sampler.epoch(rng, drawn)):
                    for piece in pieces:
                        seen[piece.task] += 1
                    if i < p.step_in_epoch:  # already trained before the interruption: replay the draw only
                        continue
                    where = f"{self.label}epoch {p.epoch}, step {p.step + 1}, batch " + ", ".join(
                        f"{q.task}#{seen[q.task]}" + (f" ({q.modality})" if q.modality not in (None, q.task) else "")
                        for q in pieces)
                    if pieces:
                        losses = self.step(pieces, where)
                    else:  # every task of this step has stopped: only the learning-rate schedule moves on
                        self.scheduler.step()
                        losses = []
                    for n, loss in losses:
                        p.sums[n] = p.sums.get(n, 0.0) + loss
                        p.counts[n] = p.counts.get(n, 0) + 1
                    p.step += 1
                    p.step_in_epoch = i + 1
                    bar.update()
                    every = self.cfg.checkpoint_every
                    if self.run_dir is not None and every and p.step % every == 0 and i + 1 < len(self.sampler):
                        p.balance = self.balancer.state()
                        self._save(p, best_state)
                self.watch.drain()
                train_loss = {n: float(p.sums[n]) / p.counts[n] if p.counts.get(n) else math.nan
                              for n in self.weights}
                weights = self.balancer.weights()  # the weights this epoch trained with
                self.balancer.end_epoch(train_loss)
                self.model.eval()
                record = {"epoch": p.epoch, "step": p.step, "lr": self.scheduler.get_last_lr()[0],
                          "train_loss": train_loss, "loss_weights": weights}
                if self.val_suite:
                    val = self._validate(p, record)
                    if p.best_epoch == p.epoch:
                        best_state = copy.deepcopy(self.model.state_dict())
                else:  # nothing to select on: the last epoch is the model
                    p.best_epoch = p.epoch
                record["seconds"] = time.perf_counter() - t0
                if self.stopping.enabled:
                    record["trained"] = sorted(active)
                    if self.cfg.task_hold:
                        record["held"] = sorted(set(self.train_data) - active)
                    record["task_events"] = self.stopping.end_epoch(p.epoch, {n: r["skill"] for n, r in val.items()})
                    p.tasks = self.stopping.state()
                bar.set_postfix(epoch=p.epoch, **({"val": f"{record['val_score']:.3f}"} if self.val_suite else {}))
                p.epoch, p.step_in_epoch, p.sums, p.counts = p.epoch + 1, 0, {}, {}
                p.epoch_rng, p.balance = rng.bit_generator.state, self.balancer.state()
                if self.run_dir is not None:
                    self._save(p, best_state)
                if writer is not None and log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    writer.add_scalar("lr", record["lr"], p.step)
                    for n, loss in train_loss.items():
                        writer.add_scalar(f"train_loss/{n}", loss, p.step)
                    if self.val_suite:
                        writer.add_scalar("val/score", record["val_score"], p.step)
                        for n, r in val.items():
                            for metric, value in r["metrics"].items():
                                writer.add_scalar(f"val/{n}/{metric}", value, p.step)
        finally:
            bar.close()
            if writer is not None and log is not None:
                writer.close()
                log.close()
        if best_state is not None:
            fsdp.load_model(self.model, best_state)
        self.model.eval()
        out = {"epochs": self.epochs, "best_epoch": p.best_epoch, "best_val_score": p.best_score, "val": p.best_val}
        return out | ({"tasks": self.stopping.state()} if self.stopping.enabled else {})
