"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node N -m highmodal train ...`` runs the same command N times. Every process
draws the same steps (the samplers are seeded identically), keeps its own contiguous share of each
batch's rows (``shard``), and the gradients are summed over processes (``sum_gradients``), so N
processes train on exactly the rows, and towards the update, of one process at the same batch size.
Rank 0 alone touches the file system and decides (``agree``); the others get its result.

Without torchrun (``WORLD_SIZE`` unset or 1) nothing here does anything: one process behaves as if
this module did not exist. A process that fails outside ``agree`` (a bug, a kill) leaves its peers
waiting in the next collective; torchrun then stops them all, and a launch without torchrun's agent
hits the process group's timeout (30 minutes by default) instead of hanging forever.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from highmodal.errors import HighmodalError
from highmodal.training.batching import micro_batches

T = TypeVar("T")


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> str:
    """Join the process group when launched, once per process; return the device this process trains
    on. A CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process, nccl); the CPU uses gloo."""
    if not launched():
        return device
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise HighmodalError(f"train.device: {device!r} cannot train across processes; use cpu (gloo) or cuda (nccl)")
    if kind == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise HighmodalError(f"torchrun: process {local} of this node has no GPU ({torch.cuda.device_count()} "
                                 "visible); start at most one process per GPU")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return device


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes the run directory and reports (True without torchrun)."""
    return rank() == 0


def shard(batch: dict[str, torch.Tensor], of: int | None = None) -> dict[str, torch.Tensor]:
    """This process's (or process ``of``'s) rows of a step's batch: near-equal contiguous parts in rank
    order, the larger first (row-aligned across keys, so paired streams stay paired); a process may
    get none when rows < processes."""
    return batch if world() == 1 else micro_batches(batch, world())[rank() if of is None else of]


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every process (a random draw every process must share)."""
    if world() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(fn: Callable[[], T], everywhere: bool = False) -> T:
    """``fn()`` run on rank 0 only, its result handed to every process. A failure is handed on too,
    and raised everywhere, so processes stop together instead of waiting for a peer that has quit.
    ``everywhere``: every process runs ``fn`` (it holds collectives, as a sharded model's forward
    does) and raises its own failure; rank 0's outcome is the one handed on."""
    if world() == 1:
        return fn()
    result: Any = None
    error: Exception | None = None
    message: str | None = None
    if everywhere or is_main():
        try:
            result = fn()
        except HighmodalError as e:
            error, message = e, str(e)
        except Exception as e:
            error, message = e, f"process 0 failed: {type(e).__name__}: {e}"
    box = [(result, message)]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    result, message = box[0]
    if message is not None:
        raise HighmodalError(message)
    return result


def broadcast_(tensors: list[torch.Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's, so every process starts from the same weights."""
    if world() == 1:
        return
    for t in tensors:
        dist.broadcast(t.data, src=0)


_host: list[dist.ProcessGroup] = []  # the gloo group of ``host_group``, once created


def host_group() -> dist.ProcessGroup | None:
    """The group for values the host holds (nccl takes only device tensors): the default group
    under gloo, else a gloo group over the same processes, created on first use, which every
    process reaches at the same step, as a new group must be."""
    if dist.get_backend() == "gloo":
        return None
    if not _host:
        _host.append(dist.new_group(backend="gloo"))
    return _host[0]


def sum_gradients(params: list[torch.nn.Parameter], extra: torch.Tensor) -> torch.Tensor:
    """Sum ``params``' gradients and the 1-D ``extra`` over processes in one all-reduce; return the
    summed ``extra``. A parameter that no process used keeps ``grad=None`` (AdamW then skips it, as
    in one process); one that only some used gets the sum, with zeros from the others. Which
    parameters were used is host knowledge, summed over a host (gloo) group: reading it back from
    the device would make every step wait for the GPU."""
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(used, group=host_group())
    grads = [p.new_zeros(p.numel()) if p.grad is None else p.grad.reshape(-1) for p in params]
    flat = torch.cat([*(g.float() for g in grads), extra.float()])
    dist.all_reduce(flat)
    *chunks, total = flat.split([p.numel() for p in params] + [extra.numel()])
    for p, chunk, n in zip(params, chunks, used.tolist(), strict=True):
        p.grad = chunk.view_as(p).to(p.dtype) if n > 0 else None
    return total
