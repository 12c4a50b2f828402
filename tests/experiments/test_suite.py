"""`highmodal suite` end to end through the CLI: the results.json schema and the markdown report."""

import json
from pathlib import Path

import numpy as np
import pytest

import highmodal
from highmodal.data import LoadContext, build_suite
from highmodal.experiments.features import features

MODELS = {"highmmt_multitask", "highmmt_single", "simple_best", "classical"}


def check_report(report: dict, n_tasks: int) -> None:
    assert len(report["tasks"]) == n_tasks
    extra = {e["label"] for e in report["extra_models"]}
    for row in report["tasks"]:
        assert set(row) >= {"task", "dataset", "modalities", "metric", "higher_is_better", "models", "params",
                            "reference"}
        assert set(row["models"]) == MODELS | extra and all(isinstance(v, float) for v in row["models"].values())
        assert set(row["params"]) == {"highmmt_multitask", "highmmt_single"}
        assert set(row["reference"]) == {"value", "source"}
        assert set(row["ci"]) == MODELS - {"classical"} | extra
        for model, (low, high) in row["ci"].items():
            assert low <= row["models"][model] <= high, (row["task"], model)
        assert row["simple_best_model"] in row["simple_candidates"]
        assert row["multitask_vs_simple"]["verdict"] in ("above", "below", "tie")
    s = report["summary"]
    assert sum(s["significance"].values()) == n_tasks
    assert set(s["best_column"]) == {r["task"] for r in report["tasks"]}
    single_total = sum(r["params"]["highmmt_single"] for r in report["tasks"])
    assert s["total_params"]["highmmt_single"] == single_total
    assert s["total_params"]["highmmt_multitask"] < single_total


@pytest.fixture(scope="module")
def demo_quick(tmp_path_factory):
    """One `suite --suite demo --quick` run, with its report and markdown as first written (the
    --reuse test below writes them again in the same folder)."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("demo") / "suite"
    proc = run_cli("suite", "--suite", "demo", "--quick", "--out", str(out), "--no-progress", check=True)
    return out, proc, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_demo_suite_quick(demo_quick):
    out, proc, report, md = demo_quick
    check_report(report, 3)
    assert report["quick"] and "mean skill" in proc.stdout
    assert "quick mode: not a result" in md and "| digits |" in md
    assert (out / "multitask" / "model.safetensors").is_file()
    assert (out / "single" / "digits" / "model.safetensors").is_file()


def test_suite_with_an_extra_omnivec2_column(tmp_path, cli):
    import yaml

    suite = yaml.safe_load((Path(highmodal.__file__).parent / "configs" / "demo.yaml").read_text())
    suite["models"] = [{"label": "omnivec2", "model": {"name": "omnivec2", "preset": "small"},
                        "train": {"balance": "dwa"},
                        "task_options": {"digits": {"val_frac": 0.2, "test_frac": 0.25}}}]  # other test rows
    suite["tasks"] = [t | ({"metric": "auroc"} if t["name"] == "breast_cancer" else {}) for t in suite["tasks"]]
    suite["quick"] = {"tasks": ["digits", "basic_motions", "breast_cancer"], "epochs": 2, "max_train": 64,
                      "max_eval": 512}
    suite["cross_validation"] = {"tasks": ["digits"], "folds": 3}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    cli("suite", "--suite", str(tmp_path / "suite.yaml"), "--quick", "--out", str(out), "--no-progress", check=True)
    report = json.loads((out / "results.json").read_text())
    assert report["extra_models"][0]["preset"] == "tiny"  # quick mode's preset
    assert all(set(r["models"]) == {*MODELS, "omnivec2"} for r in report["tasks"])
    run = json.loads((out / "omnivec2" / "model.json").read_text())
    assert run["arch"] == "omnivec2"
    metrics = [json.loads(line) for line in (out / "omnivec2" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and set(metrics[0]["loss_weights"]) == {"digits", "basic_motions", "breast_cancer"}
    cancer = next(r for r in report["tasks"] if r["task"] == "breast_cancer")
    assert cancer["metric"] == "auroc" and set(cancer["threshold_accuracy"]) == {*MODELS, "omnivec2"} - {"classical"}
    assert all(0.5 < a["accuracy"] <= 1 and a["ci"][0] <= a["accuracy"] for a in cancer["threshold_accuracy"].values())
    assert not any("threshold_accuracy" in r for r in report["tasks"] if r["task"] != "breast_cancer")
    cv = report["tasks"][0]["cross_validation"]
    assert report["tasks"][0]["task"] == "digits" and cv["folds"] == 3 and "cross_validation" not in report["tasks"][1]
    assert all(len(cv[m]["values"]) == 3 and 0.1 < cv[m]["mean"] <= 1 for m in ("highmmt_single", "simple_best"))
    assert (out / "cv" / "digits" / "fold2" / "model.safetensors").is_file()
    md = (out / "results.md").read_text()
    assert "| digits | 3 |" in md and "cross-validation over all rows" in md
    assert "| (d) omnivec2 |" in md and "ONE omnivec2 model" in md and "| breast_cancer | 0." in md
    assert "digits: {'test_frac': 0.25, 'val_frac': 0.2}" in md  # safe_dump sorts the keys
    suite["models"][0]["task_options"] = {"nosuch": {}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    proc = cli("suite", "--suite", str(tmp_path / "suite.yaml"), "--quick", "--out", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "models[omnivec2].task_options: unknown task 'nosuch'" in proc.stderr


def test_reuse_evaluates_finished_runs_instead_of_training(demo_quick, tmp_path, cli):
    out, _, first, _ = demo_quick
    stamp = (out / "multitask" / "model.safetensors").stat().st_mtime_ns
    import yaml

    saved = yaml.safe_load((out / "multitask" / "config.yaml").read_text())
    assert saved["train"].pop("task_hold") == 0.0  # as a run from before the setting existed: its default holds
    saved["name"] = "trained-elsewhere"  # as a run of `highmodal train` with the same settings
    (out / "multitask" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    proc = cli("suite", "--suite", "demo", "--quick", "--out", str(out), "--reuse", str(out), "--no-progress",
               check=True)
    again = json.loads((out / "results.json").read_text())
    assert (out / "multitask" / "model.safetensors").stat().st_mtime_ns == stamp  # not trained again
    assert len(again["reused"]) == 4 and "reusing" in proc.stdout  # (a) + three (b) runs
    for a, b in zip(first["tasks"], again["tasks"], strict=True):
        assert a["models"] == b["models"]
    assert "Runs evaluated rather than trained again" in (out / "results.md").read_text()
    other = yaml.safe_load((Path(highmodal.__file__).parent / "configs" / "demo.yaml").read_text())
    other["train"]["lr"] = 0.001
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    bad = cli("suite", "--suite", str(tmp_path / "other.yaml"), "--quick", "--out", str(out), "--reuse", str(out))
    assert bad.returncode == 2 and "was trained with other settings (train differ)" in bad.stderr  # in place
    assert (out / "multitask" / "model.safetensors").stat().st_mtime_ns == stamp
    moved = cli("suite", "--suite", str(tmp_path / "other.yaml"), "--quick", "--out", str(tmp_path / "o"),
                "--reuse", str(out), "--no-progress", check=True)  # from another folder: trained again there
    assert "not reusing" in moved.stdout and "training it again" in moved.stdout
    assert json.loads((tmp_path / "o" / "results.json").read_text())["reused"] == []
    assert (tmp_path / "o" / "multitask" / "model.safetensors").is_file()


def test_report_goes_to_out_unless_docs_is_asked_for(demo_quick, tmp_path, cli):
    """The report lands in --out; only --docs writes the project's docs/ (relative to the working folder)."""
    out = demo_quick[0]
    cli("suite", "--suite", "demo", "--quick", "--out", str(out), "--reuse", str(out), "--no-progress",
        cwd=tmp_path, check=True)
    assert (out / "results.md").is_file() and not (tmp_path / "docs").exists()
    cli("suite", "--suite", "demo", "--quick", "--out", str(out), "--reuse", str(out), "--no-progress", "--docs",
        cwd=tmp_path, check=True)
    assert json.loads((tmp_path / "docs" / "results.json").read_text())["quick"]


def test_unknown_suite(cli):
    proc = cli("suite", "--suite", "nosuch")
    assert proc.returncode == 2 and "unknown suite 'nosuch'" in proc.stderr


def test_classical_features():
    suite = build_suite([{"name": "v", "source": "japanese_vowels"}, {"name": "m", "source": "basic_motions"}],
                        LoadContext())
    vowels = suite["v"]
    f = features(vowels, vowels.splits["train"])
    # variable-length audio: mean, std, max, min, mean |step| per channel + length
    assert f.shape == (len(vowels.splits["train"]), 12 * 5 + 1)
    lengths = vowels.splits["train"].masks["lpc_cepstra"].sum(1)
    assert (f[:, -1] == lengths).all()


@pytest.mark.slow
def test_real_suite_quick(tmp_path, cli, data_root):
    out = tmp_path / "real"
    cli("suite", "--suite", "real", "--quick", "--data-root", str(data_root), "--out", str(out), "--no-progress",
        check=True)
    report = json.loads((out / "results.json").read_text())
    check_report(report, len(report["tasks"]))
    assert len(report["tasks"]) >= 3 and [e["label"] for e in report["extra_models"]] == ["omnivec2"]


def test_suite_yaml_without_a_suffix_is_read_as_given(tmp_path):
    from highmodal.experiments.suite import SUITES_DIR, load_suite_config

    (tmp_path / "mysuite").write_text((SUITES_DIR / "demo.yaml").read_text())
    cfg, folder = load_suite_config(str(tmp_path / "mysuite"))
    assert folder == tmp_path and cfg.tasks == load_suite_config("demo")[0].tasks


def test_folds_partition_every_row_and_refit_normalisation():
    from highmodal.experiments.suite import fold_task

    td = build_suite([{"name": "m", "source": "basic_motions"}], LoadContext(seed=0))["m"]
    total = sum(len(d) for d in td.splits.values())
    folds = [fold_task(td, 5, k, 0.1, 0) for k in range(5)]
    tests = np.concatenate([f.splits["test"].inputs["accelerometer"].reshape(-1) for f in folds])
    everything = np.concatenate([d.inputs["accelerometer"].reshape(-1) for d in td.splits.values()])
    assert sum(len(f.splits["test"]) for f in folds) == total and np.array_equal(np.sort(tests), np.sort(everything))
    for f in folds:
        assert sum(len(d) for d in f.splits.values()) == total
        train = f.splits["train"].inputs["accelerometer"]
        assert np.allclose(f.specs["accelerometer"].mean, train.reshape(-1, 3).mean(0), atol=1e-5)
