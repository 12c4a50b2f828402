"""OmniVec2's prediction path is one that pairwise training optimises: after a short pairwise run, the
accuracy of `evaluate` on the training rows is what the training loss implies, and `predict` gives
the same scores as `evaluate`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml

from highmodal.data import LoadContext, build_suite

TASKS = [{"name": "digits", "source": "sklearn_digits"}, {"name": "cancer", "source": "breast_cancer"}]


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("paths")
    cfg = {"name": "paths", "seed": 0, "tasks": TASKS, "model": {"name": "omnivec2", "preset": "tiny"},
           "train": {"epochs": 8, "balance": "equal"}}
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    run_cli("train", "--config", "train.yaml", "--out", "run", "--no-progress", cwd=root, check=True)
    run_cli("evaluate", "run", "--split", "train", "--json", "train.json", cwd=root, check=True)
    return root


def test_inference_accuracy_on_training_rows_matches_the_training_loss(paired_run):
    root = paired_run
    config = yaml.safe_load((root / "run" / "config.yaml").read_text())
    assert config["train"]["sampler"] is None  # the model's default: pairwise two-stream steps
    last = json.loads((root / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    scores = json.loads((root / "train.json").read_text())["tasks"]
    for task in ("digits", "cancer"):
        implied = math.exp(-last["train_loss"][task])  # geometric-mean probability of the true class
        accuracy = scores[task]["metrics"]["accuracy"]
        assert implied > 0.5, (task, implied)  # the run did learn
        assert accuracy >= implied - 0.1, f"{task}: train accuracy {accuracy:.3f}, loss implies {implied:.3f}"


def test_evaluate_equals_predict(paired_run, cli):
    root = paired_run
    td = build_suite(TASKS, LoadContext(seed=0))["digits"]
    test, names = td.splits["test"], list(td.task.class_names)
    np.savez(root / "digits.npz", **test.inputs)
    cli("predict", "run", "--task", "digits", "--input", "digits.npz", "--out", "pred.csv", cwd=root, check=True)
    with (root / "pred.csv").open() as f:
        pred = np.array([names.index(r["prediction"]) for r in csv.DictReader(f)])
    evaluated = json.loads((root / "run" / "eval_test.json").read_text())["tasks"]["digits"]["metrics"]["accuracy"]
    assert float((pred == test.y).mean()) == pytest.approx(evaluated, abs=1e-12)


def test_inference_flag_switches_the_path(paired_run, cli):
    root = paired_run
    cli("evaluate", "run", "--inference", "self", cwd=root, check=True)
    single = json.loads((root / "run" / "eval_test.json").read_text())["tasks"]["digits"]["metrics"]
    fused = json.loads((root / "run" / "eval_test-self.json").read_text())["tasks"]["digits"]["metrics"]
    assert single != fused  # another path, the same weights
    proc = cli("evaluate", "run", "--inference", "sideways", cwd=root)
    assert proc.returncode == 2 and "--inference" in proc.stderr
