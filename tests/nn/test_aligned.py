"""The aligned-token comparison reads positions pairwise: it is blind to a shared reordering of the
positions but not to a misalignment of one input against the other."""

import torch

from highmodal.nn.aligned import AlignedComparison


def test_shape_and_position_pairing():
    torch.manual_seed(0)
    block = AlignedComparison(5, 4)
    x, y = torch.randn(3, 7, 5), torch.randn(3, 7, 5)
    out = block(x, y)
    assert out.shape == (3, 4)
    perm = torch.randperm(7)
    torch.testing.assert_close(block(x[:, perm], y[:, perm]), out)  # the same places, listed in another order
    assert not torch.allclose(block(x, y[:, perm]), out)  # y shifted against x
    expected = (block.query(x) * block.key(y)).mean(1)
    torch.testing.assert_close(out, expected)
