"""``train.parallel: fsdp``: data-parallel training with the weights, gradients and optimizer state
sharded over the ``torchrun`` processes (FSDP2, ``torch.distributed.fsdp.fully_shard``), for models
too large to hold once per process (OmniVec2 base on GPUs).

The rows of each batch are split over processes exactly as under ``ddp`` (``distributed.shard``), and
each process weights its loss by its share of the batch's rows, so FSDP is told to sum gradients
rather than average them: N processes then end where one process does at the same batch size. Every
forward gathers the weights from all processes, so all of them must run the same forwards in the same
order; the trainer makes a process with no rows of a step stand in with rank 0's rows at weight 0.

Checkpoints hold full (unsharded) tensors in the single-process layout, so a run saved by one mode
resumes in the other and ``highmodal evaluate`` reads it as any run. Every function here that gathers
is a collective: every process must call it, in the same order.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from highmodal.nn.transformer import Block
from highmodal.training import distributed


def _is_sharded(t: Any) -> bool:
    """Whether ``t`` is a shard (a ``DTensor``). Importing torch's DTensor costs every command about a
    second of start-up, and no tensor can be one before something has imported it."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole: gathered from every process when sharded (a collective), else ``t`` itself."""
    return t.full_tensor() if _is_sharded(t) else t


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of ``t``: its shard, or ``t`` itself when not sharded."""
    return t.to_local() if _is_sharded(t) else t


def shard(model: nn.Module) -> None:
    """Shard ``model`` in place: each transformer block is its own group (its weights gathered only
    while it runs), the root holds the rest. ``step_outputs`` (OmniVec2's fused pairs) is a forward
    too, so the root's weights are gathered for it. Gradients are summed over processes with a plain
    SUM (dividing by 1 would otherwise take ``PREMUL_SUM``, which gloo lacks)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    for block in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(block)
    fully_shard(model)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    register_fsdp_forward_method(model, "step_outputs")


def gather(state: Any) -> Any:
    """A state dict (nested: an optimizer's too) with full tensors on the CPU on rank 0, for writing;
    ``None`` in place of every tensor elsewhere, so only rank 0 holds the copy."""
    if isinstance(state, dict):
        return {k: gather(v) for k, v in state.items()}
    if isinstance(state, list):
        return [gather(v) for v in state]
    if isinstance(state, torch.Tensor):
        whole = full(state)
        return whole.detach().cpu() if distributed.is_main() else None
    return state


def _like(target: torch.Tensor | None, value: Any) -> Any:
    """``value`` (a full tensor, the same in every process) as this process's shard when ``target`` is
    a sharded tensor of its shape; cut locally, since every process read the same file."""
    if not _is_sharded(target) or not torch.is_tensor(value) or _is_sharded(value) or value.shape != target.shape:
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(target.device), target.device_mesh, target.placements, src_data_rank=None)


def load_model(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict`` (strict) from full tensors or the model's own shards."""
    own = model.state_dict()
    model.load_state_dict({k: _like(own.get(k), v) for k, v in state.items()})


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict`` from a full state: each parameter's moments cut like the parameter."""
    params = dict(enumerate(p for group in optimizer.param_groups for p in group["params"]))
    moments = {i: {k: _like(params.get(int(i)), v) for k, v in s.items()} for i, s in state["state"].items()}
    optimizer.load_state_dict({**state, "state": moments})
