"""UCI Adult on its real files: official split sizes and label balance, column coding ('?' kept, unseen
test categories reserved), train-only normalisation, corrupted/missing/unreadable files, a forward pass."""

import numpy as np
import pandas as pd
import pytest
from conftest import assert_damage_is_named, assert_tiny_forward

import highmodal.data.real.tabular as tabular
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError

ENTRY = {"name": "adult", "source": "adult"}
COLUMNS = [c for c, _ in tabular.ADULT_COLUMNS]
TRAIN_ROW = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 0, 0, 40, "


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([ENTRY], LoadContext(data_root=data_root))


def test_official_split_sizes_and_labels(suite):
    td = suite["adult"]
    s = td.splits
    assert {k: len(v) for k, v in s.items()} == {"train": 29304, "val": 3257, "test": 16281}
    # README: train 32,561 (24,720 / 7,841), test 16,281 (12,435 / 3,846); val is stratified.
    assert (np.bincount(s["train"].y) + np.bincount(s["val"].y)).tolist() == [24720, 7841]
    assert np.bincount(s["test"].y).tolist() == [12435, 3846]
    assert abs(s["val"].y.mean() - s["train"].y.mean()) < 0.005
    assert td.specs["census"].shape == (14, 1) and td.specs["census"].kind == "tabular"
    assert td.task.class_names == ("<=50K", ">50K") and td.task.metric == "accuracy"


def test_column_coding_matches_the_file(suite, data_root):
    test = suite["adult"].splits["test"].inputs["census"][..., 0]
    train_file = pd.read_csv(data_root / "uci_adult" / "adult.data", header=None, skipinitialspace=True,
                             dtype=str, keep_default_na=False)
    # first test record (line 2): 25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child,
    # Black, Male, 0, 0, 40, United-States, <=50K.
    raw = ["25", "Private", "226802", "11th", "7", "Never-married", "Machine-op-inspct", "Own-child", "Black",
           "Male", "0", "0", "40", "United-States"]
    expected = [float(value) if numeric else sorted(set(train_file[j])).index(value)
                for j, (value, (_, numeric)) in enumerate(zip(raw, tabular.ADULT_COLUMNS, strict=True))]
    assert test[0].tolist() == expected
    workclass = COLUMNS.index("workclass")
    train = np.concatenate([suite["adult"].splits[k].inputs["census"][..., 0] for k in ("train", "val")])
    assert (train[:, workclass] == 0).sum() == 1836  # '?' sorts first and stays a category of its own


def test_normalisation_uses_train_only(suite):
    td = suite["adult"]
    x = {k: v.inputs["census"][..., 0] for k, v in td.splits.items()}
    assert np.allclose(td.specs["census"].mean, x["train"].mean(axis=0), rtol=1e-5)
    assert np.allclose(td.specs["census"].std, x["train"].std(axis=0), rtol=1e-4)
    assert not np.allclose(td.specs["census"].mean, np.concatenate([x["train"], x["val"]]).mean(axis=0), rtol=1e-6)


def _write(folder, train_rows: list[str], test_rows: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "adult.data").write_text("\n".join(train_rows) + "\n\n")
    (folder / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(test_rows) + "\n")


def test_unseen_test_category_gets_the_reserved_code(tmp_path):
    rows = [TRAIN_ROW + ("United-States, <=50K" if i % 2 else "Cuba, >50K") for i in range(20)]
    _write(tmp_path / "uci_adult", rows, [TRAIN_ROW + "Atlantis, >50K.", TRAIN_ROW + "Cuba, <=50K."])
    td = build_suite([ENTRY], LoadContext(data_root=tmp_path))["adult"]
    country = td.splits["test"].inputs["census"][:, COLUMNS.index("native_country"), 0]
    assert country.tolist() == [2.0, 0.0]  # train knows Cuba (0) and United-States (1); Atlantis → 2
    assert td.splits["test"].y.tolist() == [1, 0]


def test_unreadable_record_names_the_file(tmp_path):
    rows = [TRAIN_ROW + "Cuba, >50K"] * 10 + [TRAIN_ROW.replace("39", "old", 1) + "Cuba, <=50K"]
    _write(tmp_path / "uci_adult", rows, [TRAIN_ROW + "Cuba, <=50K."])
    with pytest.raises(HighmodalError, match=r"adult.data: column 'age' of record 11 is not a number"):
        build_suite([ENTRY], LoadContext(data_root=tmp_path))
    _write(tmp_path / "other" / "uci_adult", rows[:10], [TRAIN_ROW + "Cuba, maybe."])
    with pytest.raises(HighmodalError, match=r"adult.test: record 2 has income 'maybe'"):
        build_suite([ENTRY], LoadContext(data_root=tmp_path / "other"))


def test_corrupted_and_missing_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "uci_adult", "adult.test", [ENTRY])


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite)
