"""``highmodal export``: a run's inference path as one self-contained file per task (ONNX or TorchScript),
so a trained model can be served without highmodal and without its Python code.

Each file takes the task's modalities as positional float32 tensors in raw units (the graph
normalises, as the model does), each followed by a boolean ``<modality>_mask`` when the modality has a
variable-length axis, and returns what ``highmodal predict`` reports: class probabilities (softmax,
columns in the order of ``classes``) for classification, values in the target's units for regression.
Probabilities rather than raw logits because a serving side should not need to know the
postprocessing (regression heads predict standardised targets). Axis 0 is the batch, of any size;
a variable-length axis is fixed at the modality's ``max_len`` (pad to it and mark the real positions
in the mask, shaped like the modality without its channel axis: the model masks padding, so the
result does not depend on it). ``manifest.json``
records all of this with the source run's weights hash.

Every file is checked before it is kept: loaded back and compared with the PyTorch model at batch
sizes 1 and 3, because graph capture can silently freeze a size into the graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from highmodal import __version__
from highmodal.errors import HighmodalError, did_you_mean
from highmodal.fileio import atomic_write_text, refuse_to_replace
from highmodal.modalities.samples import random_values
from highmodal.modalities.spec import ModalitySpec
from highmodal.models.base import MultitaskModel

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
EXAMPLE_BATCH = 2  # torch.export treats sizes 0 and 1 as constants: capture at 2, check at 1 and 3
CHECK_BATCHES = (1, 3)
CHECK_ATOL = 1e-4
SUMMARY = "## Exception summary"  # where torch.onnx's long failure report says what went wrong
Runner = Callable[[list[torch.Tensor]], torch.Tensor]


class TaskAdapter(nn.Module):
    """Positional tensors in, one task's postprocessed output out: exporters take a fixed list of
    tensors, while the model takes a dict keyed by modality name and a task name."""

    def __init__(self, model: MultitaskModel, task: str, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.task, self.input_names = model, task, list(input_names)
        self.output = "probs" if model.task(task).is_classification else "pred"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(dict(zip(self.input_names, inputs, strict=True)), self.task)
        return self.model.postprocess(out, self.task)[self.output]


def task_inputs(model: MultitaskModel, task: str) -> list[tuple[str, ModalitySpec, bool]]:
    """The exported inputs of ``task`` in order: ``(name, spec, is_mask)``."""
    specs = {s.name: s for s in model.specs}
    out = []
    for m in model.task(task).modalities:
        out.append((m, specs[m], False))
        if specs[m].variable:
            out.append((f"{m}_mask", specs[m], True))
    return out


def example_inputs(model: MultitaskModel, task: str, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs of the exported shapes: token ids in range, masks with a random length per sample."""
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for _, spec, is_mask in task_inputs(model, task):
        lengths = spec.ref_lengths()
        if not is_mask:
            tensors.append(random_values(spec, batch, gen))
            continue
        mask = torch.ones(batch, *lengths, dtype=torch.bool)
        for axis, size in enumerate(spec.axes):
            if size is None:
                real = torch.randint(1, lengths[axis] + 1, (batch, 1), generator=gen)
                view = [batch, *[1] * len(lengths)]
                view[axis + 1] = lengths[axis]
                mask &= (torch.arange(lengths[axis]) < real).reshape(view)
        tensors.append(mask)
    return tensors


def _manifest_entry(model: MultitaskModel, task: str, file: str) -> dict:
    t = model.task(task)
    inputs = []
    for name, spec, is_mask in task_inputs(model, task):
        axes = list(spec.ref_lengths())
        if is_mask:
            inputs.append({"name": name, "shape": ["batch", *axes], "dtype": "bool",
                           "meaning": f"True where a position of {spec.name} is real"})
            continue
        meaning = f"{spec.kind} in raw units (the graph normalises)"
        if spec.vocab_size:
            meaning = f"{spec.kind} token ids in [0, {spec.vocab_size}), 0 = padding, as float32"
        if spec.variable:
            padded = ", ".join(str(i + 1) for i, s in enumerate(spec.axes) if s is None)
            meaning += f"; axis {padded} padded to {spec.max_len}, real positions in {name}_mask"
        inputs.append({"name": name, "shape": ["batch", *axes, spec.channels], "dtype": "float32",
                       "kind": spec.kind, "meaning": meaning})
    if t.is_classification:
        output = {"name": "probs", "shape": ["batch", t.out_dim], "dtype": "float32",
                  "meaning": "class probabilities (softmax of the head), columns in the order of classes"}
    else:
        output = {"name": "pred", "shape": ["batch", t.out_dim], "dtype": "float32",
                  "meaning": "predicted values in the target's units (standardisation undone)"}
    return {"file": file, "target": t.target, "description": t.description, "inputs": inputs, "output": output,
            "classes": list(t.class_names)}


def _require_onnx() -> None:
    import importlib.util

    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise HighmodalError(f"--format onnx needs {', '.join(missing)}: pip install {' '.join(ONNX_PACKAGES)} "
                             "(or pip install 'highmodal[export]')")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter (torch.jit's deprecation, tracer notes on the model's Python checks,
    torch.onnx on torchvision ops it skips, torch.export's graph dumps when it refuses a model and the
    fallback takes over): failures come as exceptions, and the check after export is what tells."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _write_torchscript(adapter: TaskAdapter, args: tuple[torch.Tensor, ...], path: Path) -> tuple[Runner, str]:
    with _quiet():
        torch.jit.save(torch.jit.trace(adapter, args, check_trace=False), str(path))
        loaded = torch.jit.load(str(path))
    return (lambda xs: loaded(*xs)), "torch.jit.trace"


def _write_onnx(adapter: TaskAdapter, args: tuple[torch.Tensor, ...], path: Path) -> tuple[Runner, str]:
    run, how = onnx_session(adapter, args, path, adapter.input_names, [adapter.output])
    return (lambda xs: run(*xs)[0]), how


def onnx_session(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                 output_names: Sequence[str], threads: int | None = None
                 ) -> tuple[Callable[..., list[torch.Tensor]], str]:
    """Write ``module`` (positional tensors in, one tensor or a tuple out; axis 0 of every input the
    batch) to ``path`` as ONNX and open it in ONNX Runtime with ``threads`` intra-op threads (default
    torch's count, so the thread choice of ``highmodal.runtime`` holds here too). Returns a function
    of the same tensors giving the outputs as a list, and how the graph was captured.

    torch.export-based (dynamo) exporter first; if it refuses the model, the TorchScript-based one.
    torch.export cannot follow a Python branch on tensor values, such as OmniVec2's check that text
    token ids are in range; tracing runs the check once and records no branch. The callers' check
    afterwards tells whether the traced graph holds for other inputs."""
    import onnxruntime

    io = {"input_names": list(input_names), "output_names": list(output_names)}
    batch = torch.export.Dim("batch", min=1)
    shapes = {"inputs": tuple({0: batch} for _ in args)}
    how = "torch.onnx.export (dynamo)"
    with _quiet():
        try:
            torch.onnx.export(module, args, str(path), **io, dynamic_shapes=shapes, dynamo=True,
                              external_data=False, verbose=False)
        except Exception as dynamo_error:
            how = "torch.onnx.export (dynamo=False, TorchScript-based: torch.export refused the model)"
            try:
                torch.onnx.export(module, args, str(path), **io, dynamo=False,
                                  dynamic_axes={n: {0: "batch"} for n in [*io["input_names"], *io["output_names"]]})
            except Exception:
                raise dynamo_error from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(*xs: torch.Tensor) -> list[torch.Tensor]:
        feed = {n: x.numpy() for n, x in zip(io["input_names"], xs, strict=True)}
        return [torch.from_numpy(o) for o in session.run(None, feed)]

    return run, how


WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript}


def _line(e: Exception, last: bool = False) -> str:
    """One line of an exporter's or runtime's long message: torch.export puts the gist first, torch.onnx
    after its "Exception summary" heading, the TorchScript interpreter last."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    if SUMMARY in lines[:-1]:
        return lines[lines.index(SUMMARY) + 1]
    return lines[-1 if last else 0]


def export_task(model: MultitaskModel, task: str, fmt: str, path: Path) -> tuple[float, str]:
    """Write ``task``'s inference graph to ``path``, reload it and check it against the model;
    returns the largest absolute difference seen and how the graph was captured."""
    adapter = TaskAdapter(model, task, [name for name, _, _ in task_inputs(model, task)]).eval()
    try:
        run, how = WRITERS[fmt](adapter, tuple(example_inputs(model, task, EXAMPLE_BATCH)), path)
    except Exception as e:
        raise HighmodalError(f"task {task!r}: {fmt} export of this {type(model).__name__} failed: {_line(e)} "
                             "(--debug shows the exporter's message)") from e
    worst = 0.0
    for b in CHECK_BATCHES:
        xs = example_inputs(model, task, b, seed=b)
        with torch.no_grad():
            want = adapter(*xs)
            try:
                got = run(xs)
            except Exception as e:
                raise HighmodalError(f"task {task!r}: the {fmt} graph fails at batch size {b}: {_line(e, last=True)}; "
                                     "not exported") from e
        diff = (got - want).abs().max().item()
        if not diff <= CHECK_ATOL:
            raise HighmodalError(f"task {task!r}: the {fmt} graph does not reproduce the model at batch size {b} "
                                 f"(max abs difference {diff:.3g} > {CHECK_ATOL}); not exported")
        worst = max(worst, diff)
    return worst, how


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise HighmodalError(f"{out}: exists and is not a directory; --out needs a folder for the exported files")
    refuse_to_replace(out, overwrite)
    if not (out / "manifest.json").is_file():
        raise HighmodalError(f"{out}: is not a highmodal export (no manifest.json); refusing to replace it "
                             "with --overwrite, pick another --out")


def _commit(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old export is removed only once the new one is there."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, tasks: Sequence[str] | None = None,
               overwrite: bool = False) -> tuple[Path, dict]:
    """Export ``tasks`` (default: all) of the run in ``run_dir`` to ``out`` (default ``RUN/export``):
    ``<task>.onnx`` or ``<task>.pt`` plus ``manifest.json``. The folder is built beside ``out`` and
    moved into place only when every file has passed its check, so a failure leaves ``out`` as it was.
    Returns the folder and the manifest; ``manifest["tasks"][t]`` records the check's ``max_abs_diff``
    and the capture used (``exported_with``)."""
    from highmodal.training.checkpoint import load

    if fmt not in FORMATS:
        raise HighmodalError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")
    if fmt == "onnx":
        _require_onnx()
    run_dir = Path(run_dir)
    model = load(run_dir)
    names = list(tasks) if tasks else list(model.tasks)
    out = Path(out) if out is not None else run_dir / "export"
    for name in names:
        if name not in model.tasks:
            raise HighmodalError(f"--task {name!r}: not a task of {run_dir}{did_you_mean(name, model.tasks)}; "
                                 f"tasks: {', '.join(model.tasks)}")
        if Path(name).name != name or name.startswith("."):
            raise HighmodalError(f"task {name!r}: its name cannot be a file name in {out}")
    _check_out(out, overwrite)
    meta = json.loads((run_dir / "model.json").read_text())
    manifest = {
        "format": fmt, "highmodal_version": __version__, "torch_version": torch.__version__,
        "source": {"run_dir": str(run_dir.resolve()), "arch": meta["arch"], "preset": meta["preset"],
                   "weights_sha256": meta["weights_sha256"]},
        "batch": "axis 0 of every input and of the output; any size >= 1",
        "tasks": {},
    }
    final = Path(os.path.abspath(out))  # a name to build beside, even for --out .
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in dict.fromkeys(names):
            file = f"{name}{FORMATS[fmt]}"
            entry = _manifest_entry(model, name, file)
            entry["max_abs_diff"], entry["exported_with"] = export_task(model, name, fmt, tmp / file)
            manifest["tasks"][name] = entry
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))
        _commit(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, manifest
