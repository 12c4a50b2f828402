"""``highmodal heterogeneity`` end to end on package-shipped data (real subprocesses): the full
matrix, the O(M) sample, completion against held-out entries, groups and plots."""

import json

import numpy as np
import pytest
import yaml

DEMO_TASKS = [
    {"name": "digits", "source": "sklearn_digits"},
    {"name": "basic_motions", "source": "basic_motions", "batch_size": 8},
    {"name": "japanese_vowels", "source": "japanese_vowels", "batch_size": 16},
    {"name": "italy_power", "source": "italy_power_demand", "batch_size": 8},
    {"name": "breast_cancer", "source": "breast_cancer"},
    {"name": "diabetes", "source": "diabetes"},
]
SUITE = {
    "name": "demo-heterogeneity", "tasks": DEMO_TASKS,
    "quick": {"tasks": [t["name"] for t in DEMO_TASKS], "epochs": 5, "max_train": 256, "max_eval": 256,
              "preset": "large"},
    "heterogeneity": {"k_unimodal": 3},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("het")
    (root / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    for name, extra in (("full", ["--full"]), ("sampled", [])):
        run_cli("heterogeneity", "--config", "suite.yaml", "--quick", "--out", name, "--no-progress", *extra,
                cwd=root, check=True)
    return {n: json.loads((root / n / "heterogeneity.json").read_text()) for n in ("full", "sampled")} | {"root": root}


def test_full_matrix_completion_beats_the_mean_on_held_out_entries(runs):
    uni = runs["full"]["unimodal"]
    assert len(uni["units"]) == 7 and uni["entries_measured"] == uni["entries_total"] == 42 and uni["runs"] == 49
    h = uni["holdout"]
    assert h["held_out"] >= 10 and h["rmse_completion"] < h["rmse_mean_predictor"]
    assert "skipped" in runs["full"]["crossmodal"]  # one multimodal task: a single pair


def test_sample_is_o_of_m_and_measures_the_same_numbers(runs):
    full, sampled = runs["full"]["unimodal"], runs["sampled"]["unimodal"]
    assert sampled["entries_measured"] == 21 and sampled["runs"] == 7 + 21  # 3 per unit
    t_full, t_s = np.array(full["transfer"]), np.array(sampled["transfer"])
    measured = np.array(sampled["measured"])
    np.testing.assert_allclose(t_s[measured], t_full[measured], atol=1e-6)  # seeded runs, any order
    assert full["sampled_vs_full"]["entries_sampled"] == 21


def test_outputs_groups_and_plots(runs):
    root = runs["root"]
    groups = json.loads((root / "full" / "groups.json").read_text())["unimodal_groups"]
    assert set(groups) == set(runs["full"]["unimodal"]["units"]) and set(groups.values()) == {0, 1, 2}
    for name in ("unimodal_heatmap.png", "unimodal_dendrogram.png"):
        assert (root / "full" / name).read_bytes()[:4] == b"\x89PNG"
    d = np.array(runs["full"]["unimodal"]["distance"])
    assert np.allclose(d, d.T) and (d >= 0).all()


def test_existing_output_is_kept(runs, cli):
    proc = cli("heterogeneity", "--config", "suite.yaml", "--quick", "--out", "full", cwd=runs["root"])
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
