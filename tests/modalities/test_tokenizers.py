"""OmniVec2's modality tokenizers on real data: token counts for the real shapes, finite outputs,
gradients to every parameter, mask semantics (a sample's real tokens do not depend on its batch's
padding), and the defining computation of each design (ViT patch matmul, FPS/kNN grouping, FT
feature tokens, channel independence, spectral groups). Packaged data (scikit-learn, sktime,
scikit-image) always runs; the shared datasets skip when absent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from highmodal.data.loaders import LoadContext, load_task
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import KINDS, ModalitySpec
from highmodal.modalities.tokenizers import TOKENIZERS, Tokenizer, create_tokenizer
from highmodal.modalities.tokenizers.audio import SpectrogramPatches
from highmodal.modalities.tokenizers.graph import NodeEmbedding
from highmodal.modalities.tokenizers.hyperspectral import SpectralGroupEmbedding
from highmodal.modalities.tokenizers.point_cloud import PointGroupEmbedding, farthest_point_sample, knn_group
from highmodal.modalities.tokenizers.sequence import SeriesPatches
from highmodal.modalities.tokenizers.tabular import FeatureTokenizer
from highmodal.modalities.tokenizers.text import TextEmbedding
from highmodal.modalities.tokenizers.video import TubeletEmbedding
from highmodal.modalities.tokenizers.vision import PatchEmbedding

D = 32


def _cached_loader(ctx: LoadContext):
    cache: dict = {}

    def load(source: str, **options):
        key = (source, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = load_task({"name": source, "source": source, **options}, ctx, source)
        return cache[key]

    return load


@pytest.fixture(scope="module")
def packaged():
    """Tasks from data shipped in scikit-learn / sktime, each loaded once."""
    return _cached_loader(LoadContext())


@pytest.fixture(scope="module")
def shared(data_root):
    """Tasks from the shared datasets, each loaded once (skips without them)."""
    return _cached_loader(LoadContext(data_root=data_root))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def samples(td, modality: str, idx, split: str = "train") -> tuple[torch.Tensor, torch.Tensor | None]:
    data = td.splits[split]
    mask = data.masks.get(modality)
    return torch.as_tensor(data.inputs[modality][idx]), None if mask is None else torch.as_tensor(mask[idx])


def tokenizer(td, modality: str, options: dict | None = None, kind: str | None = None) -> Tokenizer:
    return create_tokenizer(td.specs[modality], D, options, kind)


def check_forward(tok: Tokenizer, x: torch.Tensor, mask: torch.Tensor | None, n_tokens: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shape ``(B, n_tokens, D)``, finite, and a loss on the real tokens reaches every parameter."""
    tokens, token_mask = tok(x, mask)
    assert tokens.shape == (len(x), n_tokens, D)
    assert torch.isfinite(tokens).all()
    weights = torch.randn_like(tokens)
    if token_mask is not None:
        assert token_mask.shape == (len(x), n_tokens) and token_mask.dtype == torch.bool
        weights = weights * token_mask[..., None]
    tok.zero_grad()
    (tokens * weights).sum().backward()
    unreached = [name for name, p in tok.named_parameters() if p.grad is None or not p.grad.any()]
    assert not unreached, f"no gradient reaches {unreached}"
    return tokens.detach(), token_mask


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """Real steps per sample of a ``(B, T, ...)`` mask."""
    return mask.reshape(*mask.shape[:2], -1).any(-1).sum(1)


def pair(mask: torch.Tensor, patch: int) -> tuple[int, int]:
    """A sample whose length is not a multiple of ``patch`` (patches > 1) and a strictly longer one."""
    n = lengths(mask)
    short = next(i for i in range(len(n)) if (patch == 1 or n[i] % patch) and n[i] < n.max())
    return short, int(n.argmax())


def assert_padding_invariant(tok: Tokenizer, x: torch.Tensor, mask: torch.Tensor, short: int, long: int) -> None:
    """``short``'s tokens are the same alone (cut to its own length) as batched with the longer
    ``long``, and the tokens past its length are masked out."""
    n = int(lengths(mask)[short])
    alone, alone_mask = tok(x[short:short + 1, :n], mask[short:short + 1, :n])
    both, both_mask = tok(x[[short, long]], mask[[short, long]])
    k = alone.shape[1]
    assert alone_mask.all() and both_mask[0, :k].all() and not both_mask[0, k:].any() and both_mask[1].any()
    torch.testing.assert_close(both[0, :k], alone[0])


# ------------------------------------------------------------------------------------- registry


def test_every_kind_has_a_tokenizer():
    assert set(KINDS) <= set(TOKENIZERS)
    expected = {"image": PatchEmbedding, "xray": PatchEmbedding, "infrared": PatchEmbedding, "depth": PatchEmbedding,
                "video": TubeletEmbedding, "audio": SpectrogramPatches, "text": TextEmbedding,
                "point_cloud": PointGroupEmbedding, "time_series": SeriesPatches, "imu": SeriesPatches,
                "tabular": FeatureTokenizer, "graph": NodeEmbedding, "hyperspectral": SpectralGroupEmbedding}
    assert {k: TOKENIZERS.get(k) for k in KINDS} == expected
    assert all(cls.summary for cls in expected.values())


def test_unknown_option_names_the_key(packaged):
    digits = packaged("sklearn_digits")
    with pytest.raises(HighmodalError, match=r"unknown key 'pach' \(did you mean 'patch'\?\)"):
        tokenizer(digits, "digit_pixels", {"pach": 2})


def test_bad_option_values_name_the_modality(packaged):
    with pytest.raises(HighmodalError, match=r"'digit_pixels'.*patch must be >= 1"):
        tokenizer(packaged("sklearn_digits"), "digit_pixels", {"patch": 0})
    with pytest.raises(HighmodalError, match=r"'accelerometer'.*patch must be >= 1"):
        tokenizer(packaged("basic_motions"), "accelerometer", {"patch": -2})


def test_wrong_input_shape_names_the_modality(packaged):
    tok = tokenizer(packaged("sklearn_digits"), "digit_pixels")
    with pytest.raises(HighmodalError, match=r"'digit_pixels' expected shape \(B, 8, 8, 1\), got \(2, 8, 8, 3\)"):
        tok(torch.zeros(2, 8, 8, 3))


# --------------------------------------------------------------------------------- vision kinds


def disparity_task():
    """The one real depth sample: the Middlebury motorcycle disparity map shipped with scikit-image
    (occluded pixels, stored as inf, become 0 = unknown)."""
    skdata = pytest.importorskip("skimage.data")
    disparity = skdata.stereo_motorcycle()[2]
    x = torch.as_tensor(np.where(np.isfinite(disparity), disparity, 0.0), dtype=torch.float32)[None, ..., None]
    return ModalitySpec("disparity", "depth", tuple(x.shape[1:])), x


def manual_patches(tok: PatchEmbedding, x: torch.Tensor) -> torch.Tensor:
    """ViT by hand: zero-pad, cut p×p patches row-major, flatten (C, p, p), matmul with the conv weight."""
    p, (gh, gw) = tok.patch, tok.grid
    xn = tok.normalised(x)
    xn = torch.nn.functional.pad(xn, (0, 0, 0, gw * p - xn.shape[2], 0, gh * p - xn.shape[1]))
    flat = xn.reshape(len(x), gh, p, gw, p, -1).permute(0, 1, 3, 5, 2, 4).reshape(len(x), gh * gw, -1)
    return flat @ tok.proj.weight.reshape(D, -1).T + tok.proj.bias + tok.pos.reshape(gh * gw, D)


def test_vit_on_sklearn_digits(packaged):
    digits = packaged("sklearn_digits")
    x, _ = samples(digits, "digit_pixels", slice(0, 6))
    tok = tokenizer(digits, "digit_pixels")
    assert tok.patch == 2  # one-pixel tokens would hold 1 value; 2×2 patches hold MIN_TOKEN_VALUES = 4
    check_forward(tok, x, None, 16)
    torch.testing.assert_close(check_forward(tok, x, None, 16)[0], manual_patches(tok, x).detach())
    tok3 = tokenizer(digits, "digit_pixels", {"patch": 3})  # 8 → 9: one padded row and column
    tokens, mask = check_forward(tok3, x, None, 9)
    assert mask is None
    torch.testing.assert_close(tokens, manual_patches(tok3, x).detach())


def test_vit_on_the_real_depth_map():
    spec, x = disparity_task()
    tok = create_tokenizer(spec, D)
    # The smallest p with ceil(500/p)·ceil(741/p) <= 256 is 39 (13 × 19 = 247; p = 38 gives 14 × 20 = 280).
    assert tok.patch == 39 and tok.grid == (13, 19)
    tokens, _ = check_forward(tok, x, None, 247)
    torch.testing.assert_close(tokens, manual_patches(tok, x).detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("source", "modality", "kind"), [
    ("mnist", "mnist_image", "image"), ("pneumoniamnist", "chest_xray", "xray"),
    ("roadscene", "road_infrared", "infrared"), ("roadscene", "road_visible", "image"),
])
def test_vit_on_shared_images(shared, source, modality, kind):
    td = shared(source)
    assert td.specs[modality].kind == kind
    x, _ = samples(td, modality, slice(0, 4))
    tok = tokenizer(td, modality)
    h, w = td.specs[modality].shape[:2]
    assert tok.patch == 1  # the loaders already cut the images into patches: one token per grid cell
    tokens, mask = check_forward(tok, x, None, h * w)
    assert mask is None
    torch.testing.assert_close(tokens, manual_patches(tok, x).detach())


# ---------------------------------------------------------------------------------------- video


def test_tubelets_on_avletters(shared):
    td = shared("avletters")
    spec = td.specs["avletters_video"]
    x, mask = samples(td, "avletters_video", slice(0, 8))
    assert mask.shape == x.shape[:4]  # the loader expands the frame mask over the 3×4 grid
    tok = tokenizer(td, "avletters_video")
    assert (tok.tubelet, tok.patch) == (2, 1)
    _, token_mask = check_forward(tok, x, mask, math.ceil(spec.max_len / 2) * 12)
    expected = (torch.arange(20)[None] * 2 < lengths(mask)[:, None]).repeat_interleave(12, dim=1)
    assert torch.equal(token_mask, expected)  # a tubelet is real when any of its two frames is
    assert torch.equal(tok(x, mask[:, :, 0, 0])[1], token_mask)  # a plain (B, T) frame mask means the same
    assert_padding_invariant(tok, x, mask, *pair(mask, 2))


# ---------------------------------------------------------------------------------------- audio


def test_spectrogram_patches_on_japanese_vowels(packaged):
    td = packaged("japanese_vowels")
    x, mask = samples(td, "lpc_cepstra", slice(0, 12))
    frames = tokenizer(td, "lpc_cepstra")  # default: all 12 cepstra in each patch (SSAST frame patches)
    _, token_mask = check_forward(frames, x, mask, 8)  # 29 frames → 8 time patches
    assert torch.equal(token_mask, torch.arange(8)[None] * 4 < lengths(mask)[:, None])
    tok = tokenizer(td, "lpc_cepstra", {"patch_freq": 8})
    _, token_mask = check_forward(tok, x, mask, 8 * 2)  # 12 cepstra → 2 frequency patches
    expected = (torch.arange(8)[None] * 4 < lengths(mask)[:, None]).repeat_interleave(2, dim=1)
    assert torch.equal(token_mask, expected)  # time-major: both frequency patches of a time patch share it
    assert_padding_invariant(tok, x, mask, *pair(mask, 4))
    assert_padding_invariant(frames, x, mask, *pair(mask, 4))


@pytest.mark.parametrize(("source", "modality", "n_tokens"), [
    ("fsdd", "fsdd_audio", 25), ("avletters", "avletters_audio", 20)])
def test_spectrogram_patches_on_shared_audio(shared, source, modality, n_tokens):
    td = shared(source)
    x, mask = samples(td, modality, slice(0, 8))
    tok = tokenizer(td, modality)
    check_forward(tok, x, mask, n_tokens)
    assert_padding_invariant(tok, x, mask, *pair(mask, 4))


# ----------------------------------------------------------------------------------------- text


def test_word_vectors_on_sst2(shared):
    td = shared("sst2", dim=64)
    x, mask = samples(td, "sst_text", slice(0, 8))
    tok = tokenizer(td, "sst_text")
    _, token_mask = check_forward(tok, x, mask, 50)
    assert torch.equal(token_mask, mask)
    assert_padding_invariant(tok, x, mask, *pair(mask, 1))


@pytest.mark.parametrize(("source", "modality"), [("sst2", "sst_subwords"), ("trec", "trec_subwords")])
def test_subword_ids(shared, source, modality):
    td = shared(source, tokens="subword")
    spec = td.specs[modality]
    x, mask = samples(td, modality, slice(0, 8))
    tok = tokenizer(td, modality)
    assert isinstance(tok.embed, torch.nn.Embedding) and tok.embed.num_embeddings == spec.vocab_size
    _, token_mask = check_forward(tok, x, mask, spec.max_len)
    assert torch.equal(token_mask, mask)
    assert torch.equal(tok(x)[1], x[..., 0] != 0)  # without a data mask, padding id 0 marks padding
    assert not tok.embed.weight[0].any()  # the padding row stays zero and untrained
    assert_padding_invariant(tok, x, mask, *pair(mask, 1))
    with pytest.raises(HighmodalError, match=rf"'{modality}'.*subword ids in \[0, {spec.vocab_size}\)"):
        tok(torch.full_like(x, spec.vocab_size), mask)


# ---------------------------------------------------------------------------------- point cloud


@pytest.fixture(scope="module")
def modelnet_points(shared):
    return shared("modelnet10", representation="points")


def test_point_groups_on_modelnet10(modelnet_points):
    td = modelnet_points
    n = td.splits["train"].masks["shape_points"].sum(1)
    idx = np.concatenate([np.flatnonzero(n == 256)[:3], np.flatnonzero(n < 256)[:3]])  # full and padded clouds
    x, mask = samples(td, "shape_points", idx)
    tok = tokenizer(td, "shape_points")
    tokens, token_mask = check_forward(tok, x, mask, 32)
    assert token_mask is None
    for i in (3, 4):  # a padded cloud's tokens are the same alone, without its padding
        alone, _ = tok(x[i:i + 1, :int(n[idx[i]])], mask[i:i + 1, :int(n[idx[i]])])
        torch.testing.assert_close(alone[0], tokens[i])
    # Groups are encoded in local coordinates: moving a cloud changes only the centres' position term.
    # (A small jitter breaks the voxel grid's distance ties, so rounding cannot reorder FPS or kNN.)
    jittered = x + 1e-3 * torch.randn_like(x)
    rows = torch.arange(len(x))[:, None]
    moved = jittered + torch.tensor([0.3, -0.2, 0.1])
    with torch.no_grad():
        picks = farthest_point_sample(tok.normalised(jittered), mask, 32)
        features = tok(jittered, mask)[0] - tok.pos(tok.normalised(jittered)[rows, picks])
        features_moved = tok(moved, mask)[0] - tok.pos(tok.normalised(moved)[rows, picks])
    torch.testing.assert_close(features_moved, features, atol=1e-4, rtol=1e-4)


def test_fps_picks_distinct_real_points(modelnet_points):
    masks = modelnet_points.splits["train"].masks["shape_points"]
    counts = masks.sum(1)
    idx = np.flatnonzero((counts >= 32) & (counts < 256))[:6]  # padded clouds with enough points
    x, mask = samples(modelnet_points, "shape_points", idx)
    xyz = x[..., :3].clone()
    xyz[~mask] = 0.0  # padding sits at the cloud's centre, where it would be near everything
    # As loaded (padding last) and reversed (padding first, the first real point at N - n).
    for points, valid in ((xyz, mask), (xyz.flip(1), mask.flip(1))):
        picks = farthest_point_sample(points, valid, 32)
        for b in range(len(idx)):
            p, start = picks[b], int(valid[b].nonzero()[0])
            assert len(set(p.tolist())) == 32 and valid[b, p].all()
            assert p[0] == start  # FPS starts at the first real point
            first = ((points[b] - points[b, start]) ** 2).sum(-1).masked_fill(~valid[b], -1)
            assert p[1] == first.argmax()  # the second is the real point farthest from the first
            nearest = ((points[b, :, None] - points[b, p[:-1]][None]) ** 2).sum(-1).amin(1).masked_fill(~valid[b], -1)
            assert nearest[p[-1]] == nearest.max()  # each pick is farthest from those before it


def test_knn_groups_hold_only_real_points(modelnet_points):
    x, mask = samples(modelnet_points, "shape_points", np.flatnonzero(
        modelnet_points.splits["train"].masks["shape_points"].sum(1) < 256)[:2])
    xyz = x[..., :3]
    mask = mask.clone()
    mask[1, 10:] = False  # the same real points, fewer than a group: 10 real points, groups of 16
    centres = xyz[torch.arange(2)[:, None], farthest_point_sample(xyz, mask, 8)]
    groups = knn_group(xyz, mask, centres, 16)
    assert groups.shape == (2, 8, 16)
    assert mask[torch.arange(2)[:, None, None], groups].all()
    dist = ((centres[0, :, None] - xyz[0][None]) ** 2).sum(-1).masked_fill(~mask[0], float("inf"))
    torch.testing.assert_close(dist.gather(1, groups[0]), dist.sort(1).values[:, :16])  # the 16 nearest
    small = groups[1]
    assert (small < 10).all() and all(set(g.tolist()) == set(range(10)) for g in small)
    assert torch.equal(small[:, 10:], small[:, :6])  # the nearest ones repeat to fill the group


def test_point_tokenizer_rejects_voxel_blocks():
    voxels = ModalitySpec("shape_voxels", "point_cloud", (4, 4, 4, 512))  # modelnet10's default view
    with pytest.raises(HighmodalError, match=r"'shape_voxels'.*representation: points"):
        create_tokenizer(voxels, D)


# ----------------------------------------------------------------------------- time series, IMU


def test_series_patches_on_packaged_series(packaged):
    italy = packaged("italy_power_demand")
    tok = tokenizer(italy, "power_demand")
    assert tok.patch == 4  # 24 hours fit in 32 tokens, but a univariate token needs 4 steps for 4 values
    check_forward(tok, samples(italy, "power_demand", slice(0, 6))[0], None, 6)
    assert tokenizer(italy, "power_demand", {"channel_independent": True}).patch == 4
    motions = packaged("basic_motions")
    x, _ = samples(motions, "accelerometer", slice(0, 6))
    mixed = tokenizer(motions, "accelerometer")
    assert mixed.patch == 4  # 100 steps: 4 is the smallest power of two leaving <= 32 patches
    before, mask = check_forward(mixed, x, None, 25)
    assert mask is None
    bumped = x.clone()
    bumped[:, :4, 1] += 1.0  # the first patch of the y axis
    after = mixed(bumped)[0].detach()
    assert not torch.allclose(after[:, 0], before[:, 0]) and torch.equal(after[:, 1:], before[:, 1:])


def test_channel_independent_patches(packaged):
    motions = packaged("basic_motions")
    x, _ = samples(motions, "gyroscope", slice(0, 6))
    tok = tokenizer(motions, "gyroscope", {"channel_independent": True})
    before, _ = check_forward(tok, x, None, 3 * 25)
    bumped = x.clone()
    bumped[..., 1] += 1.0
    after = tok(bumped)[0].detach()  # channel-major: only the y channel's 25 tokens change
    assert torch.equal(after[:, :25], before[:, :25]) and torch.equal(after[:, 50:], before[:, 50:])
    assert not torch.allclose(after[:, 25:50], before[:, 25:50])


@pytest.mark.parametrize("channel_independent", [False, True])
def test_series_patches_with_variable_length(packaged, channel_independent):
    """JapaneseVowels' variable-length cepstra read as a 12-channel series."""
    td = packaged("japanese_vowels")
    x, mask = samples(td, "lpc_cepstra", slice(0, 12))
    tok = tokenizer(td, "lpc_cepstra", {"patch": 4, "channel_independent": channel_independent}, kind="time_series")
    channels = 12 if channel_independent else 1
    _, token_mask = check_forward(tok, x, mask, 8 * channels)
    assert torch.equal(token_mask, (torch.arange(8)[None] * 4 < lengths(mask)[:, None]).repeat(1, channels))
    if not channel_independent:
        assert_padding_invariant(tok, x, mask, *pair(mask, 4))


def test_series_patches_on_physionet(shared):
    td = shared("physionet2012")
    tok = tokenizer(td, "icu_series")
    assert tok.patch == 2
    check_forward(tok, samples(td, "icu_series", slice(0, 6))[0], None, 24)


# -------------------------------------------------------------------------------------- tabular


def test_feature_tokens_on_breast_cancer(packaged):
    td = packaged("breast_cancer")
    x, _ = samples(td, "cell_nuclei", slice(0, 6))
    tok = tokenizer(td, "cell_nuclei")
    tokens, mask = check_forward(tok, x, None, 30)
    assert mask is None
    xn = tok.normalised(x)  # token_f = x_f · W_f + b_f
    torch.testing.assert_close(tokens, (xn * tok.weight[:, 0] + tok.bias).detach())


@pytest.mark.parametrize(("source", "modality", "n_features"), [("adult", "census", 14),
                                                                ("physionet2012", "icu_static", 11)])
def test_feature_tokens_on_shared_tables(shared, source, modality, n_features):
    td = shared(source)
    check_forward(tokenizer(td, modality), samples(td, modality, slice(0, 6))[0], None, n_features)


# ---------------------------------------------------------------------------------------- graph


@pytest.mark.parametrize(("source", "modality"), [("mutag", "mutag_graph"), ("proteins", "proteins_graph")])
def test_node_tokens(shared, source, modality):
    td = shared(source)
    x, mask = samples(td, modality, slice(0, 8))
    tok = tokenizer(td, modality)
    tokens, token_mask = check_forward(tok, x, mask, td.specs[modality].max_len)
    assert torch.equal(token_mask, mask)
    assert_padding_invariant(tok, x, mask, *pair(mask, 1))
    n = int(mask[0].sum())
    perm = torch.randperm(n)  # without index positions, relabelling the nodes permutes the tokens
    shuffled = x[:1].clone()
    shuffled[0, :n] = x[0, perm]
    torch.testing.assert_close(tok(shuffled, mask[:1])[0][0, :n], tokens[0, perm])
    ordered = tokenizer(td, modality, {"order_embedding": True})
    check_forward(ordered, x, mask, td.specs[modality].max_len)
    assert not torch.allclose(ordered(shuffled, mask[:1])[0][0, :n], ordered(x[:1], mask[:1])[0][0, perm])


# -------------------------------------------------------------------------------- hyperspectral


def test_spectral_group_tokens_on_samson(shared):
    td = shared("samson")
    x, _ = samples(td, "hsi_pixel", slice(0, 6))
    tok = tokenizer(td, "hsi_pixel")
    before, mask = check_forward(tok, x, None, 12)
    assert mask is None
    bumped = x.clone()
    bumped[:, 0, 2, 5] += 50.0  # one corner pixel's 6th band group: only the 6th token changes
    after = tok(bumped)[0].detach()
    changed = ~torch.isclose(after, before).all(-1).all(0)
    assert changed.tolist() == [g == 5 for g in range(12)]


def test_spectral_spatial_tokens_on_samson(shared):
    td = shared("samson")
    x, _ = samples(td, "hsi_pixel", slice(0, 6))
    tok = tokenizer(td, "hsi_pixel", {"tokens": "spectral_spatial"})
    before, _ = check_forward(tok, x, None, 9 * 12)
    bumped = x.clone()
    bumped[:, 0, 2, 5] += 50.0  # pixel (0, 2) is the 3rd of 9, pixel-major: token 2·12 + 5
    after = tok(bumped)[0].detach()
    changed = ~torch.isclose(after, before).all(-1).all(0)
    assert torch.nonzero(changed).flatten().tolist() == [2 * 12 + 5]


def test_hyperspectral_needs_the_group_layout():
    flat = ModalitySpec("hsi_spectrum", "hyperspectral", (9, 156))  # 3×3 pixels, spectrum not grouped
    with pytest.raises(HighmodalError, match=r"'hsi_spectrum'.*\(height, width, band groups, bands per group\)"):
        create_tokenizer(flat, D)


def test_hyperspectral_token_mode_is_checked(shared):
    with pytest.raises(HighmodalError, match=r"'hsi_pixel'.*tokens must be one of spectral, spectral_spatial"):
        tokenizer(shared("samson"), "hsi_pixel", {"tokens": "pixels"})
