"""OmniVec2 through the real CLI: train/evaluate/predict with --model, probe on unseen tasks against a
random-init baseline, the variants study, and `highmodal modalities`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.experiments.probe import tokenizer_for
from highmodal.modalities.spec import KINDS, ModalitySpec
from highmodal.training.checkpoint import load

TRAIN = {
    "name": "ov", "seed": 0,
    "tasks": [{"name": "digits", "source": "sklearn_digits"},
              {"name": "motions", "source": "basic_motions", "batch_size": 8}],
    "model": {"name": "highmmt", "preset": "large"},
    "train": {"epochs": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("ov")
    (root / "train.yaml").write_text(yaml.safe_dump(TRAIN))
    proc = run_cli("train", "--config", "train.yaml", "--model", "omnivec2", "--preset", "tiny",
                   "--balance", "uncertainty", "--out", "run", "--no-progress", cwd=root, check=True)
    return root, proc


def test_train_evaluate_predict_with_model_flag(trained, cli):
    root, proc = trained
    assert "omnivec2 (tiny)" in proc.stdout
    meta = json.loads((root / "run" / "model.json").read_text())
    assert meta["arch"] == "omnivec2" and meta["preset"] == "tiny" and meta["config"]["inference"] == "single"
    config = yaml.safe_load((root / "run" / "config.yaml").read_text())
    assert config["model"] == {"name": "omnivec2", "preset": "tiny", "options": {}}
    assert config["train"]["balance"] == "uncertainty" and config["train"]["sampler"] is None
    first = json.loads((root / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first["loss_weights"]) == {"digits", "motions"}
    saved = json.loads((root / "run" / "eval_test.json").read_text())
    cli("evaluate", "run", "--json", "again.json", cwd=root, check=True)
    assert json.loads((root / "again.json").read_text())["tasks"] == saved["tasks"]
    cli("evaluate", "run", "--modalities", "accelerometer", "--json", "acc.json", cwd=root, check=True)
    assert "motions" in json.loads((root / "acc.json").read_text())["tasks"]
    suite = build_suite(TRAIN["tasks"], LoadContext(seed=0))
    test = suite["motions"].splits["test"]
    np.savez(root / "in.npz", accelerometer=test.inputs["accelerometer"], gyroscope=test.inputs["gyroscope"])
    cli("predict", "run", "--task", "motions", "--input", "in.npz", "--out", "pred.csv", cwd=root, check=True)
    assert len((root / "pred.csv").read_text().splitlines()) == len(test) + 1


def test_probe_on_unseen_tasks_against_random_init(trained, cli):
    root, _ = trained
    probe = {"name": "new", "tasks": [{"name": "vowels", "source": "japanese_vowels", "batch_size": 16},
                                      {"name": "cancer", "source": "breast_cancer"}],
             "probe": {"epochs": 3}}
    (root / "probe.yaml").write_text(yaml.safe_dump(probe))
    proc = cli("probe", "run", "--config", "probe.yaml", "--out", "probe", "--no-progress", cwd=root, check=True)
    report = json.loads((root / "probe" / "probe.json").read_text())
    assert set(report["tasks"]) == {"vowels", "cancer"}
    for entry in report["tasks"].values():
        assert set(entry["trained"]) == set(entry["random_init"]) and "random and frozen" in entry["tokenizers"][0]
    assert "random_init" in proc.stdout
    for label in ("trained", "random_init"):
        assert json.loads((root / "probe" / label / "model.json").read_text())["arch"] == "probe"
    again = cli("probe", "run", "--config", "probe.yaml", "--out", "probe", cwd=root)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_probe_reuses_a_trained_tokenizer_of_the_same_family(trained):
    root, _ = trained
    model = load(root / "run")
    xray = ModalitySpec("scan", "xray", (8, 8, 1), mean=(3.0,), std=(5.0,))
    tok, note = tokenizer_for(model, xray)
    assert "trained 'digit_pixels' (image) tokenizer" in note
    own = model.tokenizers["digit_pixels"]
    for k, v in own.state_dict().items():
        assert torch.equal(tok.state_dict()[k], v)
    x = torch.rand(2, 8, 8, 1) * 16
    torch.testing.assert_close(tok(x)[0], own((x - 3.0) / 5.0 * own.spec.std[0] + own.spec.mean[0])[0],
                               rtol=1e-4, atol=1e-4)  # the new modality's own normalisation
    same, note = tokenizer_for(model, model.modalities["digit_pixels"])
    assert same is None and "own tokenizer" in note


def test_probe_refuses_a_model_without_embeddings(tmp_path, cli):
    # any finished HighMMT run: the 34 training rows of motions make it a five-step one
    highmmt = TRAIN | {"tasks": TRAIN["tasks"][1:], "train": {"epochs": 1}, "model": {"preset": "tiny"}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(highmmt))
    cli("train", "--config", "t.yaml", "--out", "run", "--no-progress", cwd=tmp_path, check=True)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "p", "tasks": [{"name": "c", "source": "breast_cancer"}]}))
    proc = cli("probe", "run", "--config", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "probe an omnivec2 run" in proc.stderr
    with pytest.raises(HighmodalError, match="probe an omnivec2 run"):
        tokenizer_for(load(tmp_path / "run"), ModalitySpec("x", "tabular", (3, 1)))


def test_variants_quick(tmp_path, cli):
    suite = {k: v for k, v in TRAIN.items() if k != "train"} | {
        "train": {"epochs": 3},
        "models": [{"label": "ov", "model": {"name": "omnivec2", "preset": "tiny"}, "train": {"balance": "dwa"}}],
        "variants": {"model": "ov"},
        "quick": {"tasks": ["digits", "motions"], "epochs": 1, "max_train": 48, "max_eval": 32},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    proc = cli("variants", "--config", "s.yaml", "--quick", "--variants", "omnivec2,unified_head",
               "--out", "v", "--no-progress", cwd=tmp_path, check=True)
    report = json.loads((tmp_path / "v" / "variants.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["omnivec2", "unified_head"]
    assert report["rows"][1]["options"] == {"head": "unified"} and report["rows"][1]["params"] > 0
    assert "| unified_head |" in proc.stdout
    again = cli("variants", "--config", "s.yaml", "--quick", "--variants", "omnivec2,unified_head", "--out", "v",
                "--reuse", "--no-progress", cwd=tmp_path, check=True)
    assert "reusing" in again.stdout
    assert json.loads((tmp_path / "v" / "variants.json").read_text())["rows"] == report["rows"]
    bad = cli("variants", "--config", "s.yaml", "--quick", "--variants", "unified_heads", "--out", "w", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown variant 'unified_heads'" in bad.stderr and "unified_head" in bad.stderr


def test_modalities_lists_every_kind(cli):
    rows = json.loads(cli("modalities", "--json", check=True).stdout)
    assert [r["kind"] for r in rows] == list(KINDS)
    assert all(r["omnivec2_tokenizer"] and r["tokenizer_design"] and r["highmmt_standardizer"] for r in rows)
    text = cli("modalities", check=True).stdout
    assert "hyperspectral" in text and "SpectralGroupEmbedding" in text
