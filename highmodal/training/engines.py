"""Inference engines: one prediction graph run five ways, each checked against the fp32 reference.

The graph is a module taking positional tensors (``export.TaskAdapter`` for one task, as
``highmodal predict`` and ``export`` use it; the speed benchmark's whole inference step). An engine
prepares it once and returns a function of the same tensors:

* ``eager``: PyTorch in fp32 under ``inference_mode``, the reference every other engine is held to;
* ``bf16``: the same modules under bf16 autocast (matrix products in bfloat16, reductions and
  softmax in fp32, weights cast as they are used); fast only where the CPU has bf16 instructions
  (AVX-512 BF16 / AMX), so on others it reports itself unavailable;
* ``compile``: ``torch.compile`` (inductor), which fuses the small element-wise kernels;
* ``compile-bf16``: both: inductor generates bf16 kernels with the casts fused into them, so the
  narrower matrix products are no longer paid back in separate cast kernels;
* ``onnx``: the graph exported as ``highmodal export --format onnx`` does it and run by ONNX Runtime.

Each engine states a tolerance: the largest absolute difference from the eager outputs it may show,
scaled by ``max(1, max |reference|)`` (probabilities are compared as they are; regression values in
the target's units relative to their size). ``checked`` measures that difference on real inputs
before an engine is used, and refuses one that exceeds it.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.registry import Registry

Run = Callable[..., list[torch.Tensor]]


@dataclass(frozen=True)
class Engine:
    """How to run a graph: ``prepare(module, example, input_names, output_names)`` returns a function
    of the inputs giving the outputs as a list; ``missing(device_type)`` says why it cannot run there
    (None: it can)."""

    name: str
    tolerance: float
    prepare: Callable[[nn.Module, tuple[torch.Tensor, ...], Sequence[str], Sequence[str]], Run]
    missing: Callable[[str], str | None]  # of the device type
    description: str


ENGINES: Registry[Engine] = Registry("inference runtime")


def _as_list(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _eager(module: nn.Module, example: tuple, inputs: Sequence[str], outputs: Sequence[str]) -> Run:
    def run(*xs: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return _as_list(module(*xs))

    return run


def _bf16(module: nn.Module, example: tuple, inputs: Sequence[str], outputs: Sequence[str]) -> Run:
    device = next(module.parameters()).device.type

    def run(*xs: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            return [o.float() for o in _as_list(module(*xs))]

    return run


def _compile(module: nn.Module, example: tuple, inputs: Sequence[str], outputs: Sequence[str]) -> Run:
    compiled = torch.compile(module)
    return _eager(compiled, example, inputs, outputs)


def _compile_bf16(module: nn.Module, example: tuple, inputs: Sequence[str], outputs: Sequence[str]) -> Run:
    return _bf16(torch.compile(module), example, inputs, outputs)


def _onnx(module: nn.Module, example: tuple, inputs: Sequence[str], outputs: Sequence[str]) -> Run:
    from highmodal.training.export import onnx_session

    with tempfile.TemporaryDirectory() as folder:  # the session holds the graph in memory once opened
        run, _ = onnx_session(module, example, Path(folder) / "graph.onnx", inputs, outputs)
    return run


def _bf16_missing(device: str) -> str | None:
    if device == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "this CPU has no bf16 instructions (oneDNN would emulate them, slower than fp32)"
    return None


def _onnx_missing(device: str) -> str | None:
    if device != "cpu":
        return "runs on CPU only here (ONNX Runtime's CPU provider)"
    absent = [p for p in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(p) is None]
    return f"needs {', '.join(absent)} (pip install 'highmodal[export]')" if absent else None


ENGINES.register("eager")(Engine("eager", 0.0, _eager, lambda device: None, "PyTorch fp32, the reference"))
ENGINES.register("bf16")(Engine("bf16", 5e-2, _bf16, _bf16_missing, "PyTorch with bf16 autocast"))
ENGINES.register("compile")(Engine("compile", 1e-4, _compile, lambda device: None,
                                   "torch.compile (inductor), fp32"))
ENGINES.register("compile-bf16")(Engine("compile-bf16", 5e-2, _compile_bf16, _bf16_missing,
                                        "torch.compile (inductor) with bf16 autocast"))
ENGINES.register("onnx")(Engine("onnx", 1e-4, _onnx, _onnx_missing, "ONNX Runtime on the exported graph, fp32"))


def difference(reference: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference over all outputs, scaled by ``max(1, max |reference|)``."""
    worst = 0.0
    for want, got in zip(reference, outputs, strict=True):
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        worst = max(worst, (got.float() - want.float()).abs().max().item() / scale if want.numel() else 0.0)
    return worst


def checked(name: str, module: nn.Module, example: tuple[torch.Tensor, ...], inputs: Sequence[str],
            outputs: Sequence[str]) -> tuple[Run, float]:
    """Engine ``name`` prepared for ``module`` and its scaled difference from eager on ``example``;
    a clear error when the engine cannot run here or exceeds its tolerance."""
    engine = ENGINES.get(name)
    device = next(module.parameters()).device.type
    why = engine.missing(device)
    if why:
        raise HighmodalError(f"--runtime {name}: {why}")
    module.eval()
    run = engine.prepare(module, example, inputs, outputs)
    if name == "eager":
        return run, 0.0
    reference = _eager(module, example, inputs, outputs)(*example)
    diff = difference(reference, run(*example))
    if not diff <= engine.tolerance:
        raise HighmodalError(f"--runtime {name}: its outputs differ from fp32 eager PyTorch by {diff:.3g} "
                             f"(relative), above its tolerance {engine.tolerance:g}; use --runtime eager")
    return run, diff
