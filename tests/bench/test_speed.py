"""``highmodal bench speed``: the workload as data, both models' sizes against the original's 527,382
parameters, the JSON lines of a tiny run, and clear errors for bad options. No timing assertions:
the speed targets live in the benchmark's output, never in tests."""

import importlib.util
import json
import sys
from dataclasses import replace

import pytest
import torch

from highmodal.bench.speed import (
    WORKLOADS,
    Settings,
    _utilisation,
    build_model,
    count_params,
    cpu_peak,
    get_workload,
    make_runner,
    reference_class,
    run_speed,
    runtimes_from_flag,
    synthetic_batches,
    tokens_per_step,
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
    # the reference computes every pair and latent the original does; ours skips unread work
    assert ours["train_flops_per_step"] < ref["train_flops_per_step"]
    assert ours["matmul_tflops"] == ref["matmul_tflops"]  # both fp32: one reference measurement


@needs_reference
def test_runtimes_are_timed_beside_eager_and_the_best_sets_the_inference_ratio():
    ours, ref, *paths, summary = run_speed(**TINY, memory=False, runtimes=("eager", "bf16", "onnx"))
    assert [p["runtime"] for p in paths] == ["eager", "bf16", "onnx"]
    for p in paths:
        assert p["max_rel_diff"] <= p["tolerance"] and p["infer_samples_per_s"] > 0 and len(p["infer_runs"]) == 2
        assert p["infer_ratio"] == pytest.approx(p["infer_samples_per_s"] / ref["infer_samples_per_s"])
    assert paths[0]["max_rel_diff"] == 0.0  # eager is the reference it is compared with
    best = max([ours["infer_samples_per_s"]] + [p["infer_samples_per_s"] for p in paths])
    assert summary["infer_ratio"] == pytest.approx(best / ref["infer_samples_per_s"])
    assert summary["infer_runtime"] in ("eager", "bf16", "onnx")


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
    ({"model": "omnivec2", "workload": "highmmt-4task"},
     "--model 'omnivec2': workload 'highmmt-4task' is defined for 'highmmt'"),
    ({"model": "probe"}, "--model 'probe' has no speed workload"),
    ({"preset": "tiny"}, "--preset 'tiny': workload 'highmmt-4task' compares with the original"),
    ({"model": "omnivec2", "preset": "huge"}, "unknown OmniVec2 preset 'huge'"),
    ({"model": "omnivec2", "peak_tflops": 0}, "--peak-tflops must be positive"),
    ({"amp": "fp16"}, "--amp 'fp16': choose one of bf16"),
    ({"steps": 0}, "--steps must be at least 1"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"device": "tpu"}, "--device 'tpu' is not a device"),
    ({"device": "meta"}, "--device 'meta' is not supported"),
    ({"runtimes": ("onx",)}, "unknown inference runtime 'onx'.*did you mean 'onnx'"),
    ({"runtimes": ("onnx",), "amp": "bf16"}, "--runtimes measures each engine beside the fp32 eager model"),
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


def test_omnivec2_workload_is_a_fused_pair_at_base_size():
    workload = get_workload("omnivec2-pair")
    assert workload.model == "omnivec2" and workload.pairwise and workload.original_params is None
    assert workload.impls == ("highmodal",)
    with torch.device("meta"):
        model = build_model("highmodal", workload)
    assert model.cfg.d_model == 768 and model.cfg.f_depth == 12  # f is BERT-base sized
    batches, _ = synthetic_batches(workload, 2, torch.device("cpu"))
    ids = batches["sentences"]["text"]
    assert ids.shape == (2, 128, 1) and ids.min() >= 1 and ids.max() < 30_522  # real subword ids, no padding
    assert batches["imagenet"]["image"].shape == (2, 224, 224, 3)


def test_pairwise_train_steps_fuse_the_two_streams(monkeypatch):
    """The train step runs the two-stream graph (fuse called once), inference the single streams."""
    workload = get_workload("omnivec2-pair")
    runner = make_runner("highmodal", replace(workload, preset="tiny"), torch.device("cpu"))
    batches, targets = synthetic_batches(workload, 2, torch.device("cpu"))
    calls = []
    fuse = runner.model.fuse
    monkeypatch.setattr(runner.model, "fuse", lambda *a: calls.append(1) or fuse(*a))
    runner.train_step(batches, targets)
    assert calls == [1]
    assert [tuple(o.shape) for o in runner.infer_step(batches)] == [(2, 1000), (2, 2)]
    assert calls == [1]
    assert tokens_per_step(runner.model, workload, batches) == 2 * (196 + 128)  # ViT-B/16 patches + subwords


def test_our_train_step_is_the_trainers(monkeypatch):
    """Ours is timed through ``Trainer.step`` (clipping, balancing, the non-finite watch included),
    at the workload's learning rate throughout; the reference through its own plain step."""
    from highmodal.training.trainer import Trainer

    workload = replace(get_workload("omnivec2-pair"), preset="tiny")
    runner = make_runner("highmodal", workload, torch.device("cpu"))
    batches, targets = synthetic_batches(workload, 2, torch.device("cpu"))
    calls = []
    step = Trainer.step
    monkeypatch.setattr(Trainer, "step", lambda self, pieces, where="step": calls.append(pieces) or step(self, pieces))
    before = [p.detach().clone() for p in runner.model.parameters()]
    for _ in range(3):
        runner.train_step(batches, targets)
    assert len(calls) == 3 and all(set(p.batch) >= {"target"} for p in calls[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, runner.model.parameters(), strict=True))
    assert runner.trainer.scheduler.get_last_lr() == [workload.lr]


def test_tiny_omnivec2_run_reports_tokens_flops_and_utilisation():
    ours, summary = run_speed(model="omnivec2", preset="tiny", memory=False, peak_tflops=1.0, **TINY)
    assert ours["impl"] == "highmodal" and ours["preset"] == "tiny" and summary["tokens_per_step"] == 2 * 324
    assert ours["train_tokens_per_s"] == pytest.approx(ours["train_samples_per_s"] * 324 / 2)
    # backward costs about twice the forward: a train step counts about 3x the pairwise forward FLOPs,
    # which exceed the single-stream inference FLOPs (cross-attention and g over both streams)
    assert 3 * ours["infer_flops_per_step"] < ours["train_flops_per_step"] < 6 * ours["infer_flops_per_step"]
    steps_per_s = ours["train_samples_per_s"] / 4
    assert ours["train_tflops_per_s"] == pytest.approx(ours["train_flops_per_step"] * steps_per_s / 1e12)
    assert summary["mfu"] == pytest.approx(ours["train_tflops_per_s"] / 1.0) == ours["train_mfu"]
    assert ours["peak_tflops_source"] == "--peak-tflops" and ours["matmul_tflops"] > 0
    assert summary["meets_targets"] is None  # a CPU run of the tiny preset is not the target setting
    assert summary["output_shapes"] == {"imagenet": [2, 1000], "sentences": [2, 2]}


def test_a_given_peak_applies_to_the_lines_computing_in_our_dtype_only():
    cpu, settings = torch.device("cpu"), Settings(amp="bf16", peak_tflops=2.0)
    measured = {"bf16": 0.5, "fp32": 0.25}  # matmul rates, as if measured already
    ours = _utilisation(settings, cpu, "bf16", {"train": 10**12}, {"train": 1.0}, measured)
    reference = _utilisation(settings, cpu, None, {"train": 10**12}, {"train": 1.0}, measured)
    assert (ours["peak_tflops_source"], ours["train_mfu"], ours["train_matmul_fraction"]) == ("--peak-tflops", 0.5, 2.0)
    assert reference["flops_dtype"] == "fp32" and reference["peak_tflops"] is None and reference["train_mfu"] is None


def test_cli_rejects_an_unknown_workload(cli):
    proc = cli("bench", "speed", "--workload", "nope")
    assert proc.returncode != 0 and "unknown speed workload 'nope'; known: highmmt-4task" in proc.stderr


def test_cli_measures_omnivec2_and_prints_its_utilisation_last(cli):
    proc = cli("bench", "speed", "--model", "omnivec2", "--preset", "tiny", "--batch", "2", "--steps", "1",
               "--warmup", "1", "--repeats", "1", "--threads", "1", "--no-memory")
    assert proc.returncode == 0, proc.stderr
    ours, *paths, last = (json.loads(line) for line in proc.stdout.splitlines())
    assert ours["workload"] == "omnivec2-pair" and ours["train_tokens_per_s"] > 0
    # by default the inference engines `predict --runtime auto` chooses among are timed beside eager
    assert [p["runtime"] for p in paths] == list(runtimes_from_flag(None, "cpu", None, False))
    assert all(p["infer_samples_per_s"] > 0 and p["max_rel_diff"] <= p["tolerance"] for p in paths)
    assert last["mfu"] is None and "--peak-tflops" in ours["peak_tflops_source"]  # no CPU peak is known
    assert last["train_matmul_fraction"] > 0 and last["tokens_per_step"] == 648


def test_runtimes_flag_defaults_to_the_engines_predict_chooses_among():
    from highmodal.training.engines import ENGINES
    from highmodal.training.predict import AUTO_SKIPS

    auto = runtimes_from_flag(None, "cpu", None, False)
    assert auto == runtimes_from_flag("auto", "cpu", None, False)
    assert "onnx" in auto and "eager" not in auto and not set(auto) & set(AUTO_SKIPS)
    assert all(ENGINES.get(n).missing("cpu") is None for n in auto)
    assert runtimes_from_flag("none", "cpu", None, False) == ()
    assert runtimes_from_flag(None, "cpu", "bf16", False) == runtimes_from_flag(None, "cpu", None, True) == ()
    assert runtimes_from_flag("eager,compile", "cpu", None, False) == ("eager", "compile")
