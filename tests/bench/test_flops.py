"""Model FLOPs as torch counts them (with the CPU attention kernel added), the peak table, and the
measured matmul rate."""

import pytest
import torch
import torch.nn.functional as F

from highmodal.bench import flops


def test_linear_layers_count_two_flops_per_multiply_add():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    assert flops.count_flops(lambda: layer(x)) == 2 * 4 * 16 * 8


def test_cpu_attention_is_counted_forward_and_backward():
    b, h, lq, lk, d = 2, 3, 5, 7, 8
    q = torch.randn(b, h, lq, d, requires_grad=True)
    k, v = torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    forward = 2 * 2 * b * h * lq * lk * d  # q·kᵀ and attention·v
    assert flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == forward
    # torch's formula for every SDPA kernel: the backward recomputes q·kᵀ and computes four gradient
    # products, five in all, as the CUDA kernels' counts have it
    assert flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == 3.5 * forward


@pytest.mark.parametrize(("name", "dtype", "peak"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA H200", "fp32", 66.9),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
])
def test_datasheet_peaks_by_device_name(monkeypatch, name, dtype, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    value, source = flops.datasheet_peak(torch.device("cuda"), dtype)
    assert value == peak and name in source


def test_unknown_peaks_ask_for_the_flag(monkeypatch):
    assert flops.datasheet_peak(torch.device("cpu"), "fp32") == (None, "unknown for cpu: give --peak-tflops")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce GTX 1080")
    value, source = flops.datasheet_peak(torch.device("cuda"), "bf16")
    assert value is None and "--peak-tflops" in source


def test_the_peak_follows_the_step_dtype():
    assert flops.matmul_dtype(torch.device("cpu"), "bf16") == "bf16"
    assert flops.matmul_dtype(torch.device("cpu"), None) == "fp32"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_matmul_rate_is_measured(dtype):
    assert flops.matmul_tflops(torch.device("cpu"), dtype, size=128, repeats=2) > 0
