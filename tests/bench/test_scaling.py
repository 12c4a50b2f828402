"""``highmodal bench scaling``: the workload transforms behind each curve, the structure and arithmetic
of a tiny run (epoch = steps per epoch × step time), its plots and output folder, and clear errors
for bad options. No timing assertions: a test machine's speed says nothing about the library."""

import importlib.util
import json
import math

import pytest
import torch

from highmodal.bench.scaling import (
    RESULT_FILE,
    SEQUENCES,
    check_out,
    first_tasks,
    plot_scaling,
    run_scaling,
    tokens_per_sample,
    with_length,
    write_scaling,
)
from highmodal.bench.speed import get_workload
from highmodal.errors import HighmodalError

needs_reference = pytest.mark.skipif(
    importlib.util.find_spec("perceiver_pytorch") is None,
    reason="the reference needs perceiver-multi-modality-pytorch: "
           "pip install --no-deps 'perceiver-multi-modality-pytorch==1.4.0' einops",
)
TIMING = dict(rows=5, steps=1, warmup=1, repeats=1, threads=1)
TINY = dict(tasks=(1, 2), lengths=(12,), batches=(2, 3), batch=2, **TIMING)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workload():
    return get_workload("highmmt-4task")


@pytest.fixture(scope="module")
def tiny():
    """One tiny run of all three curves, and the points it reported as it went."""
    threads = torch.get_num_threads()
    seen: list[dict] = []
    result = run_scaling(**TINY, on_point=seen.append)
    assert torch.get_num_threads() == threads  # --threads does not leak out of the run
    return result, seen


def test_first_tasks_keeps_only_their_modalities(workload):
    two = first_tasks(workload, 2)
    assert [t.name for t in two.tasks] == ["mimic", "avmnist"]
    assert [s.name for s in two.specs] == ["static", "timeseries", "image", "audio"]
    assert first_tasks(workload, 4) == workload


def test_with_length_rescales_the_sequences_only(workload):
    long = with_length(workload, 400)
    before, after = ({s.name: s for s in w.specs} for w in (workload, long))
    for name, spec in after.items():
        if name in SEQUENCES:
            assert spec.shape == (400, before[name].channels)
            assert spec.num_freq_bands == before[name].num_freq_bands
        else:
            assert spec == before[name]
    assert long.tasks == workload.tasks
    assert tokens_per_sample(long) == {"mimic": 5 + 24 * 12, "avmnist": 2 * 49, "mosei": 1200, "urfunny": 1200}
    with pytest.raises(HighmodalError, match="feature1"):
        with_length(first_tasks(workload, 2), 100)  # no sequence modalities left to rescale


def test_tiny_run_has_the_requested_points(tiny):
    result, seen = tiny
    assert json.loads(json.dumps(result)) == result
    curves = result["curves"]
    assert seen == [p for points in curves.values() for p in points]
    assert {k: [p["x"] for p in v] for k, v in curves.items()} == {"tasks": [1, 2], "length": [12], "batch": [2, 3]}
    assert result["threads"] == 1 and result["settings"]["warmup"] == 2  # two warm-up steps at least
    for k, p in zip((1, 2), curves["tasks"], strict=True):
        assert len(p["tasks"]) == k and set(p["shapes"]) == {m for t in get_workload(
            "highmmt-4task").tasks[:k] for m in t.modalities}
    (length,) = curves["length"]
    assert all(length["shapes"][m][0] == 12 for m in SEQUENCES) and len(length["tasks"]) == 4
    assert [p["batch"] for p in curves["batch"]] == [2, 3]
    for p in seen:
        assert p["impl"] == "highmodal" and len(p["step_runs"]) == 1 and p["step_s"] > 0
        assert p["steps_per_epoch"] == math.ceil(5 / p["batch"])
        assert p["epoch_s"] == pytest.approx(p["steps_per_epoch"] * p["step_s"])
        assert p["samples_per_s"] == pytest.approx(p["batch"] * len(p["tasks"]) / p["step_s"])


def test_plots_and_output_folder(tiny, tmp_path):
    result, _ = tiny
    out = tmp_path / "scaling"
    check_out(out, overwrite=False)  # absent: fine
    paths = write_scaling(result, out)
    assert [p.name for p in paths] == [RESULT_FILE, "scaling-tasks.png", "scaling-length.png", "scaling-batch.png"]
    assert json.loads((out / RESULT_FILE).read_text()) == result
    for png in paths[1:]:
        assert png.stat().st_size > 1000 and png.read_bytes().startswith(PNG)
    with pytest.raises(HighmodalError, match="--overwrite"):
        check_out(out, overwrite=False)
    check_out(out, overwrite=True)
    only_batch = {**result, "curves": {"batch": result["curves"]["batch"]}}
    write_scaling(only_batch, out)  # the replaced run's other plots go
    assert {p.name for p in out.iterdir()} == {RESULT_FILE, "scaling-batch.png"}
    assert plot_scaling(only_batch, tmp_path / "plots") == [tmp_path / "plots" / "scaling-batch.png"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(HighmodalError, match="not a scaling output"):
        check_out(other, overwrite=True)


@pytest.mark.parametrize(("options", "message"), [
    ({"steps": 0}, "--steps must be at least 1"),
    ({"repeats": 0}, "--repeats must be at least 1"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"rows": 0}, "--rows must be at least 1"),
    ({"curves": ["tasks", "batches"]}, "unknown curve 'batches' \\(did you mean 'batch'\\?\\)"),
    ({"curves": []}, "name at least one"),
    ({"tasks": (1, 5)}, "tasks curve: points must be between 1 and 4"),
    ({"lengths": (0,)}, "length curve: points must be at least 1"),
    ({"batches": ()}, "batch curve: points must be at least 1"),
    ({"workload": "highmmt-5task"}, "unknown speed workload"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(HighmodalError, match=message):
        run_scaling(**options)


@needs_reference
def test_reference_is_measured_at_every_point():
    result = run_scaling(curves=["tasks"], tasks=(1,), batch=2, reference=True, **TIMING)
    assert [p["impl"] for p in result["curves"]["tasks"]] == ["highmodal", "reference"]
    assert result["settings"]["impls"] == ["highmodal", "reference"]


def test_cli_writes_points_json_and_plots_and_keeps_an_earlier_output(cli, tmp_path):
    out = tmp_path / "scaling"
    args = ("bench", "scaling", "--curves", "batch", "--batches", "2,4", "--rows", "8", "--steps", "1",
            "--repeats", "1", "--threads", "1", "--out", str(out))
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    points = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [p["x"] for p in points] == [2, 4]
    saved = json.loads((out / "scaling.json").read_text())
    assert [p["x"] for p in saved["curves"]["batch"]] == [2, 4]
    assert (out / "scaling-batch.png").stat().st_size > 0
    before = (out / "scaling.json").read_bytes()
    again = cli(*args)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    assert (out / "scaling.json").read_bytes() == before
    for flag, value, says in (("--curves", "epochs", "epochs"), ("--batches", "8,x", "--batches: 'x'")):
        bad = cli("bench", "scaling", flag, value, "--out", str(tmp_path / "other"))
        assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and says in bad.stderr
        assert not (tmp_path / "other").exists()
