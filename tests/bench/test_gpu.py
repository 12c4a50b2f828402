"""`highmodal bench gpu`: the tables it writes from its JSON lines, the doc section it replaces, and
its refusal on a machine without CUDA."""

import pytest
import torch

from highmodal.bench.gpu import BEGIN, END, render, write_section
from highmodal.errors import HighmodalError

LINES = [
    {"kind": "environment", "torch": "2.11.0", "cuda": "13.0", "device_name": "NVIDIA H200", "gpus": 1,
     "python": "3.12.3"},
    {"run": "highmmt bf16, batch 32", "kind": "speed", "model": "highmmt", "impl": "highmodal",
     "train_samples_per_s": 9000.0, "infer_samples_per_s": 40000.0, "train_tflops_per_s": 5.7},
    {"run": "highmmt bf16, batch 32", "kind": "speed", "model": "highmmt", "impl": "reference",
     "train_samples_per_s": 3000.0, "infer_samples_per_s": 10000.0, "train_tflops_per_s": 3.2},
    {"run": "highmmt bf16, batch 32", "kind": "speed", "model": "highmmt", "train_ratio": 3.0, "infer_ratio": 4.0},
    {"run": "omnivec2 base bf16, batch 64", "kind": "speed", "model": "omnivec2", "impl": "highmodal",
     "train_tokens_per_s": 123456.0, "infer_tokens_per_s": 400000.0, "train_tflops_per_s": 300.0,
     "train_matmul_fraction": 0.38},
    {"run": "omnivec2 base bf16, batch 64", "kind": "speed", "model": "omnivec2", "mfu": 0.303,
     "meets_targets": False},
    {"run": "omnivec2 base bf16 + compile, batch 64", "kind": "speed", "error": "out of memory"},
    {"run": "torchrun, nccl, ddp", "kind": "train", "epochs": 5, "train_seconds": 12.25, "best_epoch": 4,
     "best_val_score": 0.91, "test_mean_skill": 0.9},
]


def test_render_tables_and_failures():
    md = render(LINES, "highmodal bench gpu")
    assert "one NVIDIA H200 (torch 2.11.0, CUDA 13.0" in md
    assert "| highmmt bf16, batch 32 | 9,000 / 40,000 | 3,000 / 10,000 | **3.00×** | **4.00×** | 5.70 |" in md
    assert "| omnivec2 base bf16, batch 64 | 123,456 | 400,000 | 300.0 | 30.3% | 38.0% | False |" in md
    assert "| torchrun, nccl, ddp | 5 | 12.2 | 4 | 0.9100 | 0.9000 |" in md
    assert "Runs that failed: omnivec2 base bf16 + compile, batch 64: `out of memory`." in md


def test_write_section_replaces_only_between_markers(tmp_path):
    doc = tmp_path / "perf.md"
    doc.write_text(f"# title\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n")
    write_section(doc, "new figures\n")
    assert doc.read_text() == f"# title\n\nbefore\n{BEGIN}\nnew figures\n{END}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(HighmodalError, match=r"perf\.md: has no"):
        write_section(doc, "x\n")
    assert doc.read_text() == "no markers\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda(tmp_path, cli):
    proc = cli("bench", "gpu", "--out", str(tmp_path / "g"))
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr and not (tmp_path / "g").exists()
