"""RoadScene IR/visible on the real images: the constructed same-scene pairing task (balanced, no
unimodal shortcut, no scene in two splits), file errors, and a HighMMT forward pass."""

import numpy as np
import pytest
from conftest import assert_tiny_forward, corrupt_copy

from highmodal.data import LoadContext, build_suite
from highmodal.data.real.infrared import pair_up
from highmodal.errors import HighmodalError


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([{"name": "road", "source": "roadscene"}], LoadContext(data_root=data_root))


def image_keys(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in x]


def test_pairs_counts_and_shapes(suite):
    td = suite["road"]
    assert td.specs["road_infrared"].shape == (8, 8, 64) and td.specs["road_infrared"].kind == "infrared"
    assert td.specs["road_visible"].shape == (8, 8, 192) and td.specs["road_visible"].kind == "image"
    assert td.task.modalities == ("road_infrared", "road_visible") and td.task.class_names[1] == "same scene"
    scenes = {k: len(v) // 2 for k, v in td.splits.items()}
    assert scenes == {"train": 154, "val": 22, "test": 45} and sum(scenes.values()) == 221
    for s in td.splits.values():
        assert np.bincount(s.y).tolist() == [len(s) // 2, len(s) // 2]


def test_no_scene_in_two_splits(suite):
    splits = suite["road"].splits
    for m in ("road_infrared", "road_visible"):
        keys = {k: set(image_keys(v.inputs[m])) for k, v in splits.items()}
        assert sum(len(k) for k in keys.values()) == 221  # 221 distinct images, each in one split
        assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]


def test_each_image_in_one_positive_and_one_negative(suite):
    s = suite["road"].splits["train"]
    for m in ("road_infrared", "road_visible"):
        keys = image_keys(s.inputs[m])
        for label in (0, 1):
            assert len({k for k, y in zip(keys, s.y, strict=True) if y == label}) == len(s) // 2
    ir, vis = image_keys(s.inputs["road_infrared"]), image_keys(s.inputs["road_visible"])
    partner = {i: v for i, v, y in zip(ir, vis, s.y, strict=True) if y == 1}
    assert all(partner[i] != v for i, v, y in zip(ir, vis, s.y, strict=True) if y == 0)


def test_pair_up_is_a_seeded_derangement():
    ids = np.arange(10, dtype=np.float32)[:, None]
    d = pair_up(ids, ids, np.random.default_rng(0))
    ir, vis = d.inputs["road_infrared"][:, 0], d.inputs["road_visible"][:, 0]
    assert np.all(ir[d.y == 1] == vis[d.y == 1]) and np.all(ir[d.y == 0] != vis[d.y == 0])
    assert sorted(vis[d.y == 0]) == list(range(10))
    again = pair_up(ids, ids, np.random.default_rng(0))
    np.testing.assert_array_equal(again.inputs["road_visible"], d.inputs["road_visible"])


def test_corrupted_missing_and_unreadable_images(data_root, tmp_path):
    bad = corrupt_copy(data_root, "roadscene_ir_visible", "cropinfrared/FLIR_00006.jpg", tmp_path / "a")
    with pytest.raises(HighmodalError, match=r"cropinfrared/FLIR_00006.jpg: file is corrupted"):
        build_suite([{"name": "r", "source": "roadscene"}], LoadContext(data_root=bad))
    bad = corrupt_copy(data_root, "roadscene_ir_visible", "crop_LR_visible/FLIR_00018.jpg", tmp_path / "b")
    (bad / "roadscene_ir_visible" / "crop_LR_visible" / "FLIR_00018.jpg").unlink()  # its IR partner remains
    with pytest.raises(HighmodalError, match=r"crop_LR_visible/FLIR_00018.jpg: required file .* is missing"):
        build_suite([{"name": "r", "source": "roadscene"}], LoadContext(data_root=bad))
    bad = corrupt_copy(data_root, "roadscene_ir_visible", "crop_LR_visible/FLIR_00018.jpg", tmp_path / "c")
    (bad / "CHECKSUMS.sha256").unlink()  # no manifest: the decoder is the last line of defence
    (bad / "roadscene_ir_visible" / "crop_LR_visible" / "FLIR_00018.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(HighmodalError, match=r"crop_LR_visible/FLIR_00018.jpg: cannot decode the image"):
        build_suite([{"name": "r", "source": "roadscene"}], LoadContext(data_root=bad))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite)


@pytest.mark.parametrize("representation, widths", [("gradients", (64, 64)), ("both", (128, 256))])
def test_gradient_views_keep_the_pairs_and_standardise_each_image(data_root, suite, representation, widths):
    """The gradient view holds each image's Sobel magnitude (per image: mean 0, std 1) at the same
    pixels, in the same rows, as the pixel view; ``both`` appends it to the intensities."""
    from highmodal.data.real.common import gradient_magnitude

    td = build_suite([{"name": "road", "source": "roadscene", "representation": representation}],
                     LoadContext(data_root=data_root))["road"]
    assert (td.specs["road_infrared"].shape[-1], td.specs["road_visible"].shape[-1]) == widths
    pixels, view = suite["road"].splits["test"], td.splits["test"]
    np.testing.assert_array_equal(view.y, pixels.y)
    for m, c in (("road_infrared", 1), ("road_visible", 3)):
        grey = pixels.inputs[m].reshape(-1, 8, 8, 8, 8, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 64, 64, c).mean(-1)
        edges = view.inputs[m].reshape(-1, 8, 8, 8, 8, widths[m == "road_visible"] // 64)[..., -1]
        edges = edges.transpose(0, 1, 3, 2, 4).reshape(-1, 64, 64)
        np.testing.assert_allclose(edges, gradient_magnitude(grey), atol=1e-4)
        assert np.allclose(edges.mean((1, 2)), 0, atol=1e-4) and np.allclose(edges.std((1, 2)), 1, atol=1e-3)


def test_unknown_representation_is_one_clear_error(data_root):
    with pytest.raises(HighmodalError, match=r"roadscene: representation 'edges' is not one of"):
        build_suite([{"name": "r", "source": "roadscene", "representation": "edges"}], LoadContext(data_root=data_root))


def test_image_correlation_of_the_gradient_view_equals_the_pixels_gradient_correlation(data_root, suite):
    """The simple panel stays as strong on the gradient view: correlating its maps directly is the
    Sobel baseline on the pixels, so a model given gradients is not judged against a weaker yardstick."""
    from highmodal.experiments.baselines import BASELINES

    pixels = suite["road"]
    grad = build_suite([{"name": "road", "source": "roadscene", "representation": "gradients"}],
                       LoadContext(data_root=data_root))["road"]
    by_pixels = BASELINES.get("gradient_correlation").fit(pixels, pixels.splits["train"])
    by_view = BASELINES.get("image_correlation").fit(grad, grad.splits["train"])
    for split in ("val", "test"):
        np.testing.assert_allclose(by_view(grad.splits[split])[1], by_pixels(pixels.splits[split])[1], atol=1e-3)
