"""Mask sampling, visible-token gathering, the permuted-LM attention mask and the reconstruction losses."""

from __future__ import annotations

import torch

from highmodal.nn.masking import (
    RECONSTRUCTION,
    first_true,
    gather_tokens,
    most_masked,
    per_token_normalised,
    permutation_mask,
    random_masked,
    random_real_tokens,
)


def padded(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None] < torch.tensor(lengths)[:, None]


def test_masks_only_real_tokens_at_the_ratio_keeping_one():
    torch.manual_seed(0)
    real = padded([20, 10, 2, 1], 20)
    m = random_masked(real, 0.95)
    assert not (m & ~real).any()
    assert m.sum(1).tolist() == [19, 9, 1, 0]  # round(0.95 n), but one kept; a lone token is kept
    assert random_masked(real, 0.25).sum(1).tolist() == [5, 2, 1, 0]
    draws = torch.stack([random_masked(padded([20], 20), 0.5)[0] for _ in range(200)]).float().mean(0)
    assert draws.min() > 0.3 and draws.max() < 0.7  # every position gets masked, none favoured


def test_the_host_count_bounds_every_shorter_sample():
    for ratio in (0.05, 0.15, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 0.9, 0.95):
        counts = random_masked(padded(list(range(61)), 60), ratio).sum(1).tolist()
        assert counts == [most_masked(n, ratio) for n in range(61)]  # host and device agree exactly
        for n_max in range(61):  # a batch padded to n_max: no sample masks or keeps more than a full one
            assert max(counts[: n_max + 1]) <= most_masked(n_max, ratio)
            assert max(n - c for n, c in enumerate(counts[: n_max + 1])) <= n_max - most_masked(n_max, ratio)


def test_first_true_gathers_flagged_tokens_in_order():
    keep = torch.tensor([[True, False, True, False], [False, False, False, True]])
    idx, valid = first_true(keep, 2)
    assert idx.tolist()[0] == [0, 2] and idx[1, 0] == 3 and valid.tolist() == [[True, True], [True, False]]
    x = torch.arange(8.0).reshape(2, 4, 1)
    assert gather_tokens(x, idx)[0, :, 0].tolist() == [0.0, 2.0]
    assert gather_tokens(x[..., 0].long(), idx)[1, 0] == 7  # ids (B, N) too


def test_random_real_tokens_are_drawn_uniformly_from_the_real_ones():
    torch.manual_seed(0)
    real = padded([3, 1, 0, 2], 4)
    x = torch.arange(16.0).reshape(4, 4, 1) + 1
    drawn = torch.stack([random_real_tokens(x, real) for _ in range(300)])
    values, counts = drawn.unique(return_counts=True)
    assert values.tolist() == x[real].flatten().tolist()  # every real token, no padding
    assert counts.min() > 0.8 * counts.float().mean()


def test_permutation_mask_never_lets_a_query_see_itself_or_later_tokens():
    torch.manual_seed(3)
    real = padded([6, 4], 6)
    predicted = random_masked(real, 0.5)
    q_idx, q_real, attn = permutation_mask(real, predicted, most_masked(6, 0.5))
    n, m = 6, q_idx.shape[1]
    assert attn.shape == (2, n + m, n + m) and attn.any(-1).all()  # no row without a key (no NaN)
    for b in range(2):
        order = q_idx[b][q_real[b]].tolist()
        rank = {tok: r for r, tok in enumerate(order)}
        for r, tok in enumerate(order):
            row = attn[b, n + r]
            seen = {j for j in range(n) if row[j]}
            assert tok not in seen
            assert seen == {j for j in range(n) if real[b, j] and (j not in rank or rank[j] < r)}
        for j in range(n):
            if real[b, j] and j not in rank:  # unpredicted tokens see no predicted content
                assert not any(attn[b, j, k] for k in rank)
        assert not attn[b, :, n:].any() or all(attn[b, n + i, n + i] for i in range(m))
        assert not (attn[b, :n, n:]).any()  # content never reads queries


def test_losses():
    pred = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert RECONSTRUCTION.get("l2")(pred, torch.zeros(2, 2)).tolist() == [0.5, 4.0]
    pts = torch.randn(3, 12)
    shuffled = pts.reshape(3, 4, 3)[:, torch.randperm(4)].reshape(3, 12)
    assert torch.allclose(RECONSTRUCTION.get("chamfer")(pts, shuffled), torch.zeros(3), atol=1e-6)
    assert (RECONSTRUCTION.get("chamfer")(pts, pts + 1) > 0).all()
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    assert RECONSTRUCTION.get("ce")(logits, torch.tensor([0])) < 1e-3
    z = per_token_normalised(torch.tensor([[1.0, 2.0, 3.0]]))
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-4
