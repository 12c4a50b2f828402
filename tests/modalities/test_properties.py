"""Property-based tests (hypothesis) for the standardizer and the npz loader."""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Standardizer

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(axes=shapes, channels=st.integers(1, 6), bands=st.integers(1, 4), others=st.integers(0, 3),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_standardizer_blocks(axes, channels, bands, others, batch, seed):
    """Whatever the shape: width d_all, data block = input, one-hot at the modality's index, zero pad."""
    spec = ModalitySpec("m", "time_series", (*axes, channels), num_freq_bands=bands)
    extra = [ModalitySpec(f"o{i}", "tabular", (2, 1 + i)) for i in range(others)]
    std = Standardizer([*extra, spec])
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(batch, *axes, channels)), dtype=torch.float32)
    tokens, mask = std("m", x)
    assert mask is None
    assert tokens.shape == (batch, int(np.prod(axes)), std.d_all)
    assert std.d_all == max(s.channels + len(std.specs) + s.pos_dim for s in std.specs.values())
    lay = std.layout("m")
    torch.testing.assert_close(tokens[..., lay["data"]], x.reshape(batch, -1, channels))
    code = tokens[..., lay["modality"]]
    assert (code.sum(-1) == 1).all() and (code.argmax(-1) == others).all()
    assert (tokens[..., lay["pad"]] == 0).all()
    pos = tokens[..., lay["position"]]
    assert pos.abs().max() <= 1.0 + 1e-6 and torch.equal(pos[0], pos[-1])


@settings(max_examples=40, deadline=None)
@given(axes=shapes, channels=st.integers(1, 4), wrong_axis=st.integers(0, 3), delta=st.integers(1, 3))
def test_standardizer_rejects_any_wrong_shape(axes, channels, wrong_axis, delta):
    spec = ModalitySpec("m", "image", (*axes, channels))
    bad = [1, *axes, channels]
    bad[1 + wrong_axis % (len(axes) + 1)] += delta
    try:
        Standardizer([spec])("m", torch.zeros(bad))
    except HighmodalError as e:
        assert "'m'" in str(e) and "expected shape" in str(e)
    else:
        raise AssertionError(f"shape {bad} accepted for {spec.shape}")


labels = st.sampled_from(["int", "str", "float"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(12, 60), length=st.integers(1, 6), channels=st.integers(1, 3), classes=st.integers(2, 4),
       kind=labels, seed=st.integers(0, 2**16))
def test_npz_loader_accepts_valid_and_rejects_float_labels(tmp_path, n, length, channels, classes, kind, seed):
    """Any well-formed npz loads with all samples split three ways and labels in range; float class
    labels are refused with a message naming the file."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    y = {"int": y, "str": np.array([f"c{v}" for v in y]), "float": y.astype(float) + 0.5}[kind]
    path = tmp_path / f"d{seed}.npz"
    np.savez(path, x=rng.normal(size=(n, length, channels)).astype(np.float32), y=y)
    entry = {"name": "t", "source": "npz", "path": str(path),
             "modalities": {"x": {"kind": "time_series", "key": "x"}},
             "target": {"kind": "classification", "key": "y"}}
    try:
        td = build_suite([entry], LoadContext())["t"]
    except HighmodalError as e:
        assert kind == "float" and path.name in str(e) and "integers or strings" in str(e)
        return
    assert kind != "float"
    assert sum(len(s) for s in td.splits.values()) == n
    for split in td.splits.values():
        assert split.inputs["x"].shape[1:] == (length, channels)
        assert split.y.min() >= 0 and split.y.max() < classes
