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
    "unknown model option": (dict(top={"model": {"options": {"num_latent": 4}}}),
                             ["'num_latent'", "did you mean 'num_latents'"]),
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
