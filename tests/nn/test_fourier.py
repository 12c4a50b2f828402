"""Fourier position features and position grids (perceiver-pytorch conventions)."""

from __future__ import annotations

import math

import pytest
import torch

from highmodal.nn.fourier import fourier_encode, grid_positions


def test_fourier_encode_matches_hand_computation():
    x = torch.tensor(0.5)
    out = fourier_encode(x, max_freq=1.0, num_bands=3)
    scales = [1.0, 0.75, 0.5]  # linspace(1, max_freq / 2, 3)
    expected = (
        [math.sin(math.pi * s * 0.5) for s in scales]
        + [math.cos(math.pi * s * 0.5) for s in scales]
        + [0.5]
    )
    assert out.shape == (7,)
    torch.testing.assert_close(out, torch.tensor(expected), rtol=0, atol=1e-6)


def test_fourier_encode_scales_follow_max_freq():
    # max_freq=4 → scales linspace(1, 2, 2) = [1, 2]
    x = torch.tensor([-0.25, 0.3])
    out = fourier_encode(x, max_freq=4.0, num_bands=2)
    for i, v in enumerate(x.tolist()):
        expected = [
            math.sin(math.pi * v), math.sin(2 * math.pi * v),
            math.cos(math.pi * v), math.cos(2 * math.pi * v),
            v,
        ]
        torch.testing.assert_close(out[i], torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bands", [1, 3, 6])
def test_fourier_encode_width_and_leading_shape(bands):
    x = torch.rand(2, 3, 4) * 2 - 1
    out = fourier_encode(x, 1.0, bands)
    assert out.shape == (2, 3, 4, 2 * bands + 1)
    # The last feature is the raw position, unchanged.
    torch.testing.assert_close(out[..., -1], x)
    # sin² + cos² = 1 for every band.
    torch.testing.assert_close(out[..., :bands] ** 2 + out[..., bands:2 * bands] ** 2, torch.ones(2, 3, 4, bands))


def test_grid_positions_fixed_axes_is_linspace_meshgrid():
    pos = grid_positions((3, 5), (3, 5))
    assert pos.shape == (3, 5, 2)
    gy, gx = torch.meshgrid(torch.linspace(-1, 1, 3), torch.linspace(-1, 1, 5), indexing="ij")
    torch.testing.assert_close(pos, torch.stack([gy, gx], dim=-1), rtol=0, atol=1e-6)


def test_grid_positions_single_axis_endpoints():
    pos = grid_positions((4,), (4,))
    torch.testing.assert_close(pos[:, 0], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]), rtol=0, atol=1e-6)


def test_grid_positions_variable_axis_is_index_based():
    ref = 10
    pos = grid_positions((4,), (ref,))
    expected = torch.tensor([i * 2 / (ref - 1) - 1 for i in range(4)])
    assert pos.shape == (4, 1)
    torch.testing.assert_close(pos[:, 0], expected, rtol=0, atol=1e-6)
    # Not a linspace over the actual length: the last real position is not +1.
    assert pos[-1, 0] < 0


def test_grid_positions_independent_of_padding():
    short = grid_positions((4, 3), (10, 3))
    long = grid_positions((7, 3), (10, 3))
    torch.testing.assert_close(short, long[:4])
    # the fixed second axis still spans [-1, 1]
    torch.testing.assert_close(long[0, :, 1], torch.tensor([-1.0, 0.0, 1.0]))
