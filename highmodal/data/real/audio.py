"""Audio and audio-visual shared datasets: FSDD spoken digits, AVLetters (lip video + MFCC of the same
utterances) and AV-MNIST (MNIST images paired with FSDD recordings of the same digit)."""

from __future__ import annotations

import io
import lzma
import re
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio
from scipy.io import wavfile
from scipy.signal import stft

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import (
    LoadContext,
    TaskEntry,
    fit_normalization,
    make_task,
    pad_sequences,
    register_loader,
    spec,
)
from highmodal.data.real.common import patchify
from highmodal.data.real.vision import MNIST_FILES, ImageOptions, mnist
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import three_way
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.tasks import SPLITS, SplitData, TaskData

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_TAKES = 50  # recordings of each digit by each speaker
FSDD_TEST_TAKES = 5  # FSDD README: "Recordings numbered 0-4 (inclusive) are in the test"
FSDD_RATE = 8000
FSDD_FILES = [f"recordings/{d}_{s}_{i}.wav" for d in range(10) for s in FSDD_SPEAKERS for i in range(FSDD_TAKES)]

AVLETTERS_FILES = ["Lips.tar.xz", "Audio_mfcc_Clean.tar.gz"]
AVLETTERS_STEM = re.compile(r"([A-Z])([1-3])_([A-Za-z]+)")  # <Letter><repetition>_<Speaker>
AVLETTERS_TEST_REP = 3
LIP_H, LIP_W = 60, 80
MFCC_DIM = 26  # MFCC_E_D: 12 cepstra + log energy, and their deltas
ARCHIVE_ERRORS = (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError)


@dataclass
class SpectrogramOptions:
    """Log-mel framing. 32 ms Hann windows (256 samples at 8 kHz) with a 10 ms hop are the usual speech
    framing; 40 HTK mel bands span 0–4 kHz. ``max_seconds`` caps the tokens per recording: 1 s gives at
    most 97 frames and shortens only 20 of FSDD's 3,000 recordings (recordings are trimmed of silence;
    the median lasts 0.42 s)."""

    n_mels: int = 40
    window_ms: float = 32.0
    hop_ms: float = 10.0
    max_seconds: float = 1.0
    val_frac: float = 0.1

    def framing(self, rate: int) -> tuple[int, int, int]:
        """Window and hop in samples, and the most frames a (capped) recording yields."""
        window, hop = round(self.window_ms * rate / 1000), round(self.hop_ms * rate / 1000)
        max_samples = round(self.max_seconds * rate)
        if self.n_mels < 1 or hop < 1 or window < hop or max_samples < window:
            raise HighmodalError(
                f"spectrogram options need n_mels >= 1 and 1 sample <= hop <= window <= max_seconds; got "
                f"n_mels={self.n_mels}, hop {hop}, window {window}, max {max_samples} samples at {rate} Hz"
            )
        return window, hop, 1 + (max_samples - window) // hop

    def cache_params(self) -> dict:
        return {"n_mels": self.n_mels, "window_ms": self.window_ms, "hop_ms": self.hop_ms,
                "max_seconds": self.max_seconds}


def mel_filterbank(n_mels: int, n_fft: int, rate: int) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangles with peak 1, equally spaced on the HTK mel scale
    (mel = 2595·log10(1 + f/700)) from 0 Hz to Nyquist, evaluated at the FFT bin frequencies."""

    def hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    edges = hz(np.linspace(0.0, 2595.0 * np.log10(1.0 + rate / 2 / 700.0), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    filters = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    if not filters.any(axis=1).all():
        raise HighmodalError(f"{n_mels} mel bands are too many for a {n_fft}-sample window: some bands "
                             "cover no FFT bin; use fewer mels or a longer window")
    return filters


def log_mel(wave: np.ndarray, rate: int, filters: np.ndarray, window: int, hop: int) -> np.ndarray:
    """``(frames, n_mels)`` mel power in dB, floored 80 dB below the recording's peak (librosa's
    ``power_to_db`` default), so digital silence does not give extreme values. Frames cover whole
    windows only (no edge padding)."""
    _, _, z = stft(wave, fs=rate, window="hann", nperseg=window, noverlap=window - hop, boundary=None, padded=False)
    db = 10.0 * np.log10(np.maximum(filters @ (np.abs(z) ** 2), 1e-10))
    return np.maximum(db, db.max() - 80.0).T.astype(np.float32)


def _read_wav(path: Path, window: int) -> np.ndarray:
    try:
        rate, wave = wavfile.read(path)
    except Exception as e:  # scipy raises assorted types for damaged files (even UnboundLocalError)
        raise HighmodalError(f"{path}: cannot read the wav file ({type(e).__name__}: {e})") from None
    if rate != FSDD_RATE or wave.ndim != 1 or wave.dtype != np.int16:
        raise HighmodalError(f"{path}: expected {FSDD_RATE} Hz mono 16-bit audio, got {rate} Hz, "
                             f"{wave.ndim}-D {wave.dtype} samples")
    if len(wave) < window:
        raise HighmodalError(f"{path}: {len(wave)} samples, shorter than one {window}-sample window")
    return wave.astype(np.float32) / 32768.0


def fsdd_splits(ctx: LoadContext, opts: SpectrogramOptions, modality: str) -> dict[str, SplitData]:
    """FSDD as zero-padded log-mel frame sequences with a ``(N, frames)`` mask under ``modality``, in
    the official split (test = recordings 0–4 of each digit and speaker; val carved from train)."""
    folder = require_root(ctx, "fsdd")
    sums = verified_files(ctx, "fsdd", FSDD_FILES)
    window, hop, max_frames = opts.framing(FSDD_RATE)
    max_samples = round(opts.max_seconds * FSDD_RATE)

    def build() -> dict[str, np.ndarray]:
        filters = mel_filterbank(opts.n_mels, window, FSDD_RATE)
        mels = [log_mel(_read_wav(folder / name, window)[:max_samples], FSDD_RATE, filters, window, hop)
                for name in FSDD_FILES]
        return {"frames": np.concatenate(mels), "lengths": np.array([len(m) for m in mels], dtype=np.int64)}

    arrays = cached_arrays("fsdd", sums, opts.cache_params(), build)
    x, mask = pad_sequences(np.split(arrays["frames"], np.cumsum(arrays["lengths"])[:-1]), max_frames)
    parts = [Path(n).stem.split("_") for n in FSDD_FILES]  # <digit>_<speaker>_<take>
    data = SplitData({modality: x}, np.array([int(p[0]) for p in parts], dtype=np.int64), {modality: mask})
    test = np.array([int(p[2]) < FSDD_TEST_TAKES for p in parts])
    return three_way(data.subset(np.flatnonzero(~test)), data.subset(np.flatnonzero(test)), opts.val_frac, 0.0,
                     ctx.seed, stratify=True)


def _audio_spec(name: str, opts: SpectrogramOptions) -> ModalitySpec:
    return spec(name, "audio", (None, opts.n_mels), max_len=opts.framing(FSDD_RATE)[2])


@register_loader("fsdd", SpectrogramOptions, ("audio",),
                 "Free Spoken Digit Dataset: 3,000 8 kHz recordings of digits by 6 speakers, official split",
                 shared_available("fsdd", FSDD_FILES))
def fsdd(opts: SpectrogramOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Spoken digit from a log-mel spectrogram: one token per time frame (``n_mels`` values), variable
    length with a mask. The official split takes recordings 0–4 of every digit and speaker as test (300,
    the README's "first 10 %"), so every speaker is in both train and test: this measures generalisation
    to new takes, not to new speakers."""
    splits = fsdd_splits(ctx, opts, "fsdd_audio")
    td = TaskData(make_task(entry, ["fsdd_audio"], "classification", 10, [str(i) for i in range(10)],
                            "spoken digit from a log-mel spectrogram"),
                  {"fsdd_audio": _audio_spec("fsdd_audio", opts)}, splits, str(require_root(ctx, "fsdd")))
    return fit_normalization(td, {"fsdd_audio": "channel"})


@dataclass
class AVLettersOptions:
    """``pool``: mean-pool each 60×80 lip frame by this factor (2 → 30×40) before cutting it into
    ``patch``×``patch`` squares (10 → a 3×4 grid of 100 values), keeping ≤ 40·12 = 480 video tokens."""

    pool: int = 2
    patch: int = 10
    val_frac: float = 0.1

    def grid(self) -> tuple[int, int]:
        """The patch grid of a pooled frame; raises when the sizes do not divide."""
        if self.pool >= 1 and self.patch >= 1 and not (LIP_H % self.pool or LIP_W % self.pool):
            h, w = LIP_H // self.pool, LIP_W // self.pool
            if not (h % self.patch or w % self.patch):
                return h // self.patch, w // self.patch
        raise HighmodalError(f"avletters: pool {self.pool} must divide the {LIP_H}x{LIP_W} frames and patch "
                             f"{self.patch} the pooled frames")


def _read_archive(path: Path, suffix: str, parse: Callable[[str, bytes], np.ndarray]) -> dict[str, np.ndarray]:
    """``{utterance stem: parse(where, bytes)}`` for every ``*<suffix>`` file of a tar archive."""
    out = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(suffix)):
                    continue
                stem = Path(member.name).name[: -len(suffix)]
                if not AVLETTERS_STEM.fullmatch(stem):
                    raise HighmodalError(f"{path}: member {member.name} is not named <Letter><1-3>_<Speaker>{suffix}")
                out[stem] = parse(f"{path} ({member.name})", tar.extractfile(member).read())
    except ARCHIVE_ERRORS as e:
        raise HighmodalError(f"{path}: cannot read the archive ({e})") from None
    if not out:
        raise HighmodalError(f"{path}: the archive holds no *{suffix} files")
    return out


def _lip_frames(where: str, raw: bytes, pool: int) -> np.ndarray:
    """``(T, 60/pool, 80/pool)`` sums of pool×pool pixels (uint16: exact, half the size of float32)."""
    try:
        vid = sio.loadmat(io.BytesIO(raw))["vid"]
    except Exception as e:  # scipy raises assorted types for damaged MAT files (ValueError, IndexError, ...)
        raise HighmodalError(f"{where}: cannot read the MATLAB array 'vid' ({type(e).__name__}: {e})") from None
    if vid.dtype != np.uint8 or vid.ndim != 2 or vid.shape[0] != LIP_H * LIP_W:
        raise HighmodalError(f"{where}: expected 'vid' as {LIP_H * LIP_W}×T uint8, got {vid.shape} {vid.dtype}")
    frames = vid.T.reshape(-1, LIP_W, LIP_H).transpose(0, 2, 1)  # column-major 60×80 frames, upright
    t = len(frames)
    return frames.reshape(t, LIP_H // pool, pool, LIP_W // pool, pool).sum(axis=(2, 4), dtype=np.uint16)


def _htk_mfcc(where: str, raw: bytes) -> np.ndarray:
    """HTK parameter file: big-endian header (nSamples, sampPeriod, sampSize, parmKind), then nSamples
    frames of sampSize bytes of big-endian float32."""
    n, _, size, _ = struct.unpack(">iihh", raw[:12]) if len(raw) >= 12 else (0, 0, 0, 0)
    if size != 4 * MFCC_DIM or n < 1 or len(raw) != 12 + n * size:
        raise HighmodalError(f"{where}: not an HTK file of {MFCC_DIM} float32 per frame (header: {n} frames of "
                             f"{size} bytes; file: {len(raw)} bytes)")
    return np.frombuffer(raw, ">f4", offset=12).reshape(n, MFCC_DIM).astype(np.float32)


@register_loader("avletters", AVLettersOptions, ("video", "audio"),
                 "AVLetters: lip video + MFCC of 780 spoken letters (26 letters x 10 speakers x 3 reps)",
                 shared_available("avletters", AVLETTERS_FILES))
def avletters(opts: AVLettersOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Letter (A–Z) from two recorded views of the same utterance: the grey lip region (12–40 frames at
    25 fps) and the clean-audio MFCCs (20 ms frames), paired by file stem. Each video frame is mean-pooled
    and cut into patches, so a sample is ``(T, 3, 4, 100)`` with its mask expanded to ``(T, 3, 4)``: the
    standardizer and the normalisation statistics need one mask entry per flattened token. Split: the
    usual AVLetters protocol (Matthews et al. 2002) trains on repetitions 1–2 and tests on repetition 3 of
    every speaker (520 / 260); val is carved from train."""
    gh, gw = opts.grid()
    folder = require_root(ctx, "avletters")
    sums = verified_files(ctx, "avletters", AVLETTERS_FILES)

    def build() -> dict[str, np.ndarray]:
        lips, mfcc = folder / AVLETTERS_FILES[0], folder / AVLETTERS_FILES[1]
        audio = _read_archive(mfcc, ".mfcc", _htk_mfcc)  # the small archive first: its errors come fast
        video = _read_archive(lips, "-lips.mat", lambda where, raw: _lip_frames(where, raw, opts.pool))
        for stem in sorted(video.keys() ^ audio.keys()):
            has, lacks = (lips, mfcc) if stem in video else (mfcc, lips)
            raise HighmodalError(f"avletters: utterance {stem} is in {has} but missing from {lacks}")
        stems = sorted(video)  # validated as <Letter><repetition>_<Speaker>
        return {
            "video": np.concatenate([video[s] for s in stems]),
            "video_len": np.array([len(video[s]) for s in stems], dtype=np.int64),
            "audio": np.concatenate([audio[s] for s in stems]),
            "audio_len": np.array([len(audio[s]) for s in stems], dtype=np.int64),
            "letter": np.array([ord(s[0]) - ord("A") for s in stems], dtype=np.int64),
            "rep": np.array([int(s[1]) for s in stems], dtype=np.int64),
        }

    arrays = cached_arrays("avletters", sums, {"pool": opts.pool}, build)
    v_len, a_len = arrays["video_len"], arrays["audio_len"]
    t_max, a_max = int(v_len.max()), int(a_len.max())
    tokens = patchify(arrays["video"], opts.patch).reshape(len(arrays["video"]), -1)  # pixel sums per frame
    video, v_mask = pad_sequences(np.split(tokens, np.cumsum(v_len)[:-1]), t_max)
    video /= opts.pool**2
    n = len(v_len)
    video = video.reshape(n, t_max, gh, gw, -1)
    v_mask = np.broadcast_to(v_mask[:, :, None, None], (n, t_max, gh, gw)).copy()
    audio, a_mask = pad_sequences(np.split(arrays["audio"], np.cumsum(a_len)[:-1]), a_max)
    data = SplitData({"avletters_video": video, "avletters_audio": audio}, arrays["letter"],
                     {"avletters_video": v_mask, "avletters_audio": a_mask})
    test = arrays["rep"] == AVLETTERS_TEST_REP
    splits = three_way(data.subset(np.flatnonzero(~test)), data.subset(np.flatnonzero(test)), opts.val_frac, 0.0,
                       ctx.seed, stratify=True)
    specs = {"avletters_video": spec("avletters_video", "video", (None, gh, gw, video.shape[-1]), max_len=t_max),
             "avletters_audio": spec("avletters_audio", "audio", (None, MFCC_DIM), max_len=a_max)}
    td = TaskData(make_task(entry, list(specs), "classification", 26, [chr(ord("A") + i) for i in range(26)],
                            "spoken letter from lip video and MFCC audio of the same utterance"),
                  specs, splits, str(folder))
    return fit_normalization(td, {"avletters_video": "channel", "avletters_audio": "channel"})


@dataclass
class AVMNISTOptions(SpectrogramOptions):
    """The ``fsdd`` spectrogram settings, plus the ``mnist`` image patch and carved test fraction."""

    patch: int = 4
    test_frac: float = 0.2


@register_loader("avmnist", AVMNISTOptions, ("image", "audio"),
                 "AV-MNIST construction: MNIST test images paired by digit with FSDD recordings",
                 lambda ctx: all(check(ctx) for check in (shared_available("mnist_test", MNIST_FILES),
                                                           shared_available("fsdd", FSDD_FILES))))
def avmnist(opts: AVMNISTOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """AV-MNIST built as Vielzeuf et al. (2018, CentralNet) built it: each MNIST image is paired with an
    FSDD recording of the same digit. The pairing is a construction, not a recorded one: image and
    sound share only the label (the original also degraded both views to make fusion matter, which is
    not reproduced here). Images are split exactly as the ``mnist`` task (same code, same seed); audio
    follows FSDD's official split (test = recordings 0–4, val carved from train as in ``fsdd``). Each
    image draws its recording, seeded, from the same split only, cycling through a shuffled list of that
    digit's recordings so each is used about equally often; no recording crosses splits."""
    images = mnist(ImageOptions(opts.patch, opts.val_frac, opts.test_frac), TaskEntry(entry.name, "mnist"), ctx)
    sounds = fsdd_splits(ctx, opts, "avmnist_audio")
    rng = np.random.default_rng(ctx.seed)
    splits = {}
    for split in SPLITS:
        img, snd = images.splits[split], sounds[split]
        pick = np.empty(len(img), dtype=np.int64)
        for digit in range(10):
            want = np.flatnonzero(img.y == digit)
            pick[want] = np.resize(rng.permutation(np.flatnonzero(snd.y == digit)), len(want))
        splits[split] = SplitData(
            {"avmnist_image": img.inputs["mnist_image"], "avmnist_audio": snd.inputs["avmnist_audio"][pick]},
            img.y, {"avmnist_audio": snd.masks["avmnist_audio"][pick]})
    specs = {"avmnist_image": spec("avmnist_image", "image", images.specs["mnist_image"].shape),
             "avmnist_audio": _audio_spec("avmnist_audio", opts)}
    td = TaskData(make_task(entry, list(specs), "classification", 10, [str(i) for i in range(10)],
                            "digit from an MNIST image and an FSDD recording paired by label"),
                  specs, splits, f"{images.source} + {require_root(ctx, 'fsdd')}")
    return fit_normalization(td, {"avmnist_image": "channel", "avmnist_audio": "channel"})
