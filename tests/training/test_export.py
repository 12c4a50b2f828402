"""`highmodal export`: ONNX and TorchScript files of both model families reproduce the PyTorch model on
real test rows at batch sizes 1 and 7 (with masks for a variable-length task), and bad input fails
cleanly without touching what is on disk."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from highmodal.config import ExperimentConfig, ModelConfig, TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.experiments.run import train_experiment
from highmodal.experiments.suite import cap_suite
from highmodal.training import export as export_module
from highmodal.training.batching import TaskTensors
from highmodal.training.checkpoint import load
from highmodal.training.export import export_run

TASKS = [{"name": "digits", "source": "sklearn_digits"},
         {"name": "motions", "source": "basic_motions", "batch_size": 8},
         {"name": "vowels", "source": "japanese_vowels"}]
# Two modalities (HighMMT's crossmodal path, where the batch is split) and a masked variable length. OmniVec2
# to ONNX exports only the masked one: the dynamo exporter takes ~5 s a task on 2 cores, and OmniVec2's
# two-modality path (a mean of single-stream heads) holds nothing the other cases do not.
CASES = [("highmmt", "onnx", ["motions", "vowels"]), ("omnivec2", "onnx", ["vowels"]),
         ("highmmt", "torchscript", ["motions", "vowels"]), ("omnivec2", "torchscript", ["motions", "vowels"])]
ATOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def suite():
    return cap_suite(build_suite(TASKS, LoadContext(seed=0)), 32, 12, 0)


@pytest.fixture(scope="module")
def runs(suite, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for arch in ("highmmt", "omnivec2"):
        cfg = ExperimentConfig(name=arch, tasks=TASKS, model=ModelConfig(arch, "tiny"),
                               train=TrainConfig(epochs=1, memory_guard=False))
        out[arch], _, _ = train_experiment(cfg, root / arch, root, progress=False, log=lambda *_: None, suite=suite)
    return out


def runner(fmt: str, path, names: list[str]):
    """Call an exported file the way a serving side would: its own runtime, positional inputs."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        assert {i.shape[0] for i in [*session.get_inputs(), *session.get_outputs()]} == {"batch"}  # symbolic
        return lambda xs: torch.from_numpy(session.run(None, {n: x.numpy() for n, x in zip(names, xs, strict=True)})[0])
    module = torch.jit.load(str(path))
    return lambda xs: module(*xs)


def max_difference(model, suite, out, manifest: dict, fmt: str) -> float:
    """Largest difference between each exported file and the model on real test rows, batches of 1 and 7."""
    worst = 0.0
    for name, entry in manifest["tasks"].items():
        names = [i["name"] for i in entry["inputs"]]
        run = runner(fmt, out / entry["file"], names)
        rows = TaskTensors(suite[name].task, suite[name].splits["test"])
        for size in (1, 7):
            batch = rows.batch(slice(3, 3 + size))
            want = model.predict(batch, name)["probs"]
            got = run([batch[n] for n in names])
            assert got.shape == want.shape == (size, len(entry["classes"]))
            worst = max(worst, (got - want).abs().max().item())
        if name == "vowels":
            mask = batch["lpc_cepstra_mask"]
            assert names == ["lpc_cepstra", "lpc_cepstra_mask"] and not mask.all()  # real padding in these rows
            length = int(mask.sum(1).max())  # the model on the batch cut to its own padding: the same answer
            trimmed = {"lpc_cepstra": batch["lpc_cepstra"][:, :length], "lpc_cepstra_mask": mask[:, :length]}
            worst = max(worst, (got - model.predict(trimmed, name)["probs"]).abs().max().item())
    return worst


@pytest.mark.parametrize(("arch", "fmt", "tasks"), CASES, ids=[f"{a}-{f}" for a, f, _ in CASES])
def test_export_reproduces_the_model_on_test_rows(runs, suite, tmp_path, arch, fmt, tasks):
    out, manifest = export_run(runs[arch], fmt, tmp_path / "exp", tasks=tasks)
    suffix = {"onnx": ".onnx", "torchscript": ".pt"}[fmt]
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *(t + suffix for t in tasks)])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert {e["exported_with"] for e in manifest["tasks"].values()} == {
        "torchscript": {"torch.jit.trace"}, "onnx": {"torch.onnx.export (dynamo)"}}[fmt]
    worst = max_difference(load(runs[arch]), suite, out, manifest, fmt)
    assert worst <= ATOL, f"{arch} {fmt}: max abs difference {worst}"
    print(f"{arch} {fmt}: max abs difference {worst:.2e}")


def test_onnx_falls_back_to_the_torchscript_based_exporter(runs, suite, tmp_path, monkeypatch):
    real = torch.onnx.export
    refusal = "Failed to export the model with torch.export.\n## Exception summary\nGuardOnDataDependentSymNode: no"

    def refuse_dynamo(*args, dynamo=True, **kwargs):  # as torch.export refuses a Python branch on tensor values
        if dynamo:
            raise RuntimeError(refusal)
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", refuse_dynamo)
    out, manifest = export_run(runs["omnivec2"], "onnx", tmp_path / "exp", tasks=["vowels"])
    assert "dynamo=False" in manifest["tasks"]["vowels"]["exported_with"]
    assert max_difference(load(runs["omnivec2"]), suite, out, manifest, "onnx") <= ATOL

    def refuse(*args, dynamo=True, **kwargs):
        raise RuntimeError(refusal if dynamo else "the TorchScript-based exporter failed too")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(HighmodalError, match=r"onnx export of this OmniVec2 failed: GuardOnDataDependentSymNode: no"):
        export_run(runs["omnivec2"], "onnx", tmp_path / "exp2", tasks=["vowels"])


def test_manifest_describes_inputs_output_and_source(runs, suite, tmp_path):
    _, manifest = export_run(runs["highmmt"], "torchscript", tmp_path / "exp", tasks=["vowels", "digits"])
    meta = json.loads((runs["highmmt"] / "model.json").read_text())
    assert manifest["format"] == "torchscript" and list(manifest["tasks"]) == ["vowels", "digits"]
    assert manifest["source"]["weights_sha256"] == meta["weights_sha256"] and manifest["source"]["arch"] == "highmmt"
    vowels = manifest["tasks"]["vowels"]
    assert vowels["inputs"] == [
        {"name": "lpc_cepstra", "shape": ["batch", 29, 12], "dtype": "float32", "kind": "audio",
         "meaning": vowels["inputs"][0]["meaning"]},
        {"name": "lpc_cepstra_mask", "shape": ["batch", 29], "dtype": "bool",
         "meaning": "True where a position of lpc_cepstra is real"}]
    assert "padded to 29" in vowels["inputs"][0]["meaning"]
    assert vowels["output"]["name"] == "probs" and vowels["output"]["shape"] == ["batch", 9]
    assert vowels["classes"] == list(suite["vowels"].task.class_names)
    assert manifest["tasks"]["digits"]["inputs"][0]["shape"] == ["batch", 8, 8, 1]


def test_default_output_is_in_the_run_and_overwrite_replaces_a_previous_export(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["highmmt"], run)
    out, manifest = export_run(run, "torchscript", tasks=["digits"])
    assert out == run / "export" and set(manifest["tasks"]) == {"digits"}
    with pytest.raises(HighmodalError, match=r"export: already exists; pass --overwrite"):
        export_run(run, "torchscript", tasks=["vowels"])
    assert sorted(p.name for p in out.iterdir()) == ["digits.pt", "manifest.json"]
    export_run(run, "torchscript", tasks=["vowels"], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "vowels.pt"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no partial or old folders left
    load(run)  # the run itself is untouched


def test_bad_input_names_the_flag_and_leaves_disk_alone(runs, tmp_path, monkeypatch):
    run = runs["highmmt"]
    with pytest.raises(HighmodalError, match=r"--format 'tflite': expected one of onnx, torchscript"):
        export_run(run, "tflite", tmp_path / "a")
    with pytest.raises(HighmodalError, match=r"model.json: not found; is .*nothing a highmodal run directory"):
        export_run(tmp_path / "nothing", "torchscript", tmp_path / "a")
    with pytest.raises(HighmodalError, match=r"--task 'digitz': not a task of .*did you mean 'digits'"):
        export_run(run, "torchscript", tmp_path / "a", tasks=["digitz"])
    assert not (tmp_path / "a").exists() and not (run / "export").exists()

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(HighmodalError, match=r"keep: already exists; pass --overwrite to replace it"):
        export_run(run, "torchscript", keep, tasks=["digits"])
    with pytest.raises(HighmodalError, match=r"keep: is not a highmodal export \(no manifest.json\); refusing"):
        export_run(run, "torchscript", keep, tasks=["digits"], overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(HighmodalError, match=r"file: exists and is not a directory"):
        export_run(run, "torchscript", tmp_path / "file")
    assert (keep / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "x"

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(HighmodalError, match=r"--format onnx needs onnxscript: pip install onnx onnxscript onnxrunt"):
        export_run(run, "onnx", tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "keep"]


def test_a_failed_export_keeps_the_previous_one(runs, tmp_path, monkeypatch):
    out, _ = export_run(runs["omnivec2"], "torchscript", tmp_path / "exp", tasks=["digits"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(adapter, args, path):
        path.write_bytes(b"half a file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setitem(export_module.WRITERS, "torchscript", broken)
    with pytest.raises(HighmodalError, match=r"task 'digits': torchscript export of this OmniVec2 failed: exporter"):
        export_run(runs["omnivec2"], "torchscript", out, tasks=["digits"], overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_a_graph_that_fails_or_disagrees_at_another_batch_size_is_not_kept(runs, tmp_path, monkeypatch):
    def frozen_batch(adapter, args, path):  # what a capture that froze the example batch size would give
        return (lambda xs: adapter(*args)[:1].expand(len(xs[0]), -1)), "frozen"

    def crashing(adapter, args, path):
        def run(xs):
            raise RuntimeError("The following operation failed\nRuntimeError: Expected 2 elements but found 1")
        return run, "crashing"

    for writer, message in ((frozen_batch, r"does not reproduce the model at batch size 1 \(max abs difference"),
                            (crashing, r"fails at batch size 1: RuntimeError: Expected 2 elements but found 1")):
        monkeypatch.setitem(export_module.WRITERS, "torchscript", writer)
        with pytest.raises(HighmodalError, match=rf"task 'digits': the torchscript graph {message}"):
            export_run(runs["highmmt"], "torchscript", tmp_path / "exp", tasks=["digits"])
        assert not list(tmp_path.iterdir())
