"""Task balancing: how per-task losses are weighted into one training objective.

OmniVec2 (§3.2.1) adjusts "the loss magnitude for each task based on its convergence rate", i.e.
Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019), which we take as its default; equal
weighting and homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) are the
usual alternatives. Every balancer keeps each task's configured ``weight`` as a factor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from highmodal.registry import Registry

BALANCERS: Registry[type] = Registry("balance")


class Balancer(nn.Module):
    """``combine(task, loss)`` → weighted loss term; ``end_epoch`` sees the epoch's mean losses.
    ``state()`` / ``load_state()`` round-trip through a checkpoint's JSON progress record."""

    def __init__(self, weights: dict[str, float], temperature: float = 2.0) -> None:
        super().__init__()
        self.base = dict(weights)

    def combine(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.base[task] * loss

    def end_epoch(self, losses: dict[str, float]) -> None:
        return None

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        return None

    def weights(self) -> dict[str, float]:
        return dict(self.base)


@BALANCERS.register("equal")
class Equal(Balancer):
    """Each task's configured weight (1 by default), fixed."""


@BALANCERS.register("dwa")
class DynamicWeightAverage(Balancer):
    """w_k = K · softmax_k(r_k / T), r_k = L_k(e−1) / L_k(e−2): a task whose loss fell least over the
    last epoch gets more weight. Weights are 1 for the first two epochs (no rate yet), as in DWA."""

    def __init__(self, weights: dict[str, float], temperature: float = 2.0) -> None:
        super().__init__(weights, temperature)
        self.temperature = temperature
        self.history: list[dict[str, float]] = []
        self.current = {n: 1.0 for n in weights}

    def combine(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.base[task] * self.current[task] * loss

    def end_epoch(self, losses: dict[str, float]) -> None:
        self.history = [*self.history[-1:], dict(losses)]
        if len(self.history) < 2:
            return
        prev, last = self.history

        def rate(n: str) -> float:
            """1 when a rate is undefined: a task not drawn in an epoch (tiny few-shot data) has no loss."""
            a, b = last.get(n, math.nan), prev.get(n, math.nan)
            return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else 1.0

        rates = {n: rate(n) for n in self.current}
        top = max(rates.values()) / self.temperature  # a stable softmax: a huge rate must not overflow
        exp = {n: math.exp(r / self.temperature - top) for n, r in rates.items()}
        total = sum(exp.values())
        self.current = {n: len(exp) * e / total for n, e in exp.items()}

    def state(self) -> dict:
        return {"history": self.history, "current": self.current}

    def load_state(self, state: dict) -> None:
        self.history = state.get("history", [])
        self.current = state.get("current", self.current)

    def weights(self) -> dict[str, float]:
        return {n: self.base[n] * w for n, w in self.current.items()}


@BALANCERS.register("uncertainty")
class Uncertainty(Balancer):
    """Learned log-variances s_k: ½·exp(−s_k)·L_k + ½·s_k (LibMTL's form for every task type)."""

    def __init__(self, weights: dict[str, float], temperature: float = 2.0) -> None:
        super().__init__(weights, temperature)
        self.log_var = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in weights})

    def combine(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_var[task]
        return self.base[task] * (0.5 * torch.exp(-s) * loss + 0.5 * s)

    def state(self) -> dict:
        return {"log_var": {n: float(p.detach()) for n, p in self.log_var.items()}}

    def load_state(self, state: dict) -> None:
        with torch.no_grad():
            for n, v in state.get("log_var", {}).items():
                self.log_var[n].fill_(v)

    def weights(self) -> dict[str, float]:
        return {n: self.base[n] * 0.5 * math.exp(-float(p.detach())) for n, p in self.log_var.items()}


def create_balancer(name: str, weights: dict[str, float], temperature: float) -> Balancer:
    """``weights``: each loss key's configured weight (a task's ``weight``)."""
    return BALANCERS.get(name)(weights, temperature)
