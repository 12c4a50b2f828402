"""Bad input gets one clear line naming the file/field, exit code 2, no traceback, nothing lost."""

import numpy as np
import pytest
import yaml

from highmodal.cli import main


def write_npz_config(root, task_overrides=None, arrays=None, top=None):
    rng = np.random.default_rng(0)
    arrays = arrays if arrays is not None else {"X": rng.normal(size=(60, 20, 2)).astype(np.float32),
                                                "y": np.arange(60) % 3}
    np.savez(root / "d.npz", **arrays)
    task = {"name": "t", "source": "npz", "path": "d.npz",
            "modalities": {"sig": {"kind": "time_series", "key": "X"}},
            "target": {"kind": "classification", "key": "y"}}
    task.update(task_overrides or {})
    cfg = {"name": "bad", "tasks": [task], "model": {"preset": "tiny"}, "train": {"epochs": 1}}
    cfg.update(top or {})
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


CASES = {
    "unknown top-level key": (dict(top={"trian": {}}), ["unknown key 'trian'", "did you mean 'train'"]),
    "unknown train key": (dict(top={"train": {"epochz": 3}}), ["cfg.yaml", "'epochz'", "did you mean 'epochs'"]),
    "wrong type": (dict(top={"train": {"epochs": "many"}}), ["train.epochs", "expected an integer"]),
    "missing data file": (dict(task_overrides={"path": "nope.npz"}), ["nope.npz", "not found"]),
    "missing key in npz": (dict(task_overrides={"modalities": {"sig": {"kind": "time_series", "key": "Z"}}}),
                           ["d.npz", "'Z' not found"]),
    "wrong shape": (dict(task_overrides={"modalities": {"sig": {"kind": "time_series", "key": "X",
                                                                 "shape": [30, 2]}}}),
                    ["d.npz", "expected per-sample shape (30, 2)", "(20, 2)"]),
    "label out of range": (dict(task_overrides={"target": {"kind": "classification", "key": "y",
                                                           "num_classes": 2}}),
                           ["d.npz", "label 2 is out of range 0..1"]),
    "unknown kind": (dict(task_overrides={"modalities": {"sig": {"kind": "smell", "key": "X"}}}),
                     ["'smell' is not one of"]),
    "unknown source": (dict(task_overrides={"source": "npzz"}), ["unknown data source 'npzz'", "did you mean 'npz'"]),
    "no modalities": (dict(task_overrides={"modalities": {}}), ["lists no modalities"]),
    "NaN features": (dict(arrays={"X": np.full((60, 20, 2), np.nan, np.float32), "y": np.arange(60) % 3}),
                     ["'sig'", "NaN"]),
    "float labels": (dict(arrays={"X": np.zeros((60, 20, 2), np.float32), "y": np.linspace(0, 1, 60)}),
                     ["must be integers or strings"]),
    "unknown preset": (dict(top={"model": {"preset": "huge"}}), ["unknown HighMMT preset 'huge'"]),
    "text features": (dict(arrays={"X": np.array([["a"] * 20] * 60), "y": np.arange(60) % 3}),
                      ["'X'", "expected a numeric array"]),
    "mask of wrong shape": (dict(arrays={"X": np.zeros((60, 20, 2), np.float32), "M": np.ones((60, 7), bool),
                                         "y": np.arange(60) % 3},
                                 task_overrides={"modalities": {"sig": {"kind": "time_series", "key": "X",
                                                                        "mask_key": "M"}}}),
                            ["mask 'M' must have shape (60, 20)"]),
    "split of wrong length": (dict(arrays={"X": np.zeros((60, 20, 2), np.float32), "y": np.arange(60) % 3,
                                           "split": np.array(["train"] * 10)}), ["split array 'split' has 10"]),
    "split without train": (dict(arrays={"X": np.zeros((60, 20, 2), np.float32), "y": np.arange(60) % 3,
                                         "split": np.array(["test"] * 60)}), ["marks no 'train' samples"]),
    "text regression target": (dict(arrays={"X": np.zeros((60, 20, 2), np.float32), "y": np.array(["x"] * 60)},
                                    task_overrides={"target": {"kind": "regression", "key": "y"}}),
                               ["regression target must be numeric"]),
    "unknown target kind": (dict(task_overrides={"target": {"kind": "ranking", "key": "y"}}),
                            ["target.kind", "'ranking' is not one of"]),
    "single class": (dict(arrays={"X": np.zeros((60, 20, 2), np.float32), "y": np.zeros(60, int)}),
                     ["at least 2 distinct labels"]),
    "negative weight": (dict(task_overrides={"weight": -1}), ["weight must be > 0"]),
    "batch size of wrong type": (dict(task_overrides={"batch_size": "big"}), ["batch_size", "expected an integer"]),
    "unknown normalisation": (dict(task_overrides={"modalities": {"sig": {"kind": "time_series", "key": "X",
                                                                           "normalize": "zscore"}}}),
                              ["normalize", "'zscore' is not one of"]),
    "negative learning rate": (dict(top={"train": {"lr": -1}}), ["train.lr", "out of range"]),
    "metric for another target kind": (dict(task_overrides={"metric": "mae"}), ["metric 'mae' is not one of"]),
    "tasks not a list": (dict(top={"tasks": "all"}), ["tasks", "expected a list"]),
    "no tasks": (dict(top={"tasks": []}), ["lists no tasks"]),
    "unknown model option": (dict(top={"model": {"options": {"num_latent": 4}}}),
                             ["'num_latent'", "did you mean 'num_latents'"]),
    "zero micro-batches": (dict(top={"train": {"grad_accum": 0}}), ["train.grad_accum", "out of range"]),
    "step larger than the memory budget": (dict(top={"train": {"memory_budget_gb": 1e-4}}),
                                           ["train: a step needs about", "but only 0.1 MiB is available"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_or_data(case, tmp_path, capsys):
    kwargs, needles = CASES[case]
    cfg = write_npz_config(tmp_path, **kwargs)
    code, err = run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")], "temporary run dir left behind"


def test_invalid_yaml_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("name: x\ntasks: [\n  - {a: 1\n")
    code, err = run(capsys, "train", "--config", str(cfg))
    assert code == 2 and "broken.yaml" in err and "line" in err


def test_missing_config_file(tmp_path, capsys):
    code, err = run(capsys, "train", "--config", str(tmp_path / "none.yaml"))
    assert code == 2 and "none.yaml" in err and "not found" in err


def test_existing_run_dir_is_kept(tmp_path, capsys):
    cfg = write_npz_config(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    code, err = run(capsys, "train", "--config", str(cfg), "--out", str(run_dir))
    assert code == 2 and "--overwrite" in err
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_failed_overwrite_keeps_old_run(tmp_path, capsys):
    cfg = write_npz_config(tmp_path, task_overrides={"path": "missing.npz"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    code, _ = run(capsys, "train", "--config", str(cfg), "--out", str(run_dir), "--overwrite")
    assert code == 2
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_evaluate_not_a_run_dir(tmp_path, capsys):
    code, err = run(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "model.json" in err and "not found" in err


def test_corrupt_npz(tmp_path, capsys):
    cfg = write_npz_config(tmp_path)
    (tmp_path / "d.npz").write_bytes(b"not a zip file at all")
    code, err = run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 2 and "d.npz" in err and "not a readable .npz" in err


def test_subprocess_error_has_no_traceback(tmp_path, cli):
    cfg = write_npz_config(tmp_path, top={"train": {"epochz": 1}})
    proc = cli("train", "--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "did you mean 'epochs'" in proc.stderr


def test_unknown_flag_exits_2(cli):
    proc = cli("train", "--config", "x.yaml", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def test_duplicate_task_names(tmp_path, capsys):
    cfg = write_npz_config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["tasks"] = data["tasks"] * 2
    cfg.write_text(yaml.safe_dump(data))
    code, err = run(capsys, "train", "--config", str(cfg))
    assert code == 2 and "task names must be unique; repeated: t" in err


def test_corrupt_csv(tmp_path, capsys):
    (tmp_path / "t.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x00")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "c", "tasks": [{"name": "t", "source": "csv", "path": "t.csv",
                                                           "target": {"kind": "classification", "key": "y"}}]}))
    code, err = run(capsys, "train", "--config", str(cfg))
    assert code == 2 and "t.csv" in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    cfg = write_npz_config(root)
    assert main(["train", "--config", str(cfg), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


def copy_run(run, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_tampered_weights_are_refused(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (run / "model.safetensors").write_bytes(bytes(data))
    code, err = run_eval(capsys, run)
    assert code == 2 and "sha256 does not match model.json" in err


def test_pickle_weights_are_refused(trained, tmp_path, capsys):
    import torch

    run = copy_run(trained, tmp_path)
    torch.save({"w": torch.zeros(2)}, run / "model.safetensors")
    code, err = run_eval(capsys, run)
    assert code == 2 and "pickle" in err and "refusing" in err
    (run / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, run / "model.pt")
    code, err = run_eval(capsys, run)
    assert code == 2 and "model.pt: refusing a pickle file" in err


def test_model_from_another_format_version(trained, tmp_path, capsys):
    import json

    run = copy_run(trained, tmp_path)
    meta = json.loads((run / "model.json").read_text())
    meta["format_version"], meta["highmodal_version"] = 99, "9.0.0"
    (run / "model.json").write_text(json.dumps(meta))
    code, err = run_eval(capsys, run)
    assert code == 2 and "format 99 (written by highmodal 9.0.0)" in err and "reads format 1" in err


def test_predict_input_of_wrong_shape(trained, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", sig=np.zeros((4, 21, 2), np.float32))
    code, err = run(capsys, "predict", str(trained), "--task", "t", "--input", str(tmp_path / "in.npz"),
                    "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "in.npz" in err and "expected shape (N, 20, 2)" in err
    assert not (tmp_path / "p.csv").exists()


def run_eval(capsys, run_dir):
    code = main(["evaluate", str(run_dir)])
    return code, capsys.readouterr().err
