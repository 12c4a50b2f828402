"""ModalitySpec validation and HighMMT input standardisation (data ⊕ one-hot ⊕ positions ⊕ zero pad)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Standardizer
from highmodal.nn.fourier import fourier_encode


def _specs():
    return [
        ModalitySpec("img", "image", (8, 8, 1)),  # 1 + 3 + 2*13 = 30
        ModalitySpec("ts", "time_series", (None, 3), num_freq_bands=2, max_len=10),  # 3 + 3 + 5 = 11
        ModalitySpec("tab", "tabular", (4, 5), num_freq_bands=1),  # 5 + 3 + 3 = 11
    ]


# ---------------------------------------------------------------- ModalitySpec


def test_spec_pos_dim_and_ref_lengths():
    s = ModalitySpec("v", "video", (None, 6, 6, 3), num_freq_bands=4, max_len=12)
    assert s.channels == 3
    assert s.axes == (None, 6, 6)
    assert s.variable
    assert s.pos_dim == 3 * (2 * 4 + 1)
    assert s.ref_lengths() == (12, 6, 6)
    assert s.num_positions() == 12 * 36


def test_spec_validate_wrong_shape_names_modality_expected_and_actual():
    s = ModalitySpec("img", "image", (8, 8, 1))
    with pytest.raises(HighmodalError) as e:
        s.validate(np.zeros((2, 8, 7, 1), dtype=np.float32), "mydata.npz")
    msg = str(e.value)
    assert "mydata.npz" in msg
    assert "'img'" in msg
    assert "(N, 8, 8, 1)" in msg
    assert "(2, 8, 7, 1)" in msg


def test_spec_validate_wrong_ndim_and_variable_axis():
    s = ModalitySpec("ts", "time_series", (None, 3), max_len=10)
    s.validate(np.zeros((2, 7, 3), dtype=np.float32), "src")  # any length is fine
    with pytest.raises(HighmodalError, match=r"expected shape \(N, \*, 3\), got \(2, 7\)"):
        s.validate(np.zeros((2, 7), dtype=np.float32), "src")
    with pytest.raises(HighmodalError, match=r"'ts'.*\(N, \*, 3\).*\(2, 7, 4\)"):
        s.validate(np.zeros((2, 7, 4), dtype=np.float32), "src")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_spec_validate_rejects_non_finite(bad):
    s = ModalitySpec("tab", "tabular", (3, 1))
    x = np.zeros((2, 3, 1), dtype=np.float32)
    x[1, 2, 0] = bad
    with pytest.raises(HighmodalError, match=r"'tab'.*NaN or inf"):
        s.validate(x, "src")


def test_spec_validate_rejects_non_numeric():
    s = ModalitySpec("tab", "tabular", (2, 1))
    with pytest.raises(HighmodalError, match="numeric"):
        s.validate(np.array([[["a"], ["b"]]]), "src")


def test_spec_variable_axis_needs_max_len():
    with pytest.raises(HighmodalError, match=r"'ts'.*max_len"):
        ModalitySpec("ts", "time_series", (None, 3))


def test_spec_unknown_kind_rejected():
    with pytest.raises(HighmodalError, match=r"'m'.*kind 'imag'"):
        ModalitySpec("m", "imag", (8, 8, 1))


@pytest.mark.parametrize("shape", [(3,), (0, 3), (3, None)])
def test_spec_bad_shapes_rejected(shape):
    with pytest.raises(HighmodalError, match="'m'"):
        ModalitySpec("m", "tabular", shape, max_len=5)


def test_spec_bad_fourier_settings_rejected():
    with pytest.raises(HighmodalError, match="num_freq_bands"):
        ModalitySpec("m", "tabular", (3, 1), num_freq_bands=0)
    with pytest.raises(HighmodalError, match="max_freq"):
        ModalitySpec("m", "tabular", (3, 1), max_freq=0.0)


def test_spec_dict_round_trip():
    s = ModalitySpec(
        "ts", "time_series", (None, 2), num_freq_bands=3, max_freq=2.0, max_len=9, mean=(1.0, 2.0), std=(3.0, 4.0)
    )
    d = s.to_dict()
    d2 = json.loads(json.dumps(d))  # JSON-safe
    back = ModalitySpec.from_dict(d2)
    assert back == s
    assert back.shape == (None, 2)
    assert back.mean == (1.0, 2.0)
    assert back.std == (3.0, 4.0)
    assert back.max_len == 9 and back.max_freq == 2.0 and back.num_freq_bands == 3

    plain = ModalitySpec("img", "image", (4, 4, 3))
    back = ModalitySpec.from_dict(json.loads(json.dumps(plain.to_dict())))
    assert back == plain and back.mean is None and back.std is None


# ---------------------------------------------------------------- Standardizer


def test_d_all_is_max_over_modalities():
    specs = _specs()
    st = Standardizer(specs)
    m = len(specs)
    assert st.d_all == max(s.channels + m + s.pos_dim for s in specs) == 30


def test_layout_blocks_partition_d_all():
    st = Standardizer(_specs())
    lay = st.layout("ts")
    assert lay["data"] == slice(0, 3)
    assert lay["modality"] == slice(3, 6)
    assert lay["position"] == slice(6, 11)
    assert lay["pad"] == slice(11, 30)


@pytest.mark.parametrize("name", ["img", "ts", "tab"])
def test_one_hot_block(name):
    specs = _specs()
    st = Standardizer(specs)
    shape = {"img": (2, 8, 8, 1), "ts": (2, 5, 3), "tab": (2, 4, 5)}[name]
    tokens, mask = st(name, torch.randn(*shape))
    assert mask is None
    assert tokens.shape == (2, int(np.prod(shape[1:-1])), st.d_all)
    code = tokens[..., st.layout(name)["modality"]]
    expected = torch.zeros(len(specs))
    expected[[s.name for s in specs].index(name)] = 1.0
    assert torch.equal(code, expected.expand_as(code))


def test_one_hot_at_index_zero_without_shared_embedding():
    specs = _specs()
    st = Standardizer(specs, shared_embedding=False)
    assert st.d_all == Standardizer(specs).d_all  # width unchanged
    for name, shape in [("img", (1, 8, 8, 1)), ("ts", (1, 4, 3)), ("tab", (1, 4, 5))]:
        tokens, _ = st(name, torch.randn(*shape))
        code = tokens[..., st.layout(name)["modality"]]
        assert torch.equal(code, torch.tensor([1.0, 0.0, 0.0]).expand_as(code))


def test_position_block_first_and_last_image_token():
    st = Standardizer(_specs())
    tokens, _ = st("img", torch.randn(2, 8, 8, 1))
    pos = tokens[..., st.layout("img")["position"]]
    assert pos.shape[-1] == 2 * 13
    first = torch.cat([fourier_encode(torch.tensor(-1.0), 1.0, 6)] * 2)
    last = torch.cat([fourier_encode(torch.tensor(1.0), 1.0, 6)] * 2)
    torch.testing.assert_close(pos[:, 0], first.expand(2, -1))
    torch.testing.assert_close(pos[:, -1], last.expand(2, -1))
    # Raw positions sit at the end of each axis block; token 9 is (row 1, col 1).
    step = 2 / 7
    torch.testing.assert_close(pos[0, 9, [12, 25]], torch.tensor([-1 + step, -1 + step]))
    # Row-major order: token 7 is (row 0, col 7).
    torch.testing.assert_close(pos[0, 7, [12, 25]], torch.tensor([-1.0, 1.0]))


def test_pad_block_zero_and_data_block_is_input():
    st = Standardizer(_specs())
    x = torch.randn(3, 6, 3) + 5
    tokens, _ = st("ts", x)
    lay = st.layout("ts")
    assert torch.equal(tokens[..., lay["pad"]], torch.zeros(3, 6, 19))
    torch.testing.assert_close(tokens[..., lay["data"]], x)


def test_variable_axis_tokens_do_not_depend_on_padding():
    st = Standardizer(_specs())
    x = torch.randn(1, 7, 3)
    short, _ = st("ts", x[:, :4])
    long, _ = st("ts", x)
    torch.testing.assert_close(short, long[:, :4])
    # positions are index / (max_len - 1), not a linspace over the actual length
    raw = long[0, :, st.layout("ts")["position"]][:, -1]
    torch.testing.assert_close(raw, torch.arange(7) * (2 / 9) - 1)


def test_per_channel_normalisation():
    mean, std = (1.0, -2.0, 0.5), (2.0, 4.0, 0.25)
    spec = ModalitySpec("ts", "time_series", (5, 3), mean=mean, std=std)
    st = Standardizer([spec])
    x = torch.randn(2, 5, 3)
    tokens, _ = st("ts", x)
    expected = (x - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(tokens[..., st.layout("ts")["data"]], expected)


def test_per_element_normalisation():
    mean = tuple(float(i) for i in range(8))
    std = tuple(float(i + 1) for i in range(8))
    spec = ModalitySpec("tab", "tabular", (4, 2), mean=mean, std=std)
    st = Standardizer([spec])
    x = torch.randn(3, 4, 2)
    tokens, _ = st("tab", x)
    expected = (x - torch.tensor(mean).reshape(4, 2)) / torch.tensor(std).reshape(4, 2)
    torch.testing.assert_close(tokens[..., st.layout("tab")["data"]], expected.reshape(3, 4, 2))


def test_mask_zeroes_padded_tokens_and_is_flattened():
    st = Standardizer(_specs())
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tokens, out_mask = st("ts", x, mask)
    unmasked, _ = st("ts", x)
    assert out_mask.dtype == torch.bool and out_mask.shape == (2, 5)
    assert torch.equal(out_mask, mask)
    assert torch.equal(tokens[0, 3:], torch.zeros(2, st.d_all))
    torch.testing.assert_close(tokens[0, :3], unmasked[0, :3])
    torch.testing.assert_close(tokens[1], unmasked[1])


def test_grid_mask_is_flattened_row_major():
    st = Standardizer(_specs())
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 1, 2] = True
    tokens, out_mask = st("img", torch.randn(1, 8, 8, 1), mask)
    assert out_mask.shape == (1, 64)
    assert out_mask.nonzero().tolist() == [[0, 1 * 8 + 2]]
    assert tokens[0].abs().sum(-1).nonzero().flatten().tolist() == [10]


def test_mask_size_mismatch_rejected():
    st = Standardizer(_specs())
    with pytest.raises(HighmodalError, match=r"'ts'.*mask covers 4 positions, data has 5"):
        st("ts", torch.randn(2, 5, 3), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("img", (2, 8, 8, 3), r"\(B, 8, 8, 1\)"),
        ("img", (2, 64, 1), r"\(B, 8, 8, 1\)"),
        ("ts", (2, 5, 2), r"\(B, \*, 3\)"),
        ("ts", (2, 5, 1, 3), r"\(B, \*, 3\)"),
    ],
)
def test_wrong_shape_raises_with_modality_and_expected_shape(name, shape, expected):
    st = Standardizer(_specs())
    with pytest.raises(HighmodalError, match=rf"'{name}'.*{expected}"):
        st(name, torch.randn(*shape))


def test_wrong_fixed_axis_size_raises():
    st = Standardizer(_specs())
    try:
        st("img", torch.randn(2, 7, 8, 1))
    except HighmodalError as e:
        assert "'img'" in str(e) and "(B, 8, 8, 1)" in str(e)
    else:
        raise AssertionError("a (2, 7, 8, 1) input for an (8, 8, 1) modality was accepted")


def test_unknown_modality_and_empty_specs_rejected():
    st = Standardizer(_specs())
    with pytest.raises(HighmodalError, match="'audio'"):
        st("audio", torch.randn(1, 4, 3))
    with pytest.raises(HighmodalError):
        Standardizer([])
