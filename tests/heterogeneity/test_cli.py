"""``highmodal heterogeneity`` end to end on package-shipped data (real subprocesses): the full
matrix, the O(M) sample, completion against held-out entries, groups and plots."""

import json

import numpy as np
import pytest
import yaml

from tests.conftest import run_cli

DEMO_TASKS = [
    {"name": "digits", "source": "sklearn_digits"},
    {"name": "basic_motions", "source": "basic_motions", "batch_size": 8},
    {"name": "japanese_vowels", "source": "japanese_vowels", "batch_size": 16},
    {"name": "italy_power", "source": "italy_power_demand", "batch_size": 8},
    {"name": "breast_cancer", "source": "breast_cancer"},
    {"name": "diabetes", "source": "diabetes"},
]
# 49 seeded training runs (the full matrix, in a pool of 2 workers). At 3 epochs on 192 rows completion
# beats the mean on the held-out entries by 13 % (RMSE 0.079 vs 0.090), at half the cost of 5 epochs on
# 256 rows (4 %). The O(M) sample is checked on the smaller study below.
SUITE = {
    "name": "demo-heterogeneity", "tasks": DEMO_TASKS,
    "quick": {"tasks": [t["name"] for t in DEMO_TASKS], "epochs": 3, "max_train": 192, "max_eval": 256,
              "preset": "large"},
    "heterogeneity": {"k_unimodal": 3},
}


def prepared(factory, config: dict, *commands: list[str]):
    """A folder holding ``config`` as suite.yaml, after running each CLI command in it."""
    root = factory.mktemp(config["name"])
    (root / "suite.yaml").write_text(yaml.safe_dump(config))
    for args in commands:
        run_cli(*args, "--no-progress", cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    het = ["heterogeneity", "--config", "suite.yaml", "--quick", "--out"]
    root = prepared(tmp_path_factory, SUITE, [*het, "full", "--full"])
    return {"full": json.loads((root / "full" / "heterogeneity.json").read_text()), "root": root}


def test_full_matrix_completion_beats_the_mean_on_held_out_entries(runs):
    uni = runs["full"]["unimodal"]
    assert len(uni["units"]) == 7 and uni["entries_measured"] == uni["entries_total"] == 42 and uni["runs"] == 49
    h = uni["holdout"]
    assert h["held_out"] >= 10 and h["rmse_completion"] < h["rmse_mean_predictor"]
    assert "skipped" in runs["full"]["crossmodal"]  # one multimodal task: a single pair


def test_sample_is_o_of_m_and_measures_the_same_numbers(runs, study_root):
    assert runs["full"]["unimodal"]["sampled_vs_full"]["entries_sampled"] == 21  # 3 per unit of 7
    full, sampled = (json.loads((study_root / n / "heterogeneity.json").read_text())["unimodal"]
                     for n in ("het-full", "het"))
    assert sampled["entries_measured"] == 8 and sampled["runs"] == 4 + 8  # 2 per unit
    t_full, t_s = np.array(full["transfer"]), np.array(sampled["transfer"])
    measured = np.array(sampled["measured"])
    # seeded runs give the same numbers in any order, in this process or in a pool's workers
    np.testing.assert_allclose(t_s[measured], t_full[measured], atol=1e-6)


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


STUDY = {
    "name": "demo-study", "seed": 0, "tasks": [DEMO_TASKS[i] for i in (0, 1, 4)], "model": {"preset": "tiny"},
    "quick": {"tasks": [DEMO_TASKS[i]["name"] for i in (0, 1, 4)], "epochs": 1, "max_train": 96, "max_eval": 96,
              "preset": "tiny"},
    "heterogeneity": {"k_unimodal": 2, "entries_per_unit": 2},
}


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    het = ["heterogeneity", "--config", "suite.yaml", "--quick", "--out"]
    return prepared(tmp_path_factory, STUDY, [*het, "het", "--workers", "1"], [*het, "het-full", "--full"])


VARIANTS = "heterogeneity_aware,share_all,share_none,random_groups,feature_groups,no_pretraining"


@pytest.fixture(scope="module")
def ablations(study_root):
    run_cli("ablations", "--config", "suite.yaml", "--quick", "--heterogeneity", "het", "--out", "abl", "--seeds",
            "2", "--variants", VARIANTS, "--no-progress", cwd=study_root, check=True)
    return study_root / "abl"


def test_ablations_train_each_grouping_from_the_shared_model(study_root, ablations):
    variants = VARIANTS
    rows = json.loads((study_root / "abl" / "ablations.json").read_text())["variants"]
    assert list(rows) == variants.split(",")
    assert all(r["seeds"] == 2 and len(r["skills"]) == 2 and np.isfinite(r["mean"]) for r in rows.values())
    het = rows["heterogeneity_aware"]["groups"]["unimodal_groups"]
    assert sorted(set(het.values())) == [0, 1]
    # random groups keep the group sizes, hence the parameter count
    assert sorted(rows["random_groups"]["groups"]["unimodal_groups"].values()) == sorted(het.values())
    assert rows["random_groups"]["params"] == rows["heterogeneity_aware"]["params"] > rows["share_all"]["params"]
    assert rows["share_none"]["params"] > rows["heterogeneity_aware"]["params"]
    assert (study_root / "abl" / "shared-all" / "seed1" / "model.safetensors").is_file()
    for seed in (0, 1):  # each seed's variant starts from that seed's homogeneous model
        summary = json.loads((study_root / "abl" / "heterogeneity_aware" / f"seed{seed}" / "summary.json").read_text())
        assert summary["init"].endswith(f"shared-all/seed{seed}")
    assert json.loads((study_root / "abl" / "no_pretraining" / "seed0" / "summary.json").read_text())["init"] is None


def test_pareto_sweeps_group_counts(study_root, cli):
    cli("pareto", "--config", "suite.yaml", "--quick", "--heterogeneity", "het", "--out", "par", "--seeds", "1",
        "--no-progress", cwd=study_root, check=True)
    rows = json.loads((study_root / "par" / "pareto.json").read_text())["variants"]
    assert list(rows) == ["k_u=1,k_c=1", "k_u=2,k_c=1", "k_u=4,k_c=1"]  # 4 unimodal units, no pairs
    params = [r["params"] for r in rows.values()]
    assert params == sorted(params) and len(set(params)) == 3
    assert (study_root / "par" / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_variant_is_named(study_root, cli):
    proc = cli("ablations", "--config", "suite.yaml", "--quick", "--heterogeneity", "het", "--out", "x",
               "--variants", "share_al", cwd=study_root)
    assert proc.returncode == 2 and "did you mean 'share_all'" in proc.stderr and not (study_root / "x").exists()


def test_docs_json_has_the_documented_schema(study_root, ablations, tmp_path):
    from highmodal.heterogeneity.report import build

    doc = build(study_root / "het", study_root / "het-full", ablations, None, tmp_path)
    on_disk = json.loads((tmp_path / "heterogeneity.json").read_text())
    assert on_disk["command"].startswith("highmodal ablations") and doc["command"] == on_disk["command"]
    for name in ("heterogeneity_aware", "share_all", "share_none", "random_groups"):
        assert set(on_disk["ablations"][name]) == {"mean", "std", "seeds", "params"}
    cost = on_disk["matrix_cost"]
    assert (cost["entries_measured"], cost["entries_total"]) == (8, 12)
    assert cost["full_s"] > 0 and cost["sampled_s"] > 0 and cost["runs_sampled"] < cost["runs_full"]
    assert (tmp_path / "heterogeneity" / "full_unimodal_heatmap.png").is_file()


def test_reanalyse_reuses_measurements_without_training(runs, study_root, cli):
    root = runs["root"]
    proc = cli("heterogeneity", "--config", "suite.yaml", "--quick", "--reanalyse", "full", "--out", "re",
               "--no-progress", cwd=root, check=True)
    assert "scratch runs" not in proc.stderr
    again = json.loads((root / "re" / "heterogeneity.json").read_text())["unimodal"]
    full = runs["full"]["unimodal"]
    assert again["transfer_raw"] == full["transfer_raw"] and again["seconds"] == full["seconds"]
    np.testing.assert_allclose(again["distance"], full["distance"])
    other = cli("heterogeneity", "--config", "suite.yaml", "--quick", "--reanalyse", str(study_root / "het"),
                "--out", "bad", cwd=root)
    assert other.returncode == 2 and "are not this suite's" in other.stderr and not (root / "bad").exists()
