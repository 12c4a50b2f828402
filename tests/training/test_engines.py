"""Inference engines: each reproduces fp32 eager within its tolerance (also at another batch size
than the one it was prepared on), a disagreeing or unavailable engine is refused with a clear error,
and ``predict_file`` runs through the chosen engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training import engines
from highmodal.training.engines import ENGINES, Engine, checked, difference
from highmodal.training.export import TaskAdapter, example_inputs, task_inputs
from highmodal.training.predict import predict_file

TASKS = [{"name": "motions", "source": "basic_motions"}, {"name": "vowels", "source": "japanese_vowels"}]


@pytest.fixture(scope="module")
def model():
    suite = build_suite(TASKS, LoadContext(seed=0))
    torch.manual_seed(0)
    return create_model("highmmt", suite.specs, [td.task for td in suite], preset="tiny").eval()


def adapter(model, task: str) -> TaskAdapter:
    return TaskAdapter(model, task, [n for n, _, _ in task_inputs(model, task)]).eval()


@pytest.mark.parametrize("name", ["eager", "bf16", "onnx"])
@pytest.mark.parametrize("task", ["motions", "vowels"])  # two modalities; one masked variable-length modality
def test_each_engine_reproduces_eager_within_its_tolerance(model, name, task):
    engine = ENGINES.get(name)
    if engine.missing("cpu"):
        pytest.skip(engine.missing("cpu"))
    graph = adapter(model, task)
    run, diff = checked(name, graph, tuple(example_inputs(model, task, 2)), graph.input_names, [graph.output])
    assert diff <= engine.tolerance
    other = example_inputs(model, task, 5, seed=1)  # another batch size than the one prepared on
    with torch.inference_mode():
        want = graph(*other)
    got = run(*other)
    assert got[0].shape == want.shape == (5, model.task(task).out_dim)
    assert difference([want], got) <= engine.tolerance


@pytest.mark.slow
def test_compile_reproduces_eager(model):
    graph = adapter(model, "vowels")
    _, diff = checked("compile", graph, tuple(example_inputs(model, "vowels", 3)), graph.input_names,
                        [graph.output])
    assert diff <= ENGINES.get("compile").tolerance


def test_difference_is_scaled_by_the_reference():
    assert difference([torch.tensor([0.2, 0.8])], [torch.tensor([0.25, 0.8])]) == pytest.approx(0.05)
    assert difference([torch.tensor([100.0, -50.0])], [torch.tensor([101.0, -50.0])]) == pytest.approx(0.01)


def test_an_engine_beyond_its_tolerance_is_refused(model, monkeypatch):
    def noisy(module, example, inputs, outputs):
        return lambda *xs: [module(*xs) + 0.01]

    monkeypatch.setitem(ENGINES._items, "noisy", Engine("noisy", 1e-3, noisy, lambda device: None, "test"))
    graph = adapter(model, "motions")
    with pytest.raises(HighmodalError, match=r"--runtime noisy: .* by 0.01 .*above its tolerance 0.001"):
        checked("noisy", graph, tuple(example_inputs(model, "motions", 2)), graph.input_names, [graph.output])


def test_unavailable_engines_say_why(model, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None)
    graph = adapter(model, "motions")
    xs = tuple(example_inputs(model, "motions", 2))
    with pytest.raises(HighmodalError, match="--runtime bf16: this CPU has no bf16 instructions"):
        checked("bf16", graph, xs, graph.input_names, [graph.output])
    with pytest.raises(HighmodalError, match=r"--runtime onnx: needs onnx, onnxscript, onnxruntime"):
        checked("onnx", graph, xs, graph.input_names, [graph.output])
    with pytest.raises(HighmodalError, match=r"unknown inference runtime 'onx'.*did you mean 'onnx'"):
        checked("onx", graph, xs, graph.input_names, [graph.output])


def test_predict_file_through_each_runtime(model, tmp_path):
    xs = example_inputs(model, "vowels", 7, seed=2)
    path = tmp_path / "inputs.npz"
    np.savez(path, **{n: x.numpy() for (n, _, _), x in zip(task_inputs(model, "vowels"), xs, strict=True)})
    eager = predict_file(model, "vowels", path, batch_size=3)
    assert eager.runtime == "eager" and eager.difference == 0.0 and len(eager.rows) == 7
    probs = np.array([r[2:] for r in eager.rows], dtype=float)
    for runtime in ("onnx", "auto"):
        got = predict_file(model, "vowels", path, batch_size=3, runtime=runtime)
        assert got.runtime in ENGINES and got.difference <= ENGINES.get(got.runtime).tolerance
        np.testing.assert_allclose(np.array([r[2:] for r in got.rows], dtype=float), probs,
                                   atol=1e-6 + ENGINES.get(got.runtime).tolerance)
