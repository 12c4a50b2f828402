"""MaskedModeling: no information from hidden tokens reaches their predictions (MAE, SimMIM/BERT,
permuted LM and the fused stage-2 path), defaults and config errors, and the losses fall with training."""

from __future__ import annotations

import pytest
import torch

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.models.masked import MaskedModeling, MaskOptions
from highmodal.models.registry import create_model
from highmodal.nn.masking import RECONSTRUCTION
from highmodal.tasks import Task

SPECS = [ModalitySpec("img", "image", (4, 4, 4)), ModalitySpec("seq", "time_series", (None, 3), max_len=16),
         ModalitySpec("words", "text", (None, 1), max_len=10, vocab_size=30),
         ModalitySpec("nodes", "graph", (None, 5), max_len=8),
         ModalitySpec("pts", "point_cloud", (None, 3), max_len=32)]
TASKS = [Task("pair", ("img", "seq"), "classification", 2), Task("text", ("words",), "classification", 2),
         Task("graph", ("nodes",), "classification", 2), Task("shape", ("pts",), "classification", 2)]


def model():
    torch.manual_seed(0)
    return create_model("omnivec2", SPECS, TASKS, preset="tiny")


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (4, 10, 1), generator=g).float()
    ids[2, 6:] = 0
    seq_mask = torch.ones(4, 16, dtype=torch.bool)
    seq_mask[1, 9:] = False
    return {"img": torch.randn(4, 4, 4, 4, generator=g), "seq": torch.randn(4, 16, 3, generator=g),
            "seq_mask": seq_mask, "words": ids, "nodes": torch.randn(4, 8, 5, generator=g),
            "pts": torch.randn(4, 32, 3, generator=g)}


def predictions(mm, b, modality, seed=0, stage=1, partner=None):
    torch.manual_seed(seed)
    e = mm.encode(b, modality, stage)
    h = None
    if partner is not None:
        torch.manual_seed(seed + 1)
        ep = mm.encode(b, partner, stage)
        h = mm.model.fuse((e.h, e.mask), (ep.h, ep.mask))[0][0]
    return e, mm.reconstruct(e, modality, h)[0]


def hidden_changed(b, modality, e, tokens_of):
    """``b`` with the input under every hidden (scored) token of sample 0 changed."""
    out = dict(b)
    x = b[modality].clone()
    for tok in e.predicted[0].nonzero().flatten().tolist():
        x[(0, *tokens_of(tok))] += 5.0
    out[modality] = x
    return out


@pytest.mark.parametrize("modality,tokens_of", [
    ("img", lambda t: (slice(t // 4, t // 4 + 1), slice(t % 4, t % 4 + 1))),  # 4x4 grid, patch 1
    ("nodes", lambda t: (slice(t, t + 1),)),
])
def test_predictions_ignore_the_hidden_inputs(modality, tokens_of):
    mm = MaskedModeling(model(), [modality]).eval()
    b = batch()
    e, before = predictions(mm, b, modality)
    assert e.predicted[0].any()
    _, after = predictions(mm, hidden_changed(b, modality, e, tokens_of), modality)
    torch.testing.assert_close(before, after)


def test_series_patches_hidden_through_the_fused_path():
    mm = MaskedModeling(model(), ["img", "seq"]).eval()
    b = batch()
    patch = mm.model.tokenizers["seq"].patch
    e, before = predictions(mm, b, "seq", stage=2, partner="img")
    changed = hidden_changed(b, "seq", e, lambda t: (slice(t * patch, (t + 1) * patch),))
    _, after = predictions(mm, changed, "seq", stage=2, partner="img")
    torch.testing.assert_close(before, after)
    _, moved = predictions(mm, b | {"img": b["img"] + 1.0}, "seq", stage=2, partner="img")
    assert not torch.allclose(before, moved)  # the other stream does reach the decoder


def test_permuted_lm_queries_see_only_earlier_predicted_tokens():
    mm = MaskedModeling(model(), ["words"], {"text": MaskOptions(strategy="permuted", ratio=0.5)}).eval()
    b = batch()
    torch.manual_seed(0)
    e = mm.encode(b, "words", 1)
    order = e.scored[0][0][e.scored[1][0]].tolist()  # sample 0's predicted positions, by rank
    _, before = predictions(mm, b, "words")
    for r, pos in enumerate(order):
        ids = b["words"].clone()
        ids[0, pos, 0] = 29 if ids[0, pos, 0] != 29 else 28
        _, after = predictions(mm, b | {"words": ids}, "words")
        same = (after[0, : len(order)] - before[0, : len(order)]).abs().amax(-1) < 1e-5
        assert same[: r + 1].all(), f"a query of rank <= {r} saw the token of rank {r}"
        if r + 1 < len(order):
            assert not same[r + 1:].all()


def test_defaults_follow_the_paper_and_errors_name_the_field():
    mm = MaskedModeling(model(), ["img", "words", "nodes", "pts", "seq"])
    assert (mm.options["img"].strategy, mm.options["img"].ratio, mm.options["img"].norm_targets) == ("drop", 0.95, True)
    assert (mm.options["pts"].ratio, mm.options["words"].strategy, mm.options["nodes"].strategy) == (0.9, "bert",
                                                                                                      "replace")
    with pytest.raises(HighmodalError, match=r"pretrain.masking.image.ratio"):
        MaskedModeling(model(), ["img"], {"image": MaskOptions(ratio=1.0)})
    with pytest.raises(HighmodalError, match=r"pretrain.masking.graph.strategy: 'drop' needs token positions"):
        MaskedModeling(model(), ["nodes"], {"graph": MaskOptions(strategy="drop")})
    with pytest.raises(HighmodalError, match=r"pretrain.masking.image.strategy: 'mae' is not one of"):
        MaskedModeling(model(), ["img"], {"image": MaskOptions(strategy="mae")})
    unified = create_model("omnivec2", SPECS[:2], TASKS[:1], preset="tiny", tokenizer="unified")
    with pytest.raises(HighmodalError, match="modality tokenizers"):
        MaskedModeling(unified, ["img"])


@pytest.mark.parametrize("modality,options", [("img", None), ("words", None), ("nodes", None), ("pts", None),
                                              ("words", {"text": MaskOptions(strategy="permuted", ratio=0.3)})])
def test_stage1_loss_falls_on_a_fixed_batch(modality, options):
    mm = MaskedModeling(model(), [modality], options)
    opt = torch.optim.AdamW(mm.parameters(), lr=3e-3)
    b = batch()
    losses = []
    for step in range(40):
        torch.manual_seed(step % 4)  # a few masks, revisited
        loss = mm.stage1_loss(b, modality)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses


def test_stage2_scores_both_streams():
    mm = MaskedModeling(model(), ["img", "seq"])
    b = batch()
    losses = mm.stage2_loss(b, "img", b, "seq")
    assert set(losses) == {"img", "seq"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert mm.model.fuse_in.attn.to_q.weight.grad is not None and mm.model.g.blocks[0].attn.to_q.weight.grad is not None


def test_contrastive_loss_aligns_the_streams_embeddings():
    """A few steps on the InfoNCE loss of one batch of pairs make each row's two embeddings each
    other's nearest neighbours, which masked reconstruction never asks for."""
    mm = MaskedModeling(model(), ["img", "seq"])
    g = torch.Generator().manual_seed(1)
    b = {"img": torch.randn(16, 4, 4, 4, generator=g), "seq": torch.randn(16, 16, 3, generator=g)}

    def top1() -> float:
        with torch.no_grad():
            a = torch.nn.functional.normalize(mm.model.embed(b, "img"), dim=-1)
            s = torch.nn.functional.normalize(mm.model.embed(b, "seq"), dim=-1)
        return float(((a @ s.T).argmax(1) == torch.arange(16)).float().mean())

    before = top1()
    opt = torch.optim.Adam(mm.parameters(), lr=1e-3)
    for _ in range(40):
        loss = mm.contrastive_loss(b, "img", b, "seq", temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.5 and top1() == 1.0


@pytest.mark.parametrize("modality", ["seq", "words", "pts", "nodes", "img"])
def test_scored_slots_are_the_predicted_tokens(modality):
    """The host-sized slots hold every predicted token once and nothing else counts in the loss."""
    mm = MaskedModeling(model(), [modality])
    torch.manual_seed(0)
    e = mm.encode(batch(), modality, 1)
    idx, valid = e.scored
    assert torch.equal(torch.zeros_like(e.predicted).scatter(1, idx, valid), e.predicted)
    assert idx.shape[1] == e.predicted.sum(1).max()  # a full-length sample sets the bound
    assert modality != "seq" or not valid.all()  # the short series (sample 1) has filler slots
    pred, target, valid = mm.reconstruct(e, modality)
    per_token = RECONSTRUCTION.get(mm.model.tokenizers[modality].target_loss)(pred[valid], target[valid])
    torch.testing.assert_close(mm.loss(e, modality), per_token.mean())
