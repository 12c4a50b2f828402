"""Shared audio and audio-visual datasets on their real files: FSDD, AVLetters, AV-MNIST (sizes, splits,
masks, pairing, caching, damaged/missing files, and a HighMMT forward pass on each)."""

import io
import tarfile

import numpy as np
import pytest
import scipy.io as sio
import torch
from conftest import assert_damage_is_named, corrupt_copy

import highmodal.data.real.audio as audio
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError
from highmodal.models import create_model
from highmodal.training.batching import TaskTensors


def load(root, source: str, **options):
    return build_suite([{"name": source, "source": source, **options}], LoadContext(data_root=root))


def forward(suite, idx, pad_value: float = 0.0) -> torch.Tensor:
    """Logits of a tiny HighMMT (seeded) on the training samples ``idx``, checked for shape and
    finiteness; ``pad_value`` overwrites every masked-out position of the batch first."""
    td = suite.tasks[0]
    torch.manual_seed(0)
    model = create_model("highmmt", suite.specs, [td.task], preset="tiny").eval()
    batch = TaskTensors(td.task, td.splits["train"]).batch(torch.as_tensor(idx))
    for m in td.task.modalities:
        if f"{m}_mask" in batch:
            batch[m][~batch[f"{m}_mask"]] = pad_value
    with torch.no_grad():
        out = model(batch, td.task.name)
    assert out.shape == (len(idx), td.task.out_dim)
    assert torch.isfinite(out).all()
    return out


def assert_prefix_mask(x: np.ndarray, mask: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The mask marks a leading run of positions (lo..hi long) and padding is zero; returns lengths."""
    time_mask = mask.reshape(len(mask), mask.shape[1], -1)
    assert (time_mask == time_mask[..., :1]).all()  # the same over every non-time axis
    lengths = time_mask[..., 0].sum(1)
    assert (time_mask[..., 0] == (np.arange(mask.shape[1]) < lengths[:, None])).all()
    assert lengths.min() >= lo and lengths.max() <= hi
    assert not x[~mask].any()
    return lengths


def replaced_copy(root, dataset: str, name: str, content: bytes, tmp) -> object:
    """A data root without CHECKSUMS.sha256 (so damage reaches the reader) whose ``dataset`` links to
    the real files except ``name``, which holds ``content``."""
    new = tmp / "plain"
    for src in (root / dataset).rglob("*"):
        dst = new / dataset / src.relative_to(root / dataset)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif src != root / dataset / name:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    (new / dataset / name).write_bytes(content)
    return new


def row_keys(x: np.ndarray) -> list[int]:
    """A hash of each sample's bytes, to find the same sample in another split or task."""
    return [hash(r.tobytes()) for r in x]


@pytest.fixture(scope="module")
def fsdd_suite(data_root):
    return load(data_root, "fsdd")


@pytest.fixture(scope="module")
def avletters_suite(data_root):
    return load(data_root, "avletters")


@pytest.fixture(scope="module")
def avmnist_suite(data_root, fsdd_suite):
    return load(data_root, "avmnist")


# FSDD ----------------------------------------------------------------------------------------------


def test_fsdd_shapes_counts_and_official_split(fsdd_suite):
    td = fsdd_suite["fsdd"]
    s = td.specs["fsdd_audio"]
    assert (s.kind, s.shape, s.max_len) == ("audio", (None, 40), 97)  # 40 mels; 1 s of 10 ms hops
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 2430, "val": 270, "test": 300}
    y = np.concatenate([d.y for d in td.splits.values()])
    assert np.bincount(y).tolist() == [300] * 10  # 6 speakers x 50 takes per digit
    # Test = takes 0-4 of every digit and speaker (FSDD README: "the first 10%"), 30 per digit.
    assert np.bincount(td.splits["test"].y).tolist() == [30] * 10
    assert np.bincount(td.splits["val"].y).tolist() == [27] * 10  # stratified 10 % of train
    for d in td.splits.values():
        # The shortest recording has 1,148 samples: 1 + (1148 - 256) // 80 = 12 frames.
        assert_prefix_mask(d.inputs["fsdd_audio"], d.masks["fsdd_audio"], 12, 97)


def test_fsdd_takes_0_to_4_are_test(fsdd_suite, data_root):
    td = fsdd_suite["fsdd"]
    opts = audio.SpectrogramOptions()
    window, hop, _ = opts.framing(audio.FSDD_RATE)
    filters = audio.mel_filterbank(opts.n_mels, window, audio.FSDD_RATE)
    where = {split: set(row_keys(d.inputs["fsdd_audio"][:, :12])) for split, d in td.splits.items()}
    # 0_lucas_9 lasts 1.17 s: it keeps its first second.
    for name, test in [("7_jackson_0", True), ("2_theo_4", True), ("7_jackson_32", False), ("0_lucas_9", False)]:
        wave = audio._read_wav(data_root / "fsdd" / "recordings" / f"{name}.wav", window)
        key = row_keys(audio.log_mel(wave[:8000], audio.FSDD_RATE, filters, window, hop)[None, :12])[0]
        found = [s for s, keys in where.items() if key in keys]
        assert len(found) == 1 and (found[0] == "test") == test, (name, found)


def test_log_mel_puts_a_tone_in_the_right_band():
    rate, window, hop = audio.FSDD_RATE, 256, 80
    filters = audio.mel_filterbank(40, window, rate)
    assert filters.shape == (40, 129) and filters.any(axis=1).all()
    t = np.arange(rate) / rate
    mel = audio.log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), rate, filters, window, hop)
    assert mel.shape == (97, 40)
    centres = np.fft.rfftfreq(window, 1 / rate)[filters.argmax(axis=1)]
    assert abs(centres[mel.mean(0).argmax()] - 1000) < 60
    assert mel.max() - mel.min() <= 80 + 1e-3  # floored 80 dB under the peak


def test_fsdd_cache_is_reused_by_fsdd_and_avmnist(fsdd_suite, data_root, monkeypatch):
    monkeypatch.setattr(audio, "_read_wav", lambda *a: pytest.fail("FSDD preprocessing ran on a cache hit"))
    assert len(load(data_root, "fsdd")["fsdd"].splits["test"]) == 300
    assert len(load(data_root, "avmnist")["avmnist"].splits["test"]) == 2000


def test_fsdd_forward(fsdd_suite):
    lengths = fsdd_suite["fsdd"].splits["train"].masks["fsdd_audio"].sum(1)
    forward(fsdd_suite, [int(lengths.argmin()), int(lengths.argmax()), 0, 1])


def test_fsdd_corrupted_unreadable_and_missing_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "fsdd", "recordings/3_theo_7.wav", [{"name": "fsdd", "source": "fsdd"}])
    plain = replaced_copy(data_root, "fsdd", "recordings/3_theo_7.wav", b"not a wav file", tmp_path)
    with pytest.raises(HighmodalError, match=r"3_theo_7.wav: cannot read the wav file"):
        load(plain, "fsdd")


# AVLetters ----------------------------------------------------------------------------------------


def test_avletters_shapes_counts_masks_and_split(avletters_suite):
    td = avletters_suite["avletters"]
    v, a = td.specs["avletters_video"], td.specs["avletters_audio"]
    assert (v.kind, v.shape, v.max_len) == ("video", (None, 3, 4, 100), 40)  # 60x80 -> 30x40 -> 3x4 of 10x10
    assert (a.kind, a.shape, a.max_len) == ("audio", (None, 26), 79)
    assert td.task.class_names == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    # 780 = 26 letters x 10 speakers x 3 repetitions; repetition 3 is the test set.
    assert {k: len(d) for k, d in td.splits.items()} == {"train": 468, "val": 52, "test": 260}
    assert np.bincount(np.concatenate([d.y for d in td.splits.values()])).tolist() == [30] * 26
    assert np.bincount(td.splits["test"].y).tolist() == [10] * 26
    for d in td.splits.values():
        assert d.masks["avletters_video"].shape == (len(d), 40, 3, 4)  # one entry per token
        frames = assert_prefix_mask(d.inputs["avletters_video"], d.masks["avletters_video"], 12, 40)
        mfcc = assert_prefix_mask(d.inputs["avletters_audio"], d.masks["avletters_audio"], 23, 79)
        # Same utterance: 20 ms MFCC frames vs 40 ms video frames, so about twice as many.
        assert np.corrcoef(frames, mfcc)[0, 1] > 0.99 and ((mfcc / frames > 1.3) & (mfcc / frames <= 2)).all()


def test_avletters_first_utterance_matches_the_readme_snippet(avletters_suite, data_root):
    """A1_Anya decoded independently (README snippet, 2x2 mean, 10x10 patches; raw HTK MFCCs) is one
    training or validation sample, with both views together and label A."""
    with tarfile.open(data_root / "avletters" / "Lips.tar.xz") as t:  # the first member: no full decompression
        v = sio.loadmat(io.BytesIO(t.extractfile(first_file(t, "Lips/A1_Anya-lips.mat")).read()))["vid"]
    frames = v.T.reshape(-1, 80, 60).transpose(0, 2, 1).astype(np.float32)
    pooled = frames.reshape(-1, 30, 2, 40, 2).mean(axis=(2, 4))
    video = pooled.reshape(-1, 3, 10, 4, 10).transpose(0, 1, 3, 2, 4).reshape(-1, 3, 4, 100)
    with tarfile.open(data_root / "avletters" / "Audio_mfcc_Clean.tar.gz") as t:
        raw = t.extractfile(first_file(t, "Clean/A1_Anya.mfcc")).read()
    mfcc = np.frombuffer(raw, ">f4", offset=12).reshape(-1, 26)
    td = avletters_suite["avletters"]
    hits = [(s, i) for s in ("train", "val") for i in range(len(td.splits[s]))
            if np.array_equal(td.splits[s].inputs["avletters_video"][i, : len(video)], video)]
    assert len(hits) == 1
    d, i = td.splits[hits[0][0]], hits[0][1]
    assert d.masks["avletters_video"][i, :, 0, 0].sum() == len(video)
    np.testing.assert_array_equal(d.inputs["avletters_audio"][i, : len(mfcc)], mfcc)
    assert d.masks["avletters_audio"][i].sum() == len(mfcc) and d.y[i] == 0


def test_avletters_forward_ignores_padding(avletters_suite):
    td = avletters_suite["avletters"]
    lengths = td.splits["train"].masks["avletters_video"][:, :, 0, 0].sum(1)
    idx = [int(lengths.argmin()), int(lengths.argmax()), 0, 1]
    # Garbage in padded positions must not change the logits: the (T, 3, 4) video mask reaches every token.
    torch.testing.assert_close(forward(avletters_suite, idx, pad_value=1e3), forward(avletters_suite, idx))


def test_avletters_corrupted_and_missing_files(data_root, tmp_path):
    assert_damage_is_named(data_root, tmp_path, "avletters", "Audio_mfcc_Clean.tar.gz",
                           [{"name": "avletters", "source": "avletters"}])
    truncated = (data_root / "avletters" / "Audio_mfcc_Clean.tar.gz").read_bytes()[:100_000]
    plain = replaced_copy(data_root, "avletters", "Audio_mfcc_Clean.tar.gz", truncated, tmp_path)
    with pytest.raises(HighmodalError, match=r"Audio_mfcc_Clean.tar.gz: cannot read the archive"):
        load(plain, "avletters")


def first_file(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    """Stream to member ``name`` (indexing the archive would decompress all of it)."""
    return next(m for m in tar if m.name == name)


def small_archive(src, mode: str, keep: list[str]) -> bytes:
    """The members named in ``keep`` (read by streaming from the start) as a new archive."""
    buf = io.BytesIO()
    with tarfile.open(src) as s, tarfile.open(fileobj=buf, mode=mode) as d:
        for member in s:
            if member.name in keep:
                d.addfile(member, s.extractfile(member))
            if all(k in d.getnames() for k in keep):
                break
    return buf.getvalue()


@pytest.mark.parametrize("short", ["Audio_mfcc_Clean.tar.gz", "Lips.tar.xz"])
def test_avletters_utterance_with_one_view_is_named(data_root, tmp_path, short):
    """Archives whose views disagree (A1_Faye has only one of the two) fail naming the utterance."""
    stems = ["A1_Anya", "A1_Bill", "A1_Faye"]
    folder = tmp_path / "root" / "avletters"
    folder.mkdir(parents=True)
    for name, mode, member in [("Lips.tar.xz", "w:xz", "Lips/{}-lips.mat"),
                               ("Audio_mfcc_Clean.tar.gz", "w:gz", "Clean/{}.mfcc")]:
        keep = [member.format(s) for s in stems[: 2 if name == short else 3]]
        (folder / name).write_bytes(small_archive(data_root / "avletters" / name, mode, keep))
    other = ({"Lips.tar.xz", "Audio_mfcc_Clean.tar.gz"} - {short}).pop()
    with pytest.raises(HighmodalError, match=rf"A1_Faye is in .*{other} but missing from .*{short}"):
        load(tmp_path / "root", "avletters")


def test_avletters_damaged_member_is_named(data_root, tmp_path):
    folder = tmp_path / "root" / "avletters"
    folder.mkdir(parents=True)
    src = data_root / "avletters"
    (folder / "Audio_mfcc_Clean.tar.gz").write_bytes(
        small_archive(src / "Audio_mfcc_Clean.tar.gz", "w:gz", ["Clean/A1_Anya.mfcc"]))
    with tarfile.open(src / "Lips.tar.xz") as t:
        member = first_file(t, "Lips/A1_Anya-lips.mat")
        raw = t.extractfile(member).read()[:5000]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as d:
        member.size = len(raw)
        d.addfile(member, io.BytesIO(raw))
    (folder / "Lips.tar.xz").write_bytes(buf.getvalue())
    with pytest.raises(HighmodalError, match=r"Lips.tar.xz \(Lips/A1_Anya-lips.mat\): cannot read the MATLAB"):
        load(tmp_path / "root", "avletters")


# AV-MNIST -----------------------------------------------------------------------------------------


def test_avmnist_images_follow_mnist_and_pairs_share_label_within_split(avmnist_suite, fsdd_suite, data_root):
    td = avmnist_suite["avmnist"]
    assert td.specs["avmnist_image"].shape == (7, 7, 16)
    assert td.specs["avmnist_audio"].shape == (None, 40)
    assert {k: len(d) for k, d in td.splits.items()} == {"train": 7200, "val": 800, "test": 2000}
    mnist = load(data_root, "mnist")["mnist"]
    fsdd = fsdd_suite["fsdd"]
    home = {}  # recording (its padded log-mel) -> (split, digit) in the fsdd task with the same seed
    for split, d in fsdd.splits.items():
        home.update({k: (split, int(y)) for k, y in zip(row_keys(d.inputs["fsdd_audio"]), d.y, strict=True)})
    assert len(home) == 3000  # every recording is distinct
    for split, d in td.splits.items():
        np.testing.assert_array_equal(d.y, mnist.splits[split].y)
        np.testing.assert_array_equal(d.inputs["avmnist_image"], mnist.splits[split].inputs["mnist_image"])
        assert_prefix_mask(d.inputs["avmnist_audio"], d.masks["avmnist_audio"], 12, 97)
        keys = row_keys(d.inputs["avmnist_audio"])
        assert all(home[k] == (split, int(y)) for k, y in zip(keys, d.y, strict=True))  # same digit, same split
        # Recordings are drawn in shuffled cycles: within a digit, uses differ by at most one.
        for digit in range(10):
            uses = np.unique([k for k, y in zip(keys, d.y, strict=True) if y == digit], return_counts=True)[1]
            n_recordings = sum(1 for s, y in home.values() if (s, y) == (split, digit))
            assert len(uses) == min(n_recordings, (d.y == digit).sum()) and uses.max() - uses.min() <= 1


def test_avmnist_forward(avmnist_suite):
    forward(avmnist_suite, [0, 1, 2, 3])


def test_avmnist_corrupted_and_missing_fsdd_file(data_root, tmp_path):
    bad = corrupt_copy(data_root, "fsdd", "recordings/5_lucas_40.wav", tmp_path)
    (bad / "mnist_test").symlink_to(data_root / "mnist_test")
    with pytest.raises(HighmodalError, match=r"5_lucas_40.wav: file is corrupted"):
        load(bad, "avmnist")
    (bad / "fsdd" / "recordings" / "5_lucas_40.wav").unlink()
    with pytest.raises(HighmodalError, match=r"5_lucas_40.wav: required file .* is missing"):
        load(bad, "avmnist")
