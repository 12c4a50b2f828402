"""Every tokenizer's ``tokens``: content + positions give exactly ``forward``'s tokens, and each
token's reconstruction target is the piece of input that token was made from (checked by changing
one input value and seeing which token's content and which target row move)."""

from __future__ import annotations

import pytest
import torch

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers import create_tokenizer

D = 16
SPECS = {
    "image": (ModalitySpec("im", "image", (6, 5, 3)), {"patch": 2}),
    "xray": (ModalitySpec("xr", "xray", (4, 4, 4)), {}),
    "video": (ModalitySpec("vid", "video", (None, 4, 4, 2), max_len=6), {"tubelet": 2, "patch": 2}),
    "audio": (ModalitySpec("au", "audio", (None, 8), max_len=10), {"patch_time": 2, "patch_freq": 4}),
    "time_series": (ModalitySpec("ts", "time_series", (None, 3), max_len=12), {"patch": 3}),
    "imu_ci": (ModalitySpec("imu", "imu", (12, 2)), {"patch": 4, "channel_independent": True}),
    "tabular": (ModalitySpec("tab", "tabular", (5, 1)), {}),
    "graph": (ModalitySpec("gr", "graph", (None, 4), max_len=7), {}),
    "hyperspectral": (ModalitySpec("hs", "hyperspectral", (3, 3, 4, 5)), {}),
    "hyperspectral_pixels": (ModalitySpec("hs", "hyperspectral", (3, 3, 4, 5)), {"tokens": "spectral_spatial"}),
    "text_vectors": (ModalitySpec("tv", "text", (None, 6), max_len=9), {}),
}


def make(name: str):
    spec, options = SPECS[name]
    torch.manual_seed(0)
    tok = create_tokenizer(spec, D, options).eval()
    shape = [s if s is not None else spec.max_len for s in spec.shape]
    x = torch.randn(3, *shape)
    mask = None
    if spec.variable:
        mask = torch.ones(3, spec.max_len, dtype=torch.bool)
        mask[1, spec.max_len // 2:] = False
    return spec, tok, x, mask


@pytest.mark.parametrize("name", sorted(SPECS))
def test_tokens_add_up_to_forward(name):
    _, tok, x, mask = make(name)
    t = tok.tokens(x, mask, targets=True)
    out, out_mask = tok(x, mask)
    torch.testing.assert_close(tok.combine(t.content, t.pos), out)
    assert (t.mask is None) == (out_mask is None) and (t.mask is None or torch.equal(t.mask, out_mask))
    assert t.targets.shape[:2] == out.shape[:2] and t.targets.dim() == 3
    assert tok.tokens(x, mask).targets is None


@pytest.mark.parametrize("name", sorted(SPECS))
def test_one_input_value_lives_in_one_token_and_its_target(name):
    spec, tok, x, mask = make(name)
    base = tok.tokens(x, mask, targets=True)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        where = tuple(int(torch.randint(s, (), generator=gen)) for s in x.shape[1:])
        if spec.variable and mask is not None and not mask[0, where[0]]:
            continue
        y = x.clone()
        y[(0, *where)] += 3.0
        moved = tok.tokens(y, mask, targets=True)
        content = (moved.content[0] - base.content[0]).abs().amax(-1) > 1e-6
        target = (moved.targets[0] - base.targets[0]).abs().amax(-1) > 1e-6
        assert content.sum() == 1 and torch.equal(content, target), (name, where)


def test_point_group_targets_are_centred_groups():
    spec = ModalitySpec("pts", "point_cloud", (None, 3), max_len=64)
    tok = create_tokenizer(spec, D, {"groups": 8, "group_size": 4})
    x = torch.randn(2, 64, 3)
    t = tok.tokens(x, None, targets=True)
    assert tok.target_loss == "chamfer" and t.targets.shape == (2, 8, 12) and t.pos.shape == (2, 8, D)
    groups = t.targets.reshape(2, 8, 4, 3)
    assert torch.allclose(groups.norm(dim=-1).amin(-1), torch.zeros(2, 8), atol=1e-5)  # the centre is in its group


def test_subword_targets_are_the_ids():
    spec = ModalitySpec("sw", "text", (None, 1), max_len=8, vocab_size=50)
    tok = create_tokenizer(spec, D)
    ids = torch.tensor([[5, 9, 3, 0, 0, 0, 0, 0], [7, 7, 7, 7, 7, 2, 1, 4]], dtype=torch.float32)[..., None]
    t = tok.tokens(ids, None, targets=True)
    assert tok.target_loss == "ce" and t.targets.dtype == torch.long and torch.equal(t.targets, ids[..., 0].long())
    assert torch.equal(t.mask, ids[..., 0] != 0)
