"""PhysioNet 2012 on its real files: counts, the set-b test split, missing-value channels, train-only
statistics, the mixed-order descriptor files, corrupted/missing/unreadable files, a model forward pass."""

import hashlib

import numpy as np
import pytest
from conftest import assert_damage_is_named, assert_tiny_forward

import highmodal.data.real.clinical as clinical
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError

V = len(clinical.SERIES_VARIABLES)
ENTRY = {"name": "icu", "source": "physionet2012"}


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([ENTRY], LoadContext(data_root=data_root, seed=3))


def test_counts_shapes_and_metric(suite):
    td = suite["icu"]
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 3200, "val": 800, "test": 4000}
    deaths = {k: int(v.y.sum()) for k, v in td.splits.items()}
    # README: set-a 4,000 stays with 554 deaths, set-b 4,000 with 568; val carved stratified.
    assert deaths["train"] + deaths["val"] == 554 and deaths["test"] == 568
    assert deaths["val"] in (110, 111)
    assert td.task.metric == "auroc" and td.task.class_names == ("survived", "died")
    assert td.specs["icu_series"].shape == (48, 2 * V) and td.specs["icu_series"].kind == "time_series"
    assert td.specs["icu_static"].shape == (11, 1) and td.specs["icu_static"].kind == "tabular"
    assert td.specs["icu_series"].mean is None  # standardised in the loader, see physionet2012's docstring


def _fingerprints(split) -> set[str]:
    """One hash per stay that has at least one measurement (stays with none can coincide)."""
    return {hashlib.sha1(s.tobytes() + t.tobytes()).hexdigest()
            for s, t in zip(split.inputs["icu_series"], split.inputs["icu_static"], strict=True) if s[:, V:].any()}


def test_splits_hold_distinct_stays(suite):
    splits = suite["icu"].splits
    # 9 stays hold descriptors only (set-a 140501, 140936, 141264; six in set-b): kept, all indicators 0.
    empty = {k: int((~v.inputs["icu_series"][..., V:].any(axis=(1, 2))).sum()) for k, v in splits.items()}
    assert empty["train"] + empty["val"] == 3 and empty["test"] == 6
    fp = {k: _fingerprints(v) for k, v in splits.items()}
    assert [len(fp[k]) + empty[k] for k in ("train", "val", "test")] == [3200, 800, 4000]
    assert not fp["train"] & fp["val"] and not (fp["train"] | fp["val"]) & fp["test"]


def test_missing_values_are_zero_with_an_indicator(suite):
    x = suite["icu"].splits["train"].inputs["icu_series"]
    values, observed = x[..., :V], x[..., V:]
    assert set(np.unique(observed)) == {0.0, 1.0}
    assert np.all(values[observed == 0] == 0)
    rate = observed.mean(axis=(0, 1))
    hr = clinical.SERIES_VARIABLES.index("HR")
    chol = clinical.SERIES_VARIABLES.index("Cholesterol")
    assert rate[hr] > 0.85 and rate[chol] < 0.01  # HR nearly every hour, cholesterol rarely
    assert np.abs(values).max() < 10  # clipped to training percentiles before z-scoring


def test_statistics_come_from_train_only(suite):
    td = suite["icu"]

    def observed_moments(split):
        x = td.splits[split].inputs["icu_series"]
        values, observed = x[..., :V].reshape(-1, V), x[..., V:].reshape(-1, V).astype(bool)
        return (np.array([values[observed[:, j], j].mean() for j in range(V)]),
                np.array([values[observed[:, j], j].std() for j in range(V)]))

    mean, std = observed_moments("train")
    varying = std > 0  # MechVent is always 1, so its z-score is constantly 0
    assert np.abs(mean).max() < 1e-3 and np.allclose(std[varying], 1, atol=1e-3)
    assert np.abs(observed_moments("test")[0]).max() > 1e-2
    static = {k: v.inputs["icu_static"][..., 0] for k, v in td.splits.items()}
    assert np.allclose(td.specs["icu_static"].mean, static["train"].mean(axis=0), atol=1e-4)
    assert not np.allclose(td.specs["icu_static"].mean,
                           np.concatenate(list(static.values())).mean(axis=0), atol=1e-4)


def test_raw_parsing_against_the_files(data_root):
    members, rows = clinical._read_archive(data_root / "physionet2012" / "set-a.tar.gz", 0)
    assert len(members) == 4000
    hourly = clinical._hourly_means(rows, len(members))
    static = clinical._static_descriptors(rows, members, [data_root / "physionet2012" / "set-a.tar.gz"] * 2)
    first = members.index("set-a/132539.txt")  # HR 73 at 00:07 and 77 at 00:37; Height -1
    assert hourly[first, 0, clinical.SERIES_VARIABLES.index("HR")] == pytest.approx(75.0)
    assert np.isnan(hourly[first, 0, clinical.SERIES_VARIABLES.index("pH")])
    assert np.isnan(static[first, 2]) and static[first, 0] == 54 and static[first, 3] == 4
    # This file lists its 00:00 rows by name: Age, DiasABP, Gender, Height, HR, ..., ICUType later.
    mixed = members.index("set-a/132551.txt")
    assert static[mixed, 0] == 78 and static[mixed, 3] == 3 and not np.isnan(static[mixed]).all()


def test_corrupted_and_missing_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "physionet2012", "Outcomes-b.txt", [ENTRY])


def test_unreadable_archive_without_checksums_names_the_file(data_root, tmp_path):
    folder = tmp_path / "physionet2012"
    folder.mkdir()
    for name in ("set-a.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt"):
        (folder / name).symlink_to(data_root / "physionet2012" / name)
    (folder / "set-b.tar.gz").write_bytes((data_root / "physionet2012" / "set-b.tar.gz").read_bytes()[:5000])
    with pytest.raises(HighmodalError, match=r"set-b.tar.gz: cannot read the tar.gz archive"):
        build_suite([ENTRY], LoadContext(data_root=tmp_path))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite)
