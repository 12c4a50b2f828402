"""Model FLOPs and utilisation: what a step computes, and what the device could compute.

Model FLOPs are counted by torch's ``FlopCounterMode`` on one real step: every matmul, convolution
and attention product of the forward pass (and of the backward pass for a train step), as
``2 · m · n · k`` per product. Elementwise work (norms, activations, softmax, the optimiser) is not
counted, nor any recomputation: this is the numerator of *model FLOPs utilisation* (MFU, PaLM,
Chowdhery et al. 2022, appendix B), counted rather than estimated as ``6 · params · tokens``, since
OmniVec2's tokenizers, cross-attention and the second transformer g are not a plain decoder.

MFU divides the achieved rate by the device's dense peak for the step's dtype: a table of datasheet
peaks for the GPUs we know (dense, no sparsity), or ``--peak-tflops``. A CPU's peak depends on its
clock, cores and vector units, which torch does not report, so on CPU MFU is left out unless given;
every run also measures a large matmul on the device in the step's dtype, the best rate the
device's GEMM reaches in practice, and reports the model's rate as a fraction of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

# torch counts the CUDA attention kernels but not the CPU flash kernel SDPA dispatches to; its FLOPs
# are those of any other SDPA kernel (the formulas take query, key, value shapes first; they are
# registered already wrapped to read shapes, hence get_raw).
for _op, _formula in ((aten._scaled_dot_product_flash_attention_for_cpu, flop_counter.sdpa_flop),
                      (aten._scaled_dot_product_flash_attention_for_cpu_backward, flop_counter.sdpa_backward_flop)):
    if _op not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(_op, get_raw=True)(_formula)

# Dense peak TFLOP/s from NVIDIA's datasheets, by a fragment of torch.cuda.get_device_name(); the
# first fragment found in the name wins, so specific names come before general ones.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def count_flops(step: Callable[[], object]) -> int:
    """Model FLOPs of one call of ``step`` (run eagerly: compiled kernels bypass the counter)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_dtype(device: torch.device, amp: str | None) -> str:
    """The peak that applies: the autocast dtype's (named as ``config.AMP`` names it), else fp32, or
    tf32 where CUDA matmuls use it."""
    if amp is not None:
        return amp
    return "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "fp32"


def datasheet_peak(device: torch.device, dtype: str) -> tuple[float | None, str]:
    """The device's dense peak TFLOP/s for ``dtype`` and where it comes from, or None when unknown."""
    if device.type != "cuda":
        return None, f"unknown for {device.type}: give --peak-tflops"
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks[dtype], f"datasheet {dtype} dense peak of {name}"
    return None, f"{name} is not in the table: give --peak-tflops"


def matmul_tflops(device: torch.device, dtype: str, size: int | None = None, repeats: int = 5) -> float:
    """The best rate of ``repeats`` timings of a square ``size``² matmul in ``dtype``: what the
    device's GEMM attains (the best, not the median, as a peak is; a model's own, differently shaped
    matmuls may still beat it a little)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    torch_dtype = {"bf16": torch.bfloat16, "tf32": torch.float32, "fp32": torch.float32}[dtype]
    a, b = (torch.randn(size, size, device=device, dtype=torch_dtype) for _ in range(2))
    calls = 10 if device.type == "cuda" else 1  # GPU matmuls are too short to time one by one

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / calls

    timed()  # warm-up: kernel selection, first-touch of the pages
    return 2 * size**3 / min(timed() for _ in range(repeats)) / 1e12
