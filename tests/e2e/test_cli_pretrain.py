"""Masked pretraining through the real CLI on packaged data: `pretrain` (both stages), `train --init`
from a stage, `transfer` (fine-tuning over seeds, few-shot, retrieval), and bad input."""

from __future__ import annotations

import json

import pytest
import yaml

SUITE = {
    "name": "tiny", "seed": 0,
    "tasks": [{"name": "digits", "source": "sklearn_digits"},
              {"name": "motions", "source": "basic_motions", "batch_size": 8},
              {"name": "cancer", "source": "breast_cancer"}],
    "model": {"name": "highmmt", "preset": "tiny"},
    "train": {"epochs": 1, "batch_size": 32},
    "models": [{"label": "omnivec2", "model": {"name": "omnivec2", "preset": "tiny"}}],
}
PRETRAIN = {
    "suite": "suite.yaml", "model": "omnivec2", "log_every": 5,
    "stage1": {"steps": 15, "batch_size": 16},
    "stage2": {"steps": 10, "batch_size": 8, "tasks": ["motions"], "contrastive": 0.5},
    "masking": {"image": {"ratio": 0.75}},
    "transfer": {"seeds": 2, "max_train": 64, "max_eval": 64, "epochs": 1, "shots": [1, 3], "shot_epochs": 1,
                 "draws": 2,
                 "retrieval": [{"task": "motions", "query": "accelerometer", "gallery": "gyroscope"}]},
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("pre")
    (root / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    (root / "pre.yaml").write_text(yaml.safe_dump(PRETRAIN))
    proc = run_cli("pretrain", "--config", "pre.yaml", "--out", "run", "--no-progress", cwd=root, check=True)
    return root, proc


def test_pretrain_writes_both_stages(pretrained):
    root, proc = pretrained
    run = root / "run"
    assert "stage 1 (15 steps" in proc.stdout and "stage 2 (10 steps" in proc.stdout
    for d in (run, run / "stage1"):
        assert json.loads((d / "model.json").read_text())["arch"] == "omnivec2"
    records = {n: [json.loads(line) for line in (run / f"stage{n}" / "metrics.jsonl").read_text().splitlines()]
               for n in (1, 2)}
    assert [r["step"] for r in records[1]] == [5, 10, 15] and [r["step"] for r in records[2]] == [5, 10]
    assert set(records[1][0]["train_loss"]) == {"digit_pixels", "accelerometer", "gyroscope", "cell_nuclei"}
    assert set(records[2][-1]["train_loss"]) == {"accelerometer", "gyroscope"}
    assert records[1][0]["lr"] > records[1][-1]["lr"] == 0  # warm-up, then cosine decay to 0
    assert (run / "stage2" / "tensorboard").is_dir() and not list(run.glob("stage*/checkpoints"))
    summary = json.loads((run / "summary.json").read_text())
    masking = summary["stages"]["1"]["masking"]
    assert masking["digit_pixels"] == {"strategy": "drop", "ratio": 0.75, "norm_targets": True}
    assert summary["stages"]["1"]["masking"]["cell_nuclei"]["ratio"] == 0.3
    assert summary["stages"]["1"]["pictures"] == ["stage1-digit_pixels.png"]
    assert (run / "reconstructions" / "stage1-digit_pixels.png").stat().st_size > 1000


def test_an_interrupted_pretraining_resumes_bit_identically(pretrained, cli, monkeypatch):
    """Cut in stage 2 after its first checkpoint, then `pretrain --resume`: stage 1 is read back,
    stage 2 continues from its checkpoint, and the model ends as the uninterrupted run's."""
    from highmodal.experiments.pretraining import load_pretrain_config, pretrain
    from highmodal.training.trainer import Trainer

    root, _ = pretrained
    step, calls = Trainer.step, []

    def cut(self, pieces, where):
        calls.append(where)
        if len(calls) == 15 + 7:  # stage 1's 15 steps, then 7 of stage 2 (checkpointed at 5)
            raise KeyboardInterrupt
        return step(self, pieces, where)

    monkeypatch.setattr(Trainer, "step", cut)
    with pytest.raises(KeyboardInterrupt):
        pretrain(load_pretrain_config(root / "pre.yaml"), root / "pre.yaml", root / "cut", None, progress=False,
                 log=lambda *_: None)
    monkeypatch.undo()
    assert (root / ".cut.partial" / "stage1" / "stage.json").is_file() and not (root / "cut").exists()
    proc = cli("pretrain", "--config", "pre.yaml", "--out", "cut", "--resume", "--no-progress", cwd=root, check=True)
    assert "stage 1: finished before" in proc.stdout
    assert (root / "cut" / "model.safetensors").read_bytes() == (root / "run" / "model.safetensors").read_bytes()
    steps = [json.loads(line)["step"] for line in (root / "cut" / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10]
    (root / "other.yaml").write_text(yaml.safe_dump(PRETRAIN | {"seed": 1}))
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(Trainer, "step", cut)
        calls.clear()
        pretrain(load_pretrain_config(root / "pre.yaml"), root / "pre.yaml", root / "cut2", None, progress=False,
                 log=lambda *_: None)
    monkeypatch.undo()
    proc = cli("pretrain", "--config", "other.yaml", "--out", "cut2", "--resume", cwd=root)
    assert proc.returncode != 0 and "started with other settings" in proc.stderr


def test_fine_tune_from_a_stage(pretrained, cli):
    root, _ = pretrained
    train = {k: SUITE[k] for k in ("name", "seed", "tasks", "train")}
    train["model"] = {"name": "omnivec2", "preset": "tiny"}
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    proc = cli("train", "--config", "train.yaml", "--init", "run/stage1", "--out", "ft", "--no-progress", cwd=root,
               check=True)
    assert "initialised from run/stage1" in proc.stdout
    meta = json.loads((root / "run" / "stage1" / "model.json").read_text())
    assert meta["untrained"] == ["heads", "unified_head"]
    # 4 heads (digits, cancer, motions x 2 modalities), each LayerNorm + 2 Linear = 6 tensors
    assert "24 tensors it lacks or never trained start fresh" in proc.stdout
    assert json.loads((root / "ft" / "summary.json").read_text())["init"] == "run/stage1"


def test_transfer_reports_the_schema(pretrained, cli):
    root, _ = pretrained
    proc = cli("transfer", "--config", "pre.yaml", "--pretrained", "run", "--out", "tr", "--no-progress", cwd=root,
               check=True)
    report = json.loads((root / "tr" / "transfer.json").read_text())
    assert set(report["suite_mean"]) == {"scratch", "stage1", "stage1_2"} and report["seeds"] == 2
    assert report["command"].startswith("highmodal transfer --config pre.yaml")
    assert all(len(report["finetune"][k]["scores"]) == 2 for k in report["suite_mean"])
    motions = report["retrieval"]["motions"]
    assert set(motions) == {"R@1", "R@5", "R@10", "chance_R@1"}
    assert 0 <= motions["R@1"] <= motions["R@5"] <= motions["R@10"] <= 1 and motions["chance_R@1"] == 1 / 40
    assert set(report["fewshot"]) == {"random_init", "stage1", "stage1_2"}
    assert set(report["fewshot_finetune"]) == {"scratch", "stage1", "stage1_2"}
    assert all(set(row) == {"1", "3"} for row in report["fewshot_finetune"].values())  # JSON keys
    assert (root / "tr" / "shots3" / "stage1_2" / "seed0" / "model.json").is_file()
    assert set(report["fewshot"]["stage1"]["tasks"]) == {"digits", "motions", "cancer"}
    assert (root / "tr" / "fewshot.png").is_file() and "| scratch |" in proc.stdout
    again = cli("transfer", "--config", "pre.yaml", "--pretrained", "run", "--out", "tr", "--reuse", "--no-progress",
                cwd=root, check=True)
    assert "fine-tune scratch seed 1" in again.stdout + again.stderr
    assert json.loads((root / "tr" / "transfer.json").read_text())["suite_mean"] == report["suite_mean"]
    assert set(report["retrieval_all"]["motions"]["simple"]) == {"cca_features"}


def test_transfer_runs_only_the_parts_asked_for(pretrained, cli):
    root, _ = pretrained
    proc = cli("transfer", "--config", "pre.yaml", "--pretrained", "run", "--out", "only", "--parts", "retrieval",
               "--no-progress", cwd=root, check=True)
    report = json.loads((root / "only" / "transfer.json").read_text())
    assert report["parts"] == ["retrieval"] and report["finetune"] == {} and report["fewshot"] == {}
    assert set(report["retrieval_all"]["motions"]) == {"simple", "random_init", "stage1", "stage1_2"}
    assert not (root / "only" / "finetune").exists() and not (root / "only" / "fewshot.png").exists()
    assert "| motions | stage1_2 | raw | forward |" in proc.stdout
    proc = cli("transfer", "--config", "pre.yaml", "--pretrained", "run", "--out", "bad", "--parts", "probe", cwd=root)
    assert proc.returncode != 0 and "--parts: 'probe' is not one of finetune, fewshot, retrieval" in proc.stderr


def test_bad_input_names_the_field_and_keeps_the_run(pretrained, cli):
    root, _ = pretrained
    before = (root / "run" / "model.safetensors").read_bytes()
    bad = PRETRAIN | {"masking": {"image": {"ratio": 1.5}}}
    (root / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = cli("pretrain", "--config", "bad.yaml", "--out", "run", "--overwrite", cwd=root)
    assert proc.returncode != 0 and "pretrain.masking.image.ratio" in proc.stderr
    assert (root / "run" / "model.safetensors").read_bytes() == before
    proc = cli("pretrain", "--config", "pre.yaml", "--out", "run", cwd=root)
    assert proc.returncode != 0 and "already exists" in proc.stderr
    (root / "odd.yaml").write_text(yaml.safe_dump(PRETRAIN | {"stage2": {"steps": 7}}))
    proc = cli("pretrain", "--config", "odd.yaml", "--out", "x", cwd=root)
    assert proc.returncode != 0 and "pretrain.stage2.steps: 7 is not a multiple of log_every (5)" in proc.stderr
    (root / "single.yaml").write_text(yaml.safe_dump(PRETRAIN | {"stage2": {"steps": 5, "tasks": ["digits"]}}))
    proc = cli("pretrain", "--config", "single.yaml", "--out", "x", cwd=root)
    assert proc.returncode != 0 and "'digits' has one modality" in proc.stderr and not (root / "x").exists()
    proc = cli("transfer", "--config", "pre.yaml", "--pretrained", "ft-missing", cwd=root)
    assert proc.returncode != 0 and "not a finished `highmodal pretrain` run" in proc.stderr


@pytest.mark.slow
def test_real_quick_pretrain_and_transfer(data_root, tmp_path, cli):
    """The shipped real-suite pretraining config in quick mode: both stages, then transfer."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "pretrain_real.yaml"
    cli("pretrain", "--config", str(config), "--quick", "--out", "run", "--data-root", str(data_root),
        "--no-progress", cwd=tmp_path, check=True)
    assert (tmp_path / "run" / "reconstructions" / "stage2-road_visible.png").is_file()
    cli("transfer", "--config", str(config), "--quick", "--pretrained", "run", "--out", "tr", "--data-root",
        str(data_root), "--no-progress", cwd=tmp_path, check=True)
    report = json.loads((tmp_path / "tr" / "transfer.json").read_text())
    assert set(report["retrieval"]) == {"avletters", "roadscene"} and report["quick"]


def test_shipped_configs_parse_and_match_the_suite():
    """configs/pretrain_real.yaml parses; configs/omnivec2_real.yaml is the real suite's OmniVec2 column."""
    from pathlib import Path

    from highmodal.config import ExperimentConfig, from_mapping, read_yaml, to_mapping
    from highmodal.experiments.pretraining import load_pretrain_config
    from highmodal.experiments.suite import extra_experiment, load_suite_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    pre = load_pretrain_config(configs / "pretrain_real.yaml")
    assert pre.stage2.tasks == ["avletters", "physionet2012", "roadscene"] and pre.transfer.seeds >= 3
    quick = load_pretrain_config(configs / "pretrain_real.yaml", quick=True)
    assert quick.stage1.steps <= 20 and quick.transfer.seeds == 1
    cfg, _ = load_suite_config("real")
    column = to_mapping(extra_experiment(cfg, cfg.models[0], False, {t["name"] for t in cfg.tasks}))
    plain = to_mapping(from_mapping(ExperimentConfig, read_yaml(configs / "omnivec2_real.yaml"), "omnivec2_real"))
    assert {k: v for k, v in plain.items() if k != "name"} == {k: v for k, v in column.items() if k != "name"}
