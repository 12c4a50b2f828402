"""HighMMT: paper-setting size, head widths, weight sharing, crossmodal batching, presets, predict()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.models import create_model
from highmodal.models.base import Piece
from highmodal.models.highmmt import PRESETS, HighMMT, resolve_config
from highmodal.nn.crossmodal import CrossmodalTransformer
from highmodal.nn.perceiver import PerceiverEncoder
from highmodal.tasks import Task


def _paper_specs() -> list[ModalitySpec]:
    seq = dict(num_freq_bands=3)
    return [
        ModalitySpec("static", "tabular", (5, 1)),
        ModalitySpec("timeseries", "time_series", (24, 12, 1)),
        ModalitySpec("image", "image", (7, 7, 16)),
        ModalitySpec("audio", "audio", (7, 7, 256)),
        ModalitySpec("f1", "audio", (50, 35), **seq),
        ModalitySpec("f2", "audio", (50, 74), **seq),
        ModalitySpec("f3", "text", (50, 300), **seq),
        ModalitySpec("f4", "video", (50, 371), **seq),
        ModalitySpec("f5", "audio", (50, 81), **seq),
    ]


def _paper_tasks() -> list[Task]:
    return [
        Task("mimic", ("static", "timeseries"), "classification", 2),
        Task("avmnist", ("image", "audio"), "classification", 10),
        Task("mosei", ("f1", "f2", "f3"), "classification", 2),
        Task("humor", ("f4", "f5", "f3"), "classification", 2),
    ]


@pytest.fixture(scope="module")
def large_model() -> HighMMT:
    torch.manual_seed(0)
    return create_model("highmmt", _paper_specs(), _paper_tasks(), preset="large")


def test_large_preset_matches_reference_size(large_model):
    assert large_model.standardizer.d_all == 387  # f4: 371 + 9 + 1*(2*3+1)
    assert sum(p.numel() for p in large_model.parameters()) == 527_382


def test_head_input_dims(large_model):
    dims = {name: head[1].in_features for name, head in large_model.heads.items()}
    assert dims == {"mimic": 2 * 64, "avmnist": 2 * 64, "mosei": 6 * 64, "humor": 6 * 64}
    assert {name: head[0].normalized_shape for name, head in large_model.heads.items()}["mosei"] == (6 * 64,)
    assert {name: head[1].out_features for name, head in large_model.heads.items()} == {
        "mimic": 2, "avmnist": 10, "mosei": 2, "humor": 2,
    }
    uni = Task("uni", ("f1",), "classification", 3)
    assert large_model.feature_dim(uni) == 20 * 64


def test_large_forward_on_three_modality_task(large_model):
    large_model.eval()
    batch = {"f4": torch.randn(2, 50, 371), "f5": torch.randn(2, 50, 81), "f3": torch.randn(2, 50, 300)}
    feats = large_model.features(batch, "humor")
    assert feats.shape == (2, 6 * 64)
    out = large_model(batch, "humor")
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    head = large_model.heads["humor"]
    torch.testing.assert_close(out, head[1](head[0](feats)))


# ---------------------------------------------------------------- tiny models


def _tiny_specs() -> list[ModalitySpec]:
    return [
        ModalitySpec("a", "time_series", (6, 3), num_freq_bands=2),
        ModalitySpec("b", "image", (3, 3, 2), num_freq_bands=2),
        ModalitySpec("c", "audio", (None, 4), num_freq_bands=2, max_len=8),
    ]


def _tiny_tasks() -> list[Task]:
    return [
        Task("ab", ("a", "b"), "classification", 3),
        Task("c_only", ("c",), "classification", 2),
        Task("abc", ("a", "b", "c"), "regression", 2, target_mean=(10.0, -1.0), target_std=(2.0, 3.0)),
    ]


def _tiny(**overrides) -> HighMMT:
    torch.manual_seed(0)
    return create_model("highmmt", _tiny_specs(), _tiny_tasks(), preset="tiny", **overrides)


def _batch(b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return {
        "a": torch.randn(b, 6, 3, generator=g),
        "b": torch.randn(b, 3, 3, 2, generator=g),
        "c": torch.randn(b, 5, 4, generator=g),
        "c_mask": mask,
    }


def test_one_encoder_shared_by_all_modalities_and_tasks():
    model = _tiny()
    encoders = [m for m in model.modules() if isinstance(m, PerceiverEncoder)]
    assert len(encoders) == 1 and encoders[0] is model.encoder
    assert len([m for m in model.modules() if isinstance(m, CrossmodalTransformer)]) == 1
    # No modality owns any parameter.
    assert not any(part in {"a", "b", "c"} for name, _ in model.named_parameters() for part in name.split("."))

    batch = _batch()
    grads = {}
    for task in ("ab", "c_only"):
        model.zero_grad()
        model(batch, task).sum().backward()
        grads[task] = {n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None}
    shared = ["latents", "layers.0.cross_attn.fn.to_q.weight", "layers.0.cross_attn.fn.to_kv.weight"]
    for name in shared:
        for task in grads:
            assert grads[task][name].abs().sum() > 0, (task, name)
    # the unimodal task never touches the crossmodal transformer
    model.zero_grad()
    model(batch, "c_only").sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.crossmodal.parameters())


def test_adding_tasks_only_adds_heads():
    specs = _tiny_specs()
    torch.manual_seed(0)
    one = create_model("highmmt", specs, _tiny_tasks()[:1], preset="tiny")
    all_ = _tiny()
    def body(m):
        return sum(p.numel() for n, p in m.named_parameters() if not n.startswith("heads."))
    assert body(one) == body(all_)
    assert set(all_.heads) == {"ab", "c_only", "abc"}


def test_joint_encoding_equals_separate_encoding():
    model = _tiny().eval()
    batch = _batch()
    joint = model.encode(batch, ["a", "b", "c"])
    for i, name in enumerate(["a", "b", "c"]):
        alone = model.encode(batch, [name])[0]
        torch.testing.assert_close(joint[i], alone, rtol=0, atol=1e-5)


def test_variable_modality_ignores_padding_beyond_mask():
    model = _tiny().eval()
    batch = _batch()
    longer = dict(batch)
    longer["c"] = torch.cat([batch["c"], torch.randn(3, 2, 4)], dim=1)
    longer["c_mask"] = torch.cat([batch["c_mask"], torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(longer, "c_only"), model(batch, "c_only"), rtol=0, atol=1e-5)


def test_crossmodal_batched_equals_pairwise():
    torch.manual_seed(0)
    cm = CrossmodalTransformer(
        8, depth=2, cross_heads=2, cross_dim_head=4, latent_heads=2, latent_dim_head=4, ff_mult=2
    ).eval()
    latents = [torch.randn(2, 5, 8) for _ in range(3)]
    out = cm(latents)
    expected = []
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            x = latents[i]
            for layer in cm.layers:
                x = layer(x, latents[j])
            expected.append(x[:, -1])
    assert out.shape == (2, 6 * 8)
    torch.testing.assert_close(out, torch.cat(expected, dim=1), rtol=0, atol=1e-5)
    # order matters: (0→1) is not (1→0)
    assert not torch.allclose(expected[0], expected[2], atol=1e-3)


def test_two_modality_features_are_the_two_ordered_pairs():
    model = _tiny().eval()
    batch = _batch()
    la, lb = model.encode(batch, ["a", "b"])
    torch.testing.assert_close(model.features(batch, "ab"), model.crossmodal([la, lb]), rtol=0, atol=1e-5)
    unimodal = model.features(batch, "c_only")
    torch.testing.assert_close(unimodal, model.encode(batch, ["c"])[0].flatten(1))
    assert unimodal.shape == (3, 8 * 32)


def test_unknown_preset_and_option():
    with pytest.raises(HighmodalError, match=r"unknown HighMMT preset 'larg'.*did you mean 'large'"):
        create_model("highmmt", _tiny_specs(), _tiny_tasks(), preset="larg")
    with pytest.raises(HighmodalError, match=r"unknown HighMMT option 'num_latent'.*did you mean 'num_latents'"):
        create_model("highmmt", _tiny_specs(), _tiny_tasks(), preset="tiny", num_latent=4)
    with pytest.raises(HighmodalError, match="did you mean 'highmmt'"):
        create_model("highmmtt", _tiny_specs(), _tiny_tasks())


def test_resolve_config_overrides():
    cfg = resolve_config("small", num_latents=5)
    assert cfg.num_latents == 5
    assert cfg.latent_heads == PRESETS["small"].latent_heads == 8
    assert PRESETS["small"].num_latents == 20  # presets are not mutated
    model = _tiny(num_latents=5)
    assert model.encoder.latents.shape == (5, 32)
    assert model.heads["c_only"][1].in_features == 5 * 32


def test_missing_modality_uses_the_initial_latents_and_unknown_task():
    """Any non-empty subset of a task's modalities is scored: a missing one is replaced by the
    encoder's learned initial latent array; none at all is an error."""
    model = _tiny().eval()
    batch = _batch()
    full = model(batch, "ab")
    del batch["b"]
    partial = model(batch, "ab")
    assert partial.shape == full.shape and not torch.allclose(partial, full)
    b = batch["a"].shape[0]
    a_latents = model.encode(batch, ["a"])[0]
    standin = model.encoder.latents.expand(b, -1, -1)
    expected = model.heads["ab"](model.crossmodal([a_latents, standin]))
    torch.testing.assert_close(partial, expected)
    del batch["a"]
    with pytest.raises(HighmodalError, match=r"'ab'.*none of its modalities"):
        model(batch, "ab")
    with pytest.raises(HighmodalError, match=r"unknown task .abd.*did you mean"):
        model.task("abd")


def test_unknown_task_in_forward_is_a_highmodal_error():
    model = _tiny()
    with pytest.raises(HighmodalError, match=r"unknown task .abd.*did you mean"):
        model.predict(_batch(), "abd")


def test_predict_classification_is_argmax_of_softmax():
    model = _tiny(ff_dropout=0.5, attn_dropout=0.5)
    batch = _batch()
    model.train()
    res = model.predict(batch, "ab")
    assert model.training  # mode restored
    model.eval()
    raw = model(batch, "ab")
    probs = raw.softmax(-1)
    torch.testing.assert_close(res["probs"], probs)
    assert torch.equal(res["pred"], probs.argmax(-1))
    torch.testing.assert_close(res["probs"].sum(-1), torch.ones(3))
    assert not res["probs"].requires_grad
    res2 = model.predict(batch, "ab")
    assert not model.training  # eval stays eval
    torch.testing.assert_close(res2["probs"], res["probs"])


def test_predict_regression_destandardises():
    model = _tiny()
    model.train()
    batch = _batch()
    res = model.predict(batch, "abc")
    assert model.training
    model.eval()
    raw = model(batch, "abc")
    assert set(res) == {"pred"}
    torch.testing.assert_close(res["pred"], raw * torch.tensor([2.0, 3.0]) + torch.tensor([10.0, -1.0]))


def test_predict_regression_without_stats_is_raw():
    torch.manual_seed(0)
    tasks = [Task("r", ("a",), "regression", 1)]
    model = create_model("highmmt", _tiny_specs()[:1], tasks, preset="tiny").eval()
    batch = {"a": torch.randn(2, 6, 3)}
    torch.testing.assert_close(model.predict(batch, "r")["pred"], model(batch, "r"))


def test_batchnorm_head_option():
    model = _tiny(head_norm="batchnorm")
    assert isinstance(model.heads["ab"][0], nn.BatchNorm1d)
    with pytest.raises(HighmodalError, match="did you mean 'layernorm'"):
        _tiny(head_norm="layernorn")


def test_without_modality_embedding_same_size_different_codes():
    a, b = _tiny(), _tiny(modality_embedding=False)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert b.standardizer.shared_embedding is False


@pytest.mark.parametrize("grouped", [False, True])
def test_a_fused_step_equals_each_piece_alone(grouped):
    """step_outputs encodes every piece's modalities in one encoder call and runs their pairs in one
    crossmodal call (pieces of unequal batch size apart); each output must equal the piece alone."""
    groups = dict(unimodal_groups={"abc/b": 1, "ab/a": 1}, crossmodal_groups={"abc/a+c": 1}) if grouped else {}
    model = _tiny(**groups).eval()
    big, small = _batch(3), _batch(2)
    missing = {k: v for k, v in small.items() if k != "b"}
    pieces = [Piece("ab", None, big), Piece("abc", None, small), Piece("c_only", None, big),
              Piece("abc", None, big), Piece("abc", None, missing)]
    fused = model.step_outputs(pieces)
    for p, out in zip(pieces, fused, strict=True):
        torch.testing.assert_close(out, model(p.batch, p.task), rtol=1e-5, atol=1e-5)


def test_features_equal_the_plain_computation():
    """End to end against the textbook forward: materialised d_all-wide tokens through the encoder,
    every ordered pair through every crossmodal layer in full, the last latent of each kept."""
    model = _tiny(crossmodal_depth=2).eval()
    batch = _batch()
    latents = [model.encoder(*model.standardizer(m, batch[m], batch.get(f"{m}_mask"))) for m in ("a", "b", "c")]
    expected = []
    for i, j in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]:
        x = latents[i]
        for layer in model.crossmodal.layers:
            x = layer(x, latents[j])
        expected.append(x[:, -1])
    torch.testing.assert_close(model.features(batch, "abc"), torch.cat(expected, 1), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- aligned tasks


def _aligned_model(**overrides) -> HighMMT:
    specs = [ModalitySpec("ir", "infrared", (3, 3, 2), num_freq_bands=2),
             ModalitySpec("rgb", "image", (3, 3, 6), num_freq_bands=2)]
    tasks = [Task("pair", ("ir", "rgb"), "classification", 2, aligned=True),
             Task("loose", ("ir", "rgb"), "classification", 2)]
    torch.manual_seed(0)
    return create_model("highmmt", specs, tasks, preset="tiny", **overrides)


def _aligned_batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {"ir": torch.randn(b, 3, 3, 2, generator=g), "rgb": torch.randn(b, 3, 3, 6, generator=g)}


def test_an_aligned_task_adds_the_token_comparison_of_each_ordered_pair():
    model = _aligned_model().eval()
    latent, width = model.cfg.latent_dim, model.cfg.aligned_dim
    assert model.feature_dim(model.task("pair")) == 2 * (latent + width)
    assert model.feature_dim(model.task("loose")) == 2 * latent
    batch = _aligned_batch()
    feats = model.features(batch, "pair")
    tokens = {m: model.standardizer(m, batch[m])[0] for m in ("ir", "rgb")}
    expected_aligned = [model.aligned(tokens["ir"], tokens["rgb"]), model.aligned(tokens["rgb"], tokens["ir"])]
    torch.testing.assert_close(feats[:, 2 * latent:], torch.cat(expected_aligned, 1))
    torch.testing.assert_close(feats[:, :2 * latent], model.features(batch, "loose"))  # one shared crossmodal
    pieces = [Piece("pair", None, batch), Piece("loose", None, batch),
              Piece("pair", None, {"ir": batch["ir"]})]
    for p, out in zip(pieces, model.step_outputs(pieces), strict=True):
        torch.testing.assert_close(out, model(p.batch, p.task), rtol=1e-5, atol=1e-5)


def test_a_missing_modality_reads_zeros_for_the_aligned_part():
    model = _aligned_model().eval()
    feats = model.features({"ir": _aligned_batch()["ir"]}, "pair")
    assert torch.all(feats[:, 2 * model.cfg.latent_dim:] == 0)


def test_without_aligned_tasks_or_with_aligned_dim_0_nothing_is_added():
    off = _aligned_model(aligned_dim=0)
    assert off.aligned is None and off.feature_dim(off.task("pair")) == 2 * off.cfg.latent_dim
    plain = _tiny()
    assert plain.aligned is None  # the tiny suite declares no aligned task: its size is unchanged
    on = _aligned_model()
    head_extra = (2 + 2) * 2 * on.cfg.aligned_dim  # per added feature: LayerNorm weight and bias, 2 output rows
    extra = sum(p.numel() for p in on.aligned.parameters()) + head_extra
    assert sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters()) == extra


def test_a_checkpointed_task_without_the_field_is_not_aligned():
    saved = Task("pair", ("ir", "rgb"), "classification", 2, aligned=True).to_dict()
    assert Task.from_dict(saved).aligned
    del saved["aligned"]
    assert not Task.from_dict(saved).aligned


def _fit_pairs(aligned: bool) -> float:
    """Training accuracy after 150 steps on 128 digit images paired with an inverted, noisy copy of
    themselves (label 1) or of another digit (label 0): only their agreement, place by place, tells."""
    import numpy as np
    from sklearn.datasets import load_digits

    img = load_digits().images[:128].astype(np.float32) / 16
    rng = np.random.default_rng(0)
    n = len(img)
    other = np.concatenate([img, img[np.roll(np.arange(n), 1)]])
    other = 1 - other + rng.normal(scale=0.1, size=other.shape).astype(np.float32)

    def tokens(x: np.ndarray) -> torch.Tensor:  # 8x8 images -> 4x4 grid of 2x2 patches
        return torch.tensor(x.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 4, 4))

    a, b, y = tokens(np.concatenate([img, img])), tokens(other), torch.tensor(np.repeat([1, 0], n))
    specs = [ModalitySpec("a", "image", (4, 4, 4), num_freq_bands=2),
             ModalitySpec("b", "infrared", (4, 4, 4), num_freq_bands=2)]
    torch.manual_seed(0)
    model = create_model("highmmt", specs, [Task("pair", ("a", "b"), "classification", 2, aligned=aligned)],
                         preset="tiny")
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(150):
        i = torch.randint(0, 2 * n, (64,))
        loss = torch.nn.functional.cross_entropy(model({"a": a[i], "b": b[i]}, "pair"), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (model.eval()({"a": a, "b": b}, "pair").argmax(1) == y).float().mean().item()


def test_the_aligned_comparison_learns_a_pairing_the_latents_alone_cannot():
    assert _fit_pairs(aligned=True) > 0.8
    assert _fit_pairs(aligned=False) < 0.65
