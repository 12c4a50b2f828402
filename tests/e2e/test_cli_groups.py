"""Grouped fine-tuning through the CLI: ``train --init RUN --groups groups.json``."""

import json

import yaml

CONFIG = {"name": "base", "seed": 0,
          "tasks": [{"name": "cancer", "source": "breast_cancer"},
                    {"name": "basic_motions", "source": "basic_motions", "batch_size": 8}],
          "model": {"preset": "tiny"}, "train": {"epochs": 1}}


def test_grouped_finetune_from_a_shared_run(tmp_path, cli):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(CONFIG))
    cli("train", "--config", "exp.yaml", "--out", "shared", "--no-progress", cwd=tmp_path, check=True)
    (tmp_path / "groups.json").write_text(json.dumps({"unimodal_groups": {"basic_motions/gyroscope": 1}}))
    proc = cli("train", "--config", "exp.yaml", "--init", "shared", "--groups", "groups.json", "--out", "grouped",
               "--no-progress", cwd=tmp_path, check=True)
    assert "initialised from shared" in proc.stdout
    shared, grouped = (json.loads((tmp_path / r / "model.json").read_text()) for r in ("shared", "grouped"))
    assert grouped["config"]["unimodal_groups"] == {"basic_motions/gyroscope": 1}
    assert grouped["params"] > shared["params"]
    assert json.loads((tmp_path / "grouped" / "summary.json").read_text())["init"] == "shared"
    cli("evaluate", "grouped", "--split", "val", cwd=tmp_path, check=True)


def test_bad_groups_file_is_named(tmp_path, cli):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "groups.json").write_text(json.dumps({"unimodal_groups": {"basic_motions/gyro": 1}}))
    proc = cli("train", "--config", "exp.yaml", "--groups", "groups.json", "--out", "r", cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean 'basic_motions/gyroscope'" in proc.stderr
    (tmp_path / "groups.json").write_text("[1, 2]")
    proc = cli("train", "--config", "exp.yaml", "--groups", "groups.json", "--out", "r", cwd=tmp_path)
    assert proc.returncode == 2 and "groups.json: expected a JSON object" in proc.stderr
    assert not (tmp_path / "r").exists()
