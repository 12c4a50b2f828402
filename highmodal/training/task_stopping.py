"""Per-task early stopping inside one multitask run (``train.task_patience``, ``train.task_epochs``).

One global best epoch under-trains slow tasks and over-trains fast ones: a forecaster that overfits
after a few epochs and a long-video task still improving at the last one share a single checkpoint.
Here a task whose validation skill has not improved for ``patience`` epochs (or whose epoch budget is
spent) leaves the loss sum, and its head goes back to the weights of its best epoch. The shared trunk
goes on learning from the other tasks, so a stopped task is still validated every epoch; when that
drift costs it more than ``reentry`` skill below its best, it rejoins training with fresh patience
(a budgeted task never rejoins). With ``hold`` > 0 a stopped task is not dropped but held: it stays
in the loss sum at weight ``hold`` with its head frozen at its best epoch, so its loss pulls the
shared layers back toward what that head expects (the drift otherwise undoes a restored head within
an epoch: docs/results-analysis.md). The head is the task's own parameters (``model.heads[task]``; a model
with one head for all tasks, like OmniVec2's unified head, has none to restore); the trunk is shared,
and keeping it per task would cost a model per task. Stopped heads get no gradient,
so AdamW leaves them, weight decay included, untouched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from highmodal.errors import HighmodalError


@dataclass
class TaskStatus:
    best: float = -math.inf
    best_epoch: int = 0
    waited: int = 0  # epochs since the best while training
    epochs: int = 0  # epochs this task was trained
    stopped: bool = False


class TaskStopping:
    """Tracks each trained task's best validation skill and decides which tasks the next epoch trains."""

    def __init__(self, heads: torch.nn.ModuleDict | None, tasks: list[str], patience: int | None,
                 budgets: dict[str, int] | None, reentry: float, hold: float = 0.0) -> None:
        unknown = sorted(set(budgets or {}) - set(tasks))
        if unknown:
            raise HighmodalError(f"train.task_epochs: unknown or untrained task(s) {', '.join(unknown)}; "
                                 f"trained tasks: {', '.join(tasks)}")
        self.heads, self.patience, self.budgets, self.reentry = heads, patience, dict(budgets or {}), reentry
        self.hold = hold
        self.status = {n: TaskStatus() for n in tasks}
        self.best_heads: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def enabled(self) -> bool:
        return self.patience is not None or bool(self.budgets)

    def active(self) -> set[str]:
        """The tasks trained at full weight."""
        return {n for n, s in self.status.items() if not s.stopped}

    def sampled(self) -> set[str]:
        """The tasks the next epoch draws batches of: the active ones, and the held ones with ``hold``."""
        return set(self.status) if self.hold > 0 else self.active()

    def weight(self, task: str) -> float:
        """The factor on a task's loss: 1 while it trains, ``hold`` once stopped."""
        return self.hold if self.status[task].stopped else 1.0

    def held(self) -> list[torch.nn.Module]:
        """The held tasks' heads: the trainer keeps them in eval mode (a BatchNorm head's statistics
        stay too) and drops their gradients before each update."""
        if self.heads is None or self.hold == 0:
            return []
        return [self.heads[n] for n, s in self.status.items() if s.stopped]

    def end_epoch(self, epoch: int, skills: dict[str, float]) -> list[str]:
        """Record this epoch's validation skills; stop, restore and re-admit tasks. Returns what changed,
        as lines for the log."""
        if not self.enabled:
            return []
        events = []
        for name, s in self.status.items():
            skill = skills.get(name, math.nan)
            trained = not s.stopped
            s.epochs += trained
            if skill > s.best:  # NaN never improves
                s.best, s.best_epoch, s.waited = skill, epoch, 0
                if self.heads is not None:
                    self.best_heads[name] = {k: v.detach().clone() for k, v in self.heads[name].state_dict().items()}
            elif trained:
                s.waited += 1
            spent = name in self.budgets and s.epochs >= self.budgets[name]
            patience_out = self.patience is not None and s.waited >= self.patience
            if trained and (spent or patience_out):
                s.stopped = True
                if self.heads is not None and name in self.best_heads:
                    self.heads[name].load_state_dict(self.best_heads[name])
                why = "epoch budget spent" if spent else f"no gain for {s.waited} epochs"
                events.append(f"{name}: stops ({why}); head back to epoch {s.best_epoch} (skill {s.best:.4f})")
            elif (not trained and name not in self.budgets and self.reentry is not None
                  and s.best - skill > self.reentry):
                s.stopped, s.waited = False, 0
                events.append(f"{name}: rejoins (skill {skill:.4f}, {s.best - skill:.4f} below its best "
                              f"of epoch {s.best_epoch}, from the shared layers' drift)")
        return events

    def state(self) -> dict:
        return {n: asdict(s) for n, s in self.status.items()}

    def load_state(self, state: dict, heads: dict[str, torch.Tensor]) -> None:
        """Restore from a checkpoint: the statuses and the best heads (flat ``task/param`` keys)."""
        for n, s in state.items():
            self.status[n] = TaskStatus(**s)
        self.best_heads = {}
        for key, value in heads.items():
            task, param = key.split("/", 1)
            self.best_heads.setdefault(task, {})[param] = value

    def flat_heads(self) -> dict[str, torch.Tensor]:
        return {f"{t}/{k}": v for t, params in self.best_heads.items() for k, v in params.items()}
