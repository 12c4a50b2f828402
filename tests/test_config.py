"""Strict YAML → dataclass configuration: errors name the field and suggest fixes."""

from __future__ import annotations

import pytest

from highmodal.config import ExperimentConfig, ModelConfig, TrainConfig, from_mapping, read_yaml
from highmodal.errors import HighmodalError


def _exp(**extra):
    return {"name": "run", "tasks": [{"source": "digits"}], **extra}


def test_valid_experiment_round_trip():
    cfg = from_mapping(
        ExperimentConfig,
        _exp(seed=3, model={"preset": "tiny", "options": {"num_latents": 4}}, train={"epochs": 2, "lr": 1}),
        "exp.yaml",
    )
    assert cfg.name == "run" and cfg.seed == 3
    assert cfg.tasks == [{"source": "digits"}]
    assert cfg.model == ModelConfig(name="highmmt", preset="tiny", options={"num_latents": 4})
    assert cfg.train.epochs == 2
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for float
    assert cfg.train.batch_size == TrainConfig().batch_size  # defaults kept


def test_unknown_key_did_you_mean():
    with pytest.raises(HighmodalError, match=r"train: unknown key 'epochz' \(did you mean 'epochs'\?\)"):
        from_mapping(TrainConfig, {"epochz": 3}, "train")
    with pytest.raises(HighmodalError, match=r"exp\.yaml\.train: unknown key 'epochz'.*did you mean 'epochs'"):
        from_mapping(ExperimentConfig, _exp(train={"epochz": 3}), "exp.yaml")
    with pytest.raises(HighmodalError, match=r"unknown key 'zzz'; allowed: epochs") as e:
        from_mapping(TrainConfig, {"zzz": 3}, "train")
    assert "did you mean" not in str(e.value)


@pytest.mark.parametrize(
    ("train", "pattern"),
    [
        ({"epochs": "ten"}, r"train\.epochs: expected an integer, got 'ten'"),
        ({"epochs": 2.5}, r"train\.epochs: expected an integer"),
        ({"epochs": True}, r"train\.epochs: expected an integer"),
        ({"lr": "fast"}, r"train\.lr: expected a number"),
        ({"lr": False}, r"train\.lr: expected a number"),
        ({"grad_clip": "x"}, r"train\.grad_clip: expected a number"),
        ({"device": 0}, r"train\.device: expected a string"),
    ],
)
def test_wrong_type_names_field_path(train, pattern):
    with pytest.raises(HighmodalError, match=pattern):
        from_mapping(ExperimentConfig, _exp(train=train), "exp")


def test_wrong_type_nested_list_and_mapping():
    with pytest.raises(HighmodalError, match=r"exp\.tasks: expected a list"):
        from_mapping(ExperimentConfig, {"name": "r", "tasks": {"source": "digits"}}, "exp")
    with pytest.raises(HighmodalError, match=r"exp\.tasks\[1\]: expected a mapping"):
        from_mapping(ExperimentConfig, {"name": "r", "tasks": [{}, "digits"]}, "exp")
    with pytest.raises(HighmodalError, match=r"exp\.train: expected a mapping"):
        from_mapping(ExperimentConfig, _exp(train=[1]), "exp")


def test_optional_fields_accept_null():
    cfg = from_mapping(TrainConfig, {"grad_clip": None, "threads": None}, "train")
    assert cfg.grad_clip is None and cfg.threads is None
    assert from_mapping(TrainConfig, None, "train") == TrainConfig()


@pytest.mark.parametrize(
    ("key", "value"),
    [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("warmup_frac", 1.0), ("min_lr_ratio", 1.5),
     ("grad_clip", 0.0), ("threads", 0), ("weight_decay", -0.1)],
)
def test_out_of_range(key, value):
    with pytest.raises(HighmodalError, match=rf"train\.{key}: value {value!r} is out of range"):
        from_mapping(TrainConfig, {key: value}, "train")


def test_missing_required_key():
    with pytest.raises(HighmodalError, match=r"exp: missing required key 'tasks'"):
        from_mapping(ExperimentConfig, {"name": "run"}, "exp")
    with pytest.raises(HighmodalError, match=r"exp: missing required key 'name'"):
        from_mapping(ExperimentConfig, {"tasks": []}, "exp")


def test_read_yaml_valid(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("name: run\ntasks:\n  - source: digits\n")
    assert read_yaml(p) == {"name": "run", "tasks": [{"source": "digits"}]}


def test_read_yaml_invalid_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: run\ntasks: []\n  oops: indented\n")
    with pytest.raises(HighmodalError) as e:
        read_yaml(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "not valid YAML" in msg
    assert "line 3" in msg


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")])
def test_read_yaml_non_mapping_rejected(tmp_path, text, kind):
    p = tmp_path / "top.yaml"
    p.write_text(text)
    with pytest.raises(HighmodalError, match=rf"top\.yaml: expected a mapping at the top level, got {kind}"):
        read_yaml(p)


def test_read_yaml_missing_file(tmp_path):
    with pytest.raises(HighmodalError, match="config file not found"):
        read_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("train", "message"), [
    ({"amp": "fp16"}, "train.amp: 'fp16' is not one of bf16"),
    ({"amp": "bf61"}, "did you mean 'bf16'"),
    ({"compile": True, "parallel": "fsdp"}, "train.compile: not supported with train.parallel: fsdp"),
])
def test_speed_options_are_checked(train, message):
    with pytest.raises(HighmodalError, match=message):
        TrainConfig(**train)
