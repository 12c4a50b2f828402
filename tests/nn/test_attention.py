"""Attention against a hand-written softmax(QKᵀ/√d)V, key masking, Perceiver padding invariance, and the
encoder's fused path against the plain one."""

from __future__ import annotations

import math

import torch

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Standardizer
from highmodal.nn.attention import Attention
from highmodal.nn.perceiver import PerceiverEncoder


def _manual_attention(attn: Attention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    h = attn.heads
    q = x @ attn.to_q.weight.T
    kv = context @ attn.to_kv.weight.T
    inner = q.shape[-1]
    k, v = kv[..., :inner], kv[..., inner:]
    d = inner // h

    def split(t):
        return t.reshape(b, t.shape[1], h, d).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, inner)
    return out @ attn.to_out.weight.T + attn.to_out.bias


def test_cross_attention_matches_manual_softmax():
    torch.manual_seed(0)
    attn = Attention(query_dim=6, context_dim=5, heads=3, dim_head=4, dropout=0.5).eval()
    x, ctx = torch.randn(2, 4, 6), torch.randn(2, 7, 5)
    torch.testing.assert_close(attn(x, context=ctx), _manual_attention(attn, x, ctx), rtol=1e-5, atol=1e-5)


def test_self_attention_uses_x_as_context():
    torch.manual_seed(1)
    attn = Attention(query_dim=8, heads=2, dim_head=5).eval()
    x = torch.randn(3, 5, 8)
    out = attn(x)
    torch.testing.assert_close(out, _manual_attention(attn, x, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, attn(x, context=x))


def test_key_mask_equals_dropping_masked_keys():
    torch.manual_seed(2)
    attn = Attention(query_dim=6, context_dim=5, heads=2, dim_head=4).eval()
    x, ctx = torch.randn(2, 3, 6), torch.randn(2, 6, 5)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    out = attn(x, context=ctx, mask=mask)
    for i in range(2):
        shorter = ctx[i : i + 1, mask[i]]
        torch.testing.assert_close(out[i : i + 1], attn(x[i : i + 1], context=shorter), rtol=1e-5, atol=1e-5)
    # The mask matters: without it the result differs.
    assert not torch.allclose(out, attn(x, context=ctx), atol=1e-3)


def test_attention_eval_ignores_dropout_train_uses_it():
    torch.manual_seed(3)
    attn = Attention(query_dim=4, heads=1, dim_head=8, dropout=0.9)
    x = torch.randn(1, 16, 4)
    attn.eval()
    torch.testing.assert_close(attn(x), _manual_attention(attn, x, x), rtol=1e-5, atol=1e-5)
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


def _encoder():
    torch.manual_seed(4)
    return PerceiverEncoder(
        input_dim=7, num_latents=4, dim=8, depth=2, cross_heads=1, cross_dim_head=8, latent_heads=2,
        latent_dim_head=4, latent_blocks=2, ff_mult=2,
    ).eval()


def test_perceiver_padding_with_mask_equals_unpadded():
    enc = _encoder()
    tokens = torch.randn(2, 5, 7)
    padded = torch.cat([tokens, 100 * torch.randn(2, 4, 7)], dim=1)  # garbage in the padding
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, :5] = True
    ref = enc(tokens)
    assert ref.shape == (2, 4, 8)
    torch.testing.assert_close(enc(padded, mask), ref, rtol=0, atol=1e-5)
    assert not torch.allclose(enc(padded), ref, atol=1e-3)


def test_perceiver_per_sample_lengths():
    enc = _encoder()
    lengths = [5, 2, 8]
    samples = [torch.randn(1, n, 7) for n in lengths]
    padded = torch.cat([torch.nn.functional.pad(s, (0, 0, 0, 8 - s.shape[1]), value=3.0) for s in samples])
    mask = torch.arange(8)[None, :] < torch.tensor(lengths)[:, None]
    out = enc(padded, mask)
    for i, s in enumerate(samples):
        torch.testing.assert_close(out[i : i + 1], enc(s), rtol=0, atol=1e-5)


def test_encode_inputs_equals_forward_on_materialised_tokens():
    """The fused path (factored keys/values, equal lengths batched, one latent pass for all inputs)
    gives each input the latents, and the gradients, of the plain encoder on its own tokens."""
    specs = [
        ModalitySpec("a", "time_series", (6, 3), num_freq_bands=2),
        ModalitySpec("b", "image", (2, 3, 2), num_freq_bands=2),  # also 6 positions: shares a call with a
        ModalitySpec("c", "audio", (None, 4), num_freq_bands=2, max_len=8),
    ]
    std = Standardizer(specs)
    torch.manual_seed(0)
    enc = PerceiverEncoder(std.d_all, num_latents=4, dim=8, depth=2, cross_heads=2, cross_dim_head=4,
                           latent_heads=2, latent_dim_head=4, ff_mult=2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 2:] = False
    inputs = [std.parts("a", torch.randn(2, 6, 3)), std.parts("b", torch.randn(2, 2, 3, 2)),
              std.parts("c", torch.randn(3, 5, 4), mask), std.parts("a", torch.randn(1, 6, 3))]
    fused = enc.encode_inputs(inputs)
    plain = [enc(inp.tokens(), inp.mask) for inp in inputs]
    for f, p in zip(fused, plain, strict=True):
        torch.testing.assert_close(f, p, rtol=1e-5, atol=1e-5)
    weights = [torch.randn_like(p) for p in plain]
    params = list(enc.parameters())
    grads_fused = torch.autograd.grad(sum((f * w).sum() for f, w in zip(fused, weights, strict=True)), params)
    grads_plain = torch.autograd.grad(sum((p * w).sum() for p, w in zip(plain, weights, strict=True)), params)
    for gf, gp in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(gf, gp, rtol=1e-4, atol=1e-5)


def test_process_last_only_is_the_last_latent_of_the_full_pass():
    layer = _encoder().layers[0]
    x = torch.randn(3, 4, 8)
    torch.testing.assert_close(layer.process(x, last_only=True), layer.process(x)[:, -1:], rtol=1e-5, atol=1e-6)
