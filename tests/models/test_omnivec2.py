"""OmniVec2: presets, single-stream inference without cross-attention, two-stream fusion, masking,
the Table 12 ablation variants, and heads per modality × task."""

from __future__ import annotations

import pytest
import torch

from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.models.base import Piece
from highmodal.models.omnivec2 import PRESETS, resolve_config
from highmodal.training.batching import TaskTensors

TASKS = [
    {"name": "digits", "source": "sklearn_digits"},
    {"name": "motions", "source": "basic_motions"},
    {"name": "vowels", "source": "japanese_vowels"},
    {"name": "cancer", "source": "breast_cancer"},
]


@pytest.fixture(scope="module")
def suite():
    return build_suite(TASKS, LoadContext(seed=0))


def model_for(suite, **options):
    torch.manual_seed(0)
    return create_model("omnivec2", suite.specs, [td.task for td in suite], preset="tiny", **options).eval()


def batch(suite, task: str, rows=slice(0, 6)) -> dict[str, torch.Tensor]:
    td = suite[task]
    return TaskTensors(td.task, td.splits["train"]).batch(rows)


def test_presets_and_bad_options():
    assert set(PRESETS) == {"tiny", "small", "base"}
    assert resolve_config("base").d_model == 768
    with pytest.raises(HighmodalError, match=r"unknown OmniVec2 option 'fusion_dims'.*fusion_dim"):
        resolve_config("tiny", fusion_dims=3)
    with pytest.raises(HighmodalError, match=r"model.options.head: 'shared' is not one of task, unified"):
        resolve_config("tiny", head="shared")


def test_one_head_per_modality_and_task(suite):
    model = model_for(suite)
    assert set(model.heads["motions"]) == {"accelerometer", "gyroscope"}
    for name in ("digits", "motions", "vowels", "cancer"):
        out = model(batch(suite, name), name)
        assert out.shape == (6, suite[name].task.out_dim) and torch.isfinite(out).all()


def test_single_stream_inference_never_uses_cross_attention(suite):
    model = model_for(suite)
    b = batch(suite, "motions")
    before = model(b, "motions")
    with torch.no_grad():
        for p in [*model.fuse_in.parameters(), *model.fuse_out.parameters()]:
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(model(b, "motions"), before)
    # h∘g∘f per present modality, averaged
    manual = torch.stack([model.head((model.g(*model.stream(b, m)), None), "motions", m)
                          for m in ("accelerometer", "gyroscope")]).mean(0)
    torch.testing.assert_close(before, manual)


def test_fused_path_mixes_the_two_streams(suite):
    model = model_for(suite)
    a, b = batch(suite, "digits"), batch(suite, "vowels")
    (out_a, single_a), (out_b, _) = model.step_outputs([Piece("digits", "digit_pixels", a),
                                                        Piece("vowels", "lpc_cepstra", b)])
    other = batch(suite, "vowels", slice(6, 12))
    (again, single_again), _ = model.step_outputs([Piece("digits", "digit_pixels", a),
                                                   Piece("vowels", "lpc_cepstra", other)])
    assert not torch.allclose(out_a, again), "stream a's output must depend on stream b's input"
    # the single-stream output trained beside it is the inference path, whatever the partner
    torch.testing.assert_close(single_a, single_again)
    torch.testing.assert_close(single_a, model(a, "digits"))
    (out_a.sum() + out_b.sum()).backward()
    for name in ("fuse_in", "fuse_out", "g", "f", "reduce"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert model.heads["digits"]["digit_pixels"][1].weight.grad is not None
    assert model.heads["cancer"]["cell_nuclei"][1].weight.grad is None


def test_fused_only_training_and_self_fusion_inference(suite):
    model = model_for(suite, train_single=False, inference="self")
    a, b = batch(suite, "digits"), batch(suite, "vowels")
    outs = model.step_outputs([Piece("digits", "digit_pixels", a), Piece("vowels", "lpc_cepstra", b)])
    assert all(isinstance(o, torch.Tensor) for o in outs)  # the fused path only
    za, _ = model.fuse(model.stream(a, "digit_pixels"), model.stream(a, "digit_pixels"))
    torch.testing.assert_close(model(a, "digits"), model.head(za, "digits", "digit_pixels"))


def test_piece_loss_averages_the_paths():
    from highmodal.models.base import piece_loss

    y = torch.tensor([0, 1])
    x, z = torch.randn(2, 3), torch.randn(2, 3)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(piece_loss(ce, (x, z), y), (ce(x, y) + ce(z, y)) / 2)
    torch.testing.assert_close(piece_loss(ce, x, y), ce(x, y))


def test_fused_inference_option(suite):
    model = model_for(suite, inference="fused")
    b = batch(suite, "motions")
    out = model(b, "motions")
    (za, zb) = model.fuse(model.stream(b, "accelerometer"), model.stream(b, "gyroscope"))
    manual = (model.head(za, "motions", "accelerometer") + model.head(zb, "motions", "gyroscope")) / 2
    torch.testing.assert_close(out, manual)
    only = {k: v for k, v in b.items() if not k.startswith("gyroscope")}
    assert model(only, "motions").shape == out.shape  # one modality present: single stream


def test_padding_does_not_change_a_variable_length_sample(suite):
    model = model_for(suite)
    td = suite["vowels"]
    data = TaskTensors(td.task, td.splits["train"])
    lengths = data.masks["lpc_cepstra"].sum(1)
    short, long = int(lengths.argmin()), int(lengths.argmax())
    alone = data.batch(torch.tensor([short]))
    n = int(lengths[short])
    alone["lpc_cepstra"], alone["lpc_cepstra_mask"] = alone["lpc_cepstra"][:, :n], alone["lpc_cepstra_mask"][:, :n]
    together = data.batch(torch.tensor([short, long]))
    torch.testing.assert_close(model(alone, "vowels")[0], model(together, "vowels")[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options", [{"tokenizer": "unified"}, {"head": "unified"},
                                     {"tokenizer": "unified", "head": "unified"}])
def test_ablation_variants(suite, options):
    model = model_for(suite, **options)
    base = model_for(suite)
    assert hasattr(model, "unified_tokenizer") == (options.get("tokenizer") == "unified")
    assert hasattr(model, "unified_head") == (options.get("head") == "unified")
    for name in ("digits", "motions"):
        out = model(batch(suite, name), name)
        assert out.shape == base(batch(suite, name), name).shape and torch.isfinite(out).all()
    if options.get("tokenizer") == "unified":
        assert not any(n.startswith("tokenizers.") for n, _ in model.named_parameters())


def test_embedding_for_probes(suite):
    model = model_for(suite)
    emb = model.embed(batch(suite, "digits"), "digit_pixels")
    assert emb.shape == (6, PRESETS["tiny"].fusion_dim)
    with pytest.raises(HighmodalError, match="modality 'nope' is not one of the model's"):
        model.embed({"nope": torch.zeros(2, 3, 1)}, "nope")


# ---------------------------------------------------------------- joint (and aligned) tasks


def _joint_model(**overrides):
    from highmodal.modalities.spec import ModalitySpec
    from highmodal.tasks import Task

    specs = [ModalitySpec("ir", "infrared", (4, 4, 4)), ModalitySpec("rgb", "image", (4, 4, 4))]
    tasks = [Task("pair", ("ir", "rgb"), "classification", 2, aligned=True, joint=True),
             Task("loose", ("ir", "rgb"), "classification", 2)]
    torch.manual_seed(0)
    return create_model("omnivec2", specs, tasks, preset="tiny", **overrides).eval()


def test_a_joint_task_predicts_and_trains_through_its_fused_path_only():
    model = _joint_model()
    assert set(model.compare) == {"pair"}  # only the joint, aligned task gets the comparison
    g = torch.Generator().manual_seed(1)
    b = {"ir": torch.randn(5, 4, 4, 4, generator=g), "rgb": torch.randn(5, 4, 4, 4, generator=g)}
    out = model(b, "pair")
    streams = (model.stream(b, "ir"), model.stream(b, "rgb"))
    torch.testing.assert_close(out, torch.stack(model.fused_heads("pair", b, "ir", "rgb", streams)).mean(0))
    za, _ = model.fuse(*streams)
    assert not torch.allclose(model.fused_heads("pair", b, "ir", "rgb", streams)[0], model.head(za, "pair", "ir"))
    shuffled = {"ir": b["ir"], "rgb": b["rgb"][torch.tensor([1, 2, 3, 4, 0])]}
    assert not torch.allclose(model(shuffled, "pair"), out)  # the prediction reads the pairing
    reversed_pieces = model.step_outputs([Piece("pair", "rgb", b), Piece("pair", "ir", b)])
    assert all(isinstance(o, torch.Tensor) for o in reversed_pieces)  # no single-stream path trained
    torch.testing.assert_close(torch.stack(reversed_pieces).mean(0), out)  # either order, the same comparison
    with pytest.raises(HighmodalError, match=r"task 'pair' is joint.*holds \['ir'\]"):
        model({"ir": b["ir"]}, "pair")
    loose = model({"ir": b["ir"]}, "loose")  # an ordinary task still predicts from one modality
    assert loose.shape == (5, 2)
    assert len(_joint_model(compare_aligned=False).compare) == 0


def test_a_checkpointed_task_without_the_joint_field_is_not_joint():
    from highmodal.tasks import Task

    saved = Task("pair", ("ir", "rgb"), "classification", 2, joint=True).to_dict()
    assert Task.from_dict(saved).joint
    del saved["joint"]
    assert not Task.from_dict(saved).joint
    with pytest.raises(HighmodalError, match=r"declared joint .* has one modality"):
        Task("one", ("ir",), "classification", 2, joint=True)


def _fit_pairs(compare: bool) -> float:
    """Training accuracy of the fused path after 150 pairwise steps on 128 digit images paired with an
    inverted, noisy copy of themselves (label 1) or of another digit (label 0)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from highmodal.modalities.spec import ModalitySpec
    from highmodal.models.base import piece_loss
    from highmodal.tasks import Task

    img = load_digits().images[:128].astype(np.float32) / 16
    rng = np.random.default_rng(0)
    n = len(img)
    other = np.concatenate([img, img[np.roll(np.arange(n), 1)]])
    other = 1 - other + rng.normal(scale=0.1, size=other.shape).astype(np.float32)

    def tokens(x: np.ndarray) -> torch.Tensor:  # 8x8 images -> 4x4 grid of 2x2 patches
        return torch.tensor(x.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 4, 4))

    a, b, y = tokens(np.concatenate([img, img])), tokens(other), torch.tensor(np.repeat([1, 0], n))
    specs = [ModalitySpec("a", "image", (4, 4, 4)), ModalitySpec("b", "infrared", (4, 4, 4))]
    torch.manual_seed(0)
    model = create_model("omnivec2", specs, [Task("pair", ("a", "b"), "classification", 2, aligned=True,
                                                  joint=True)], preset="tiny", compare_aligned=compare)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(150):
        i = torch.randint(0, 2 * n, (64,))
        rows = {"a": a[i], "b": b[i]}
        outs = model.step_outputs([Piece("pair", "a", rows), Piece("pair", "b", rows)])
        loss = sum(piece_loss(torch.nn.functional.cross_entropy, o, y[i]) for o in outs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (model.eval()({"a": a, "b": b}, "pair").argmax(1) == y).float().mean().item()


def test_the_aligned_comparison_learns_a_pairing_cross_attention_alone_does_not():
    assert _fit_pairs(compare=True) > 0.8
    assert _fit_pairs(compare=False) < 0.65
