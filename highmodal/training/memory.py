"""Train-time resource guard: refuse a step that cannot fit with a clear error and a hint, instead
of letting the OS kill the process (CPU) or an allocator error surface mid-run (CUDA).

The estimate is measured, not modelled: one forward pass on one and on two samples of each task
records the bytes autograd saves for backward (``saved_tensors_hooks``); their difference is the
per-sample cost and the rest the fixed cost. Saved activations dominate a step's peak, but backward
also needs transient buffers, so the estimate is scaled by ``BACKWARD_FACTOR``, calibrated on the
demo tasks (docs/usage.md, "Memory and multi-process training").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from highmodal.errors import HighmodalError
from highmodal.models.base import MultitaskModel
from highmodal.training import fsdp
from highmodal.training.batching import TaskTensors

try:
    import resource
except ImportError:  # Windows has no address-space limits to honour
    resource = None

BACKWARD_FACTOR = 1.5
GIB = 1024**3


def size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 2 else f"{max(n, 0) / 2**20:.1f} MiB"


class OutOfMemory(HighmodalError):
    """A training or evaluation step does not fit in the memory available."""


def available_bytes(device: torch.device) -> int | None:
    """Memory a step may still use: free GPU memory, or on Linux the smallest of MemAvailable, the
    cgroup's remaining limit (containers) and the address-space limit (``ulimit -v``) left to this
    process; None where none can be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_AS)[0] if resource is not None else -1
    if soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)):
        try:
            status = Path("/proc/self/status").read_text().splitlines()
            limits.append(soft - next(int(x.split()[1]) * 1024 for x in status if x.startswith("VmSize:")))
        except (OSError, StopIteration):
            pass
    return min(limits) if limits else None


def saved_bytes(model: MultitaskModel, batch: dict[str, torch.Tensor], task: str) -> int:
    """Bytes autograd keeps for backward in one forward pass (parameters and shared storages once).
    A sharded model's weights gathered for the pass count as saved: an over-estimate on the safe side."""
    params = {fsdp.local(p).untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(batch, task)
    return sum(storages.values())


@dataclass
class TaskCost:
    fixed: int
    per_sample: int

    def at(self, n: int) -> int:
        return self.fixed + self.per_sample * n


def measure_costs(model: MultitaskModel, data: dict[str, TaskTensors]) -> dict[str, TaskCost]:
    """Per-task activation cost, measured in eval mode so no running statistic or RNG stream moves."""
    was_training = model.training
    model.eval()
    costs = {}
    try:
        for name, d in data.items():
            one, two = (saved_bytes(model, d.batch(slice(0, n)), name) for n in (1, 2))
            per = max(two - one, 0) if len(d) > 1 else one
            costs[name] = TaskCost(max(one - per, 0), per)
    finally:
        model.train(was_training)
    return costs


def hint(accum: int) -> str:
    """What to change when a step did not fit: a smaller batch or more micro-batches."""
    return (f"lower train.batch_size (or a task's batch_size), or raise train.grad_accum (now {accum}) so each "
            "batch runs as more micro-batches with the same result")


def check_step_fits(
    model: MultitaskModel, optimizer: torch.optim.Optimizer, data: dict[str, TaskTensors],
    schedule: list[tuple[str, ...]], batch_sizes: dict[str, int], accum: int, budget: int | None,
) -> int:
    """Raise ``OutOfMemory`` when the heaviest step of ``schedule`` would exceed ``budget`` bytes,
    naming the smallest ``grad_accum`` that fits; return the estimate. Every task of a step keeps
    its graph until that micro-batch's backward, so a step costs the sum over its tasks at
    micro-batch size ``ceil(batch / grad_accum)``."""
    costs = measure_costs(model, data)
    params = [p for p in model.parameters() if p.requires_grad]
    state = sum(p.numel() * p.element_size() for p in params if p.grad is None)
    if not optimizer.state:
        state += 2 * sum(p.numel() * p.element_size() for p in params)  # Adam's two moments

    def activations(k: int) -> tuple[int, str, int]:
        micro = {n: min(math.ceil(b / k), len(data[n])) for n, b in batch_sizes.items()}
        step = max(schedule, key=lambda s: sum(costs[n].at(micro[n]) for n in s))
        biggest = max(step, key=lambda n: costs[n].at(micro[n]))
        return int(BACKWARD_FACTOR * sum(costs[n].at(micro[n]) for n in step)), biggest, micro[biggest]

    act, biggest, micro = activations(accum)
    need = act + state
    if budget is None or need <= budget:
        return need
    largest = max(batch_sizes.values())
    fits = next((k for k in range(accum + 1, largest + 1) if activations(k)[0] + state <= budget), None)
    advice = (f"set train.grad_accum: {fits} (each batch as {fits} micro-batches, same result) or lower "
              "train.batch_size (or a task's batch_size)" if fits else
              "even one sample per micro-batch does not fit: choose a smaller model preset or free memory")
    raise OutOfMemory(
        f"train: a step needs about {size(need)} ({size(act)} of activations, largest task {biggest!r} at "
        f"micro-batch {micro}; {size(state)} of gradients and optimizer state) but only {size(budget)} is "
        f"available; {advice}"
    )


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


@contextmanager
def oom_as_error(where: str, advice: str) -> Iterator[None]:
    """Turn an allocator failure that the estimate did not foresee into the same clear error."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not _is_oom(e):
            raise
        raise OutOfMemory(f"out of memory at {where}; {advice}") from None
