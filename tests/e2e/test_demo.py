"""`highmodal demo` through the real CLI (one epoch), and `evaluate` reproducing its table."""

import json


def test_demo_runs_and_evaluate_reproduces(tmp_path, cli):
    run = tmp_path / "demo"
    # a new interpreter, as a user starts it (the other CLI tests fork a preloaded one)
    proc = cli("demo", "--out", str(run), "--epochs", "1", "--no-progress", check=True, fresh=True)
    for task in ("digits", "basic_motions", "japanese_vowels", "italy_power", "breast_cancer", "diabetes"):
        assert task in proc.stdout
    assert "accelerometer:imu, gyroscope:imu" in proc.stdout
    table = proc.stdout[proc.stdout.index("test metrics"):proc.stdout.index("mean skill")]
    printed = json.loads((run / "eval_test.json").read_text())
    again = cli("evaluate", str(run), "--split", "test", "--json", str(tmp_path / "e.json"), check=True)
    assert table in again.stdout, "evaluate printed a different table"
    assert json.loads((tmp_path / "e.json").read_text())["tasks"] == printed["tasks"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["arch"] == "highmmt" and meta["preset"] == "large" and meta["params"] > 400_000


def test_datasets_lists_loaders(cli):
    proc = cli("datasets", check=True)
    for name in ("sklearn_digits", "basic_motions", "japanese_vowels", "npz", "csv"):
        assert name in proc.stdout
    assert "present" in proc.stdout
