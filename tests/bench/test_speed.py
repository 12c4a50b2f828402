"""``highmodal bench speed``: the workload as data, both models' sizes against the original's 527,382
parameters, the JSON lines of a tiny run, and clear errors for bad options. No timing assertions:
the speed targets live in the benchmark's output, never in tests."""

import importlib.util
import json
import sys

import pytest
import torch

from highmodal.bench.speed import (
    WORKLOADS,
    Settings,
    build_model,
    count_params,
    cpu_peak,
    get_workload,
    reference_class,
    run_speed,
    synthetic_batches,
)
from highmodal.errors import HighmodalError
from highmodal.modalities.standardize import Standardizer
from highmodal.models.highmmt import resolve_config

needs_reference = pytest.mark.skipif(
    importlib.util.find_spec("perceiver_pytorch") is None,
    reason="the reference needs perceiver-multi-modality-pytorch: "
           "pip install --no-deps 'perceiver-multi-modality-pytorch==1.4.0' einops",
)
TINY = dict(batch=2, steps=1, warmup=1, repeats=2, threads=1)
SHAPES = {
    "static": (5, 1), "timeseries": (24, 12, 1), "image": (7, 7, 16), "audio": (7, 7, 256),
    "feature1": (50, 35), "feature2": (50, 74), "feature3": (50, 300), "feature4": (50, 371), "feature5": (50, 81),
}


@pytest.fixture(scope="module")
def workload():
    return get_workload("highmmt-4task")


def test_workload_is_the_papers_large_setting(workload):
    assert "highmmt-4task" in WORKLOADS and workload.model == "highmmt"
    assert {s.name: s.shape for s in workload.specs} == SHAPES
    assert [s.num_freq_bands for s in workload.specs] == [6] * 4 + [3] * 5
    assert [(t.name, t.modalities, t.out_dim) for t in workload.tasks] == [
        ("mimic", ("static", "timeseries"), 2),
        ("avmnist", ("image", "audio"), 10),
        ("mosei", ("feature1", "feature2", "feature3"), 2),
        ("urfunny", ("feature4", "feature5", "feature3"), 2),
    ]
    assert Standardizer(workload.specs).d_all == 387  # the paper's d_all for this setting (Appendix B.1)


def test_synthetic_batches_have_the_workload_shapes(workload):
    batches, targets = synthetic_batches(workload, 3, torch.device("cpu"))
    for t in workload.tasks:
        assert {m: tuple(x.shape) for m, x in batches[t.name].items()} == {m: (3, *SHAPES[m]) for m in t.modalities}
        y = targets[t.name]
        assert y.shape == (3,) and int(y.min()) >= 0 and int(y.max()) < t.out_dim
    again, _ = synthetic_batches(workload, 3, torch.device("cpu"))
    assert torch.equal(batches["mimic"]["static"], again["mimic"]["static"])  # seeded: reproducible


def test_our_parameter_count_matches_the_original(workload):
    n = count_params(build_model("highmodal", workload))
    assert abs(n - 527_382) <= workload.param_tolerance * 527_382


@needs_reference
def test_reference_has_the_original_size_and_the_librarys_blocks(workload):
    from perceiver_pytorch.perceiver_pytorch import Attention, FeedForward

    model = build_model("reference", workload)
    assert count_params(model) == 527_382
    # unimodal cross + latent attention, crossmodal cross + latent attention; a feed-forward after each
    assert sum(isinstance(m, Attention) for m in model.modules()) == 4
    assert sum(isinstance(m, FeedForward) for m in model.modules()) == 4


@needs_reference
def test_reference_refuses_settings_the_original_cannot_express(workload):
    cls = reference_class()
    with pytest.raises(HighmodalError, match="ff_mult"):
        cls(workload.specs, workload.tasks, resolve_config("large", ff_mult=2))
    with pytest.raises(HighmodalError, match="crossmodal_latent_heads"):
        cls(workload.specs, workload.tasks, resolve_config("large", crossmodal_latent_heads=8))


@needs_reference
def test_tiny_run_prints_one_line_per_model_then_the_ratios():
    threads = torch.get_num_threads()
    lines = run_speed(**TINY, memory=False)
    assert torch.get_num_threads() == threads  # --threads does not leak out of the run
    assert [json.loads(json.dumps(line)) for line in lines] == lines
    ours, ref, ratio = lines
    assert (ours["impl"], ref["impl"]) == ("highmodal", "reference")
    for line in (ours, ref):
        assert {"train_samples_per_s", "infer_samples_per_s", "peak_mem_bytes", "params"} <= set(line)
        assert line["train_samples_per_s"] > 0 and line["infer_samples_per_s"] > 0
        assert line["params"] == 527_382 and line["threads"] == 1 and len(line["train_runs"]) == 2
    assert ratio["train_ratio"] == pytest.approx(ours["train_samples_per_s"] / ref["train_samples_per_s"])
    assert ratio["infer_ratio"] == pytest.approx(ours["infer_samples_per_s"] / ref["infer_samples_per_s"])
    assert ratio["output_shapes"] == {"mimic": [2, 2], "avmnist": [2, 10], "mosei": [2, 2], "urfunny": [2, 2]}
    assert ratio["params"] == {"highmodal": 527_382, "reference": 527_382, "original": 527_382}
    assert ratio["meets_targets"] is None  # one thread is not the targets' setting: no verdict


@needs_reference
def test_cpu_peak_memory_is_measured():
    threads = torch.get_num_threads()
    try:
        peak, method = cpu_peak(Settings(batch=2, warmup=1), "reference", 1)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(peak, int) and peak >= 0
    assert "fresh process" in method


@pytest.mark.slow
@needs_reference
def test_tiny_run_measures_memory_in_fresh_processes():
    ours, ref, _ = run_speed(**TINY)
    assert ours["peak_mem_bytes"] > 0 and ref["peak_mem_bytes"] > 0
    assert "fresh process" in ours["peak_mem_method"]


@pytest.mark.parametrize(("options", "message"), [
    ({"workload": "highmmt-5task"}, "unknown speed workload 'highmmt-5task' .*did you mean 'highmmt-4task'"),
    ({"model": "highmt"}, "unknown model 'highmt'"),
    ({"model": "omnivec2"}, "--model 'omnivec2': workload 'highmmt-4task' is defined for 'highmmt'"),
    ({"amp": "fp16"}, "--amp 'fp16': choose one of bf16"),
    ({"steps": 0}, "--steps must be at least 1"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"device": "tpu"}, "--device 'tpu' is not a device"),
    ({"device": "meta"}, "--device 'meta' is not supported"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(HighmodalError, match=message):
        run_speed(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(HighmodalError, match="no CUDA device"):
        run_speed(device="cuda")


def test_missing_reference_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "perceiver_pytorch", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "highmodal.bench.reference", raising=False)
    with pytest.raises(HighmodalError, match="--no-deps"):
        reference_class()


def test_cli_rejects_an_unknown_workload(cli):
    proc = cli("bench", "speed", "--workload", "nope")
    assert proc.returncode != 0 and "unknown speed workload 'nope'; known: highmmt-4task" in proc.stderr
