"""The factored LayerNorm + linear equals the materialised one, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from highmodal.nn.factored import norm_linear


def _materialised(norm: nn.LayerNorm, weight: torch.Tensor, data: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    tokens = torch.cat([data, rest.expand(data.shape[0], -1, -1)], dim=-1)
    return F.linear(norm(tokens), weight)


@pytest.mark.parametrize("offset", [0.0, 3.0])  # a large common offset stresses the variance formula
def test_values_and_gradients_match_the_materialised_tokens(offset):
    torch.manual_seed(0)
    c, r, out = 5, 11, 7
    norm = nn.LayerNorm(c + r)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    weight = torch.randn(out, c + r, requires_grad=True)
    data = (torch.randn(3, 4, c) + offset).requires_grad_()
    rest = torch.randn(4, r)
    rest[:, -3:] = 0.0  # zero padding, as in standardized tokens
    fast = norm_linear(norm, weight, data, rest)
    slow = _materialised(norm, weight, data, rest)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [weight, norm.weight, norm.bias, data], g)
    grads_slow = torch.autograd.grad(slow, [weight, norm.weight, norm.bias, data], g)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
