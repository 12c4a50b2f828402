"""The package-shipped loaders on their real data: sizes, shapes, label sets, masks, splits."""

import numpy as np
import pytest

from highmodal.data import LOADERS, LoadContext, build_suite

EXPECTED = {  # source: (modality shapes, classes, total samples, official test size or None)
    "sklearn_digits": ({"digit_pixels": (8, 8, 1)}, 10, 1797, None),
    "basic_motions": ({"accelerometer": (100, 3), "gyroscope": (100, 3)}, 4, 80, 40),
    "japanese_vowels": ({"lpc_cepstra": (None, 12)}, 9, 640, 370),
    "italy_power_demand": ({"power_demand": (24, 1)}, 2, 1096, 1029),
    "breast_cancer": ({"cell_nuclei": (30, 1)}, 2, 569, None),
    "diabetes": ({"clinical_baseline": (10, 1)}, 1, 442, None),
}


@pytest.fixture(scope="module")
def suite():
    return build_suite([{"name": s, "source": s} for s in EXPECTED], LoadContext(seed=0))


@pytest.mark.parametrize("source", list(EXPECTED))
def test_loader_shapes_and_labels(suite, source):
    shapes, classes, total, test_size = EXPECTED[source]
    td = suite[source]
    assert {m: td.specs[m].shape for m in td.task.modalities} == shapes
    assert td.task.out_dim == classes
    assert sum(len(s) for s in td.splits.values()) == total
    if test_size is not None:
        assert len(td.splits["test"]) == test_size
    if td.task.is_classification:
        for split in td.splits.values():
            assert set(np.unique(split.y)) <= set(range(classes))
        assert set(np.unique(td.splits["train"].y)) == set(range(classes))
    assert LOADERS.get(source).available(LoadContext())


def test_variable_length_vowels_carry_masks(suite):
    td = suite["japanese_vowels"]
    train = td.splits["train"]
    mask = train.masks["lpc_cepstra"]
    lengths = mask.sum(1)
    assert lengths.min() == 7 and td.specs["lpc_cepstra"].max_len == 29
    assert np.all(train.inputs["lpc_cepstra"][~mask] == 0), "padding must be zeros"
    assert np.all(mask[:, :7]) and not mask.all()


def test_basic_motions_modalities_are_the_two_sensors(suite):
    from sktime.datasets import load_basic_motions

    x, _ = load_basic_motions(split="test", return_type="numpy3D")
    test = suite["basic_motions"].splits["test"]
    np.testing.assert_allclose(test.inputs["accelerometer"], x[:, :3].transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_allclose(test.inputs["gyroscope"], x[:, 3:].transpose(0, 2, 1), rtol=1e-6)


def test_normalisation_fit_on_train_only(suite):
    td = suite["breast_cancer"]
    spec = td.specs["cell_nuclei"]
    x = td.splits["train"].inputs["cell_nuclei"].reshape(len(td.splits["train"]), -1)
    np.testing.assert_allclose(spec.mean, x.mean(0), rtol=1e-5)
    assert len(spec.mean) == 30, "tables are standardised per column"


def test_splits_are_deterministic_per_seed():
    a = build_suite([{"name": "d", "source": "sklearn_digits"}], LoadContext(seed=5))["d"]
    b = build_suite([{"name": "d", "source": "sklearn_digits"}], LoadContext(seed=5))["d"]
    c = build_suite([{"name": "d", "source": "sklearn_digits"}], LoadContext(seed=6))["d"]
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[s].inputs["digit_pixels"], b.splits[s].inputs["digit_pixels"])
    assert not np.array_equal(a.splits["test"].y, c.splits["test"].y)


def test_regression_targets_standardised_for_training(suite):
    task = suite["diabetes"].task
    y = suite["diabetes"].splits["train"].y
    assert task.target_mean == pytest.approx(tuple(y.mean(0)))
    assert task.target_std == pytest.approx(tuple(y.std(0)))


def test_an_entry_can_declare_synchronised_sensors_aligned(suite):
    assert not suite["basic_motions"].task.aligned  # the source does not: measured no better (docs)
    declared = build_suite([{"name": "m", "source": "basic_motions", "aligned": True}], LoadContext(seed=0))
    assert declared["m"].task.aligned


@pytest.mark.parametrize("source", ["sklearn_digits", "japanese_vowels"])
def test_aligned_needs_two_modalities_on_one_fixed_grid(source):
    from highmodal.errors import HighmodalError

    with pytest.raises(HighmodalError, match=r"task 'x' is declared aligned, which needs two or more modalities"):
        build_suite([{"name": "x", "source": source, "aligned": True}], LoadContext(seed=0))
