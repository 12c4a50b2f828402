"""Every GPU figure of ``docs/performance.md`` in one run (``highmodal bench gpu``).

HighMMT against the original code (eager fp32, bf16, bf16 + compile, at the paper's batch and at a
larger one), OmniVec2-base utilisation (bf16 at two batch sizes, bf16 + compile), and a ``torchrun``
training run on the GPU (nccl; ddp and fsdp) next to the same run without torchrun. Each measurement
runs in its own process (a fresh CUDA context and compile cache, and one failure does not end the
rest); every JSON line lands in ``OUT/gpu.json``. ``render`` turns that file into the markdown that
replaces the part of a document between ``BEGIN`` and ``END``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from highmodal.errors import HighmodalError
from highmodal.fileio import atomic_write_text
from highmodal.report import table

BEGIN, END = "<!-- gpu-figures:begin -->", "<!-- gpu-figures:end -->"

# (label, `highmodal bench speed` flags after --device cuda): the goals' settings first, then larger
# batches, OmniVec2's compile last (it takes minutes to compile at the base preset)
SPEED_RUNS = [
    ("highmmt fp32 eager, batch 32", ["--model", "highmmt"]),
    ("highmmt bf16, batch 32", ["--model", "highmmt", "--amp", "bf16"]),
    ("omnivec2 base bf16, batch 64", ["--model", "omnivec2", "--amp", "bf16", "--batch", "64"]),
    ("highmmt bf16 + compile, batch 32", ["--model", "highmmt", "--amp", "bf16", "--compile"]),
    ("highmmt fp32 eager, batch 512", ["--model", "highmmt", "--batch", "512"]),
    ("highmmt bf16, batch 512", ["--model", "highmmt", "--amp", "bf16", "--batch", "512"]),
    ("omnivec2 base bf16, batch 128", ["--model", "omnivec2", "--amp", "bf16", "--batch", "128"]),
    ("omnivec2 base bf16 + compile, batch 128",
     ["--model", "omnivec2", "--amp", "bf16", "--compile", "--batch", "128"]),
]

# A small real training run for the process-group path: package-shipped data, nothing to download.
TRAIN_CONFIG = {
    "name": "gpu-torchrun", "seed": 0,
    "tasks": [{"name": "digits", "source": "sklearn_digits"}, {"name": "breast_cancer", "source": "breast_cancer"}],
    "model": {"name": "highmmt", "preset": "large"},
    "train": {"epochs": 5, "device": "cuda"},
}
TRAIN_RUNS = [  # (label, launched by torchrun, train.parallel)
    ("plain process", False, "ddp"),
    ("torchrun, nccl, ddp", True, "ddp"),
    ("torchrun, nccl, fsdp", True, "fsdp"),
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "highmodal.cli", *args]


def _failure(proc: subprocess.CompletedProcess) -> dict:
    """The last line of a failed run's stderr, and its tail for diagnosis."""
    return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "stderr_tail": proc.stderr[-3000:]}


def _speed(label: str, flags: list[str], quick: bool, device: str, timeout: int) -> list[dict]:
    extra = ["--steps", "3", "--warmup", "2", "--repeats", "2"] if quick else []
    cmd = _cli("bench", "speed", "--device", device, *flags, *extra)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"run": label, "kind": "speed", "error": f"timed out after {timeout} s"}]
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return [{"run": label, "kind": "speed", **_failure(proc)}]
    return [{"run": label, "kind": "speed", "wall_s": seconds, **json.loads(line)}
            for line in proc.stdout.splitlines() if line.startswith("{")]


def _train(label: str, torchrun: bool, parallel: str, work: Path, quick: bool, device: str, timeout: int) -> dict:
    cfg = json.loads(json.dumps(TRAIN_CONFIG))
    cfg["train"] |= {"device": device, "parallel": parallel, **({"epochs": 1} if quick else {})}
    folder = work / label.replace(",", "").replace(" ", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "exp.yaml").write_text(yaml.safe_dump(cfg))
    train = ["train", "--config", "exp.yaml", "--out", "run", "--no-progress"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                "-m", "highmodal.cli"] if torchrun else _cli()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*launcher, *train], cwd=folder, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"run": label, "kind": "train", "error": f"timed out after {timeout} s"}
    line = {"run": label, "kind": "train", "wall_s": time.perf_counter() - t0, "returncode": proc.returncode,
            "epochs": cfg["train"]["epochs"]}
    if proc.returncode != 0:
        return line | _failure(proc)
    summary = json.loads((folder / "run" / "summary.json").read_text())
    scores = json.loads((folder / "run" / "eval_test.json").read_text())
    return line | {"train_seconds": summary["train_seconds"], "best_epoch": summary["best_epoch"],
                   "best_val_score": summary["best_val_score"], "test_mean_skill": scores.get("aggregate_skill")}


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"kind": "environment", "torch": torch.__version__, "cuda": torch.version.cuda,
            "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
            "gpus": torch.cuda.device_count() if cuda else 0, "python": sys.version.split()[0]}


def run_gpu(out: Path, quick: bool = False, device: str = "cuda", timeout: int = 900, log=print) -> list[dict]:
    """Measure every run, rewriting ``out/gpu.json`` as each result lands (a run cut off keeps what
    it measured)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise HighmodalError("bench gpu: no CUDA device is visible to torch (use --device cpu for a dry run)")
    out.mkdir(parents=True, exist_ok=True)
    lines = [environment()]
    path = out / "gpu.json"

    def keep(new: list[dict]) -> None:
        lines.extend(new)
        atomic_write_text(path, json.dumps(lines, indent=1))
        for line in new:
            log(f"{line.get('run', line['kind'])}: {line.get('error', 'ok')}")

    keep([])
    for label, torchrun, parallel in TRAIN_RUNS:  # short: first, so a cut-off run still has them
        keep([_train(label, torchrun, parallel, out / "train", quick, device, timeout)])
    for label, flags in SPEED_RUNS:
        keep(_speed(label, flags, quick, device, timeout))
    return lines


def _f(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render(lines: list[dict], command: str) -> str:
    """Markdown tables of a ``run_gpu`` result."""
    env = next(x for x in lines if x["kind"] == "environment")
    speed = [x for x in lines if x["kind"] == "speed"]
    errors = [x for x in speed if "error" in x]

    def runs(model: str, impls: tuple[str, ...]) -> list[tuple[str, dict]]:
        """Each setting of ``model`` whose lines for every impl (and the summary) are there."""
        found = []
        for label in dict.fromkeys(x["run"] for x in speed if x.get("model") == model):
            rows = {x.get("impl", "summary"): x for x in speed if x["run"] == label and "error" not in x}
            if all(rows.get(k) for k in (*impls, "summary")):
                found.append((label, rows))
        return found

    md = [f"Measured on one {env['device_name']} (torch {env['torch']}, CUDA {env['cuda']}, Python "
          f"{env['python']}) by `{command}`; every line is in [`performance-gpu.json`](performance-gpu.json).",
          "", "HighMMT against the original code on the same GPU (the reference always runs fp32 and eager):", "",
          *table(["setting", "ours train / infer, samples/s", "reference train / infer", "train ratio", "infer ratio",
                  "ours train TFLOP/s"], [
              [label, f"{r['highmodal']['train_samples_per_s']:,.0f} / {r['highmodal']['infer_samples_per_s']:,.0f}",
               f"{r['reference']['train_samples_per_s']:,.0f} / {r['reference']['infer_samples_per_s']:,.0f}",
               f"**{r['summary']['train_ratio']:.2f}×**", f"**{r['summary']['infer_ratio']:.2f}×**",
               _f(r["highmodal"].get("train_tflops_per_s"), ".2f")]
              for label, r in runs("highmmt", ("highmodal", "reference"))]),
          "", "OmniVec2 at the base preset (two-stream image + text step; MFU against the datasheet dense bf16 "
          "peak, and the fraction of an 8192² bf16 matmul measured in the same run):", "",
          *table(["setting", "train tokens/s", "infer tokens/s", "train TFLOP/s", "MFU", "of measured matmul",
                  "meets MFU ≥ 40%"], [
              [label, f"{r['highmodal']['train_tokens_per_s']:,.0f}", f"{r['highmodal']['infer_tokens_per_s']:,.0f}",
               f"{r['highmodal']['train_tflops_per_s']:.1f}", _f(r["summary"].get("mfu"), ".1%"),
               f"{r['highmodal']['train_matmul_fraction']:.1%}", r["summary"].get("meets_targets")]
              for label, r in runs("omnivec2", ("highmodal",))])]
    train = [x for x in lines if x["kind"] == "train"]
    errors += [x for x in train if "error" in x]
    md += ["", f"A real training run ({', '.join(t['name'] for t in TRAIN_CONFIG['tasks'])}, HighMMT large) "
           f"on the GPU, with and without the process group ({env['gpus']} GPU visible, so one process: a "
           "second nccl process needs a second GPU):", "",
           *table(["run", "epochs", "train s", "best epoch", "validation skill", "test mean skill"], [
               [x["run"], x["epochs"], f"{x['train_seconds']:.1f}", x["best_epoch"], f"{x['best_val_score']:.4f}",
                _f(x["test_mean_skill"], ".4f")] for x in train if "error" not in x])]
    if errors:
        md += ["", "Runs that failed: " + "; ".join(f"{x['run']}: `{x['error']}`" for x in errors) + "."]
    return "\n".join(md) + "\n"


def write_section(doc: Path, text: str) -> None:
    """Replace what lies between ``BEGIN`` and ``END`` in ``doc`` with ``text``."""
    body = doc.read_text()
    if BEGIN not in body or END not in body:
        raise HighmodalError(f"{doc}: has no {BEGIN} … {END} markers to write the GPU figures between")
    head, rest = body.split(BEGIN, 1)
    atomic_write_text(doc, f"{head}{BEGIN}\n{text}{END}{rest.split(END, 1)[1]}")


def main_from(out: Path, doc: Path | None, quick: bool, device: str, timeout: int) -> list[dict]:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    lines = run_gpu(out, quick, device, timeout)
    if doc is not None:
        write_section(doc, render(lines, "highmodal bench gpu" + (" --quick" if quick else "")))
        shutil.copyfile(out / "gpu.json", doc.with_name("performance-gpu.json"))
    return lines
