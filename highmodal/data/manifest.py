"""``source: manifest``: a CSV (or JSONL) with one row per sample, a column per modality holding a
file path (relative to the manifest) or, for tabular modalities, values; a target column and an
optional split column. Files are read by their type with the field's library:

* point clouds: ``.xyz``/``.txt``/``.pts``/``.csv`` (x y z [more] per line), ``.npy``, ASCII or
  binary ``.ply``, ``.off``; sampled to ``points`` (farthest-point by default, as PointNet++), centred
  and scaled into the unit sphere by default, padded with a mask when an object has fewer points;
* images (image, X-ray, infrared, depth): anything Pillow opens, converted to grey or RGB (``gray``),
  resized to ``size`` (default: the first image's size, rounded down to the patch) and cut into
  ``patch``×``patch`` tokens;
* sequences (time series, IMU, video frames): ``.csv`` (one row per time step, numeric columns) or
  ``.npy`` ``(L, C)`` (``(L, ...)`` is flattened per step; ``channels_first`` reads ``(C, L)``),
  padded with a mask;
* audio: ``.wav``/``.flac``/``.ogg``/``.aiff`` (soundfile) → the log-mel front end of the FSDD
  loader at ``sample_rate`` (other rates are resampled), or ``.npy``/``.csv`` features per frame;
* tabular: ``columns`` of the manifest itself, one token per column;
* text: the column holds the text itself; lower-cased words and punctuation become ids by feature
  hashing (Weinberger et al. 2009) into ``vocab_size`` buckets, so no fitted vocabulary has to
  travel with the run and new text at predict time gets the same ids.

``manifest_inputs`` is the one reading path: training reads the manifest through it, and
``highmodal predict`` reads a manifest of new files through it with the run's options and shapes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from highmodal.data.byo import NORMALIZE, TargetField, assign_splits, read_labels
from highmodal.data.loaders import (
    LoadContext,
    TaskEntry,
    fit_normalization,
    make_task,
    pad_sequences,
    register_loader,
    spec,
)
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import KINDS, ModalitySpec
from highmodal.registry import Registry
from highmodal.tasks import SplitData, TaskData

IMAGE_KINDS = ("image", "xray", "infrared", "depth")
SEQUENCE_KINDS = ("time_series", "imu", "video", "audio")


@dataclass
class ManifestField:
    """One modality. ``key``: the manifest column with the file paths (``columns`` for tabular).
    Point clouds: ``points`` kept per object, ``sampling`` fps|random, ``center``, ``scale``.
    Images: ``size`` [H, W], ``patch``, ``gray``. Sequences: ``channels_first`` for ``.npy`` files.
    Audio files: ``sample_rate`` and ``n_mels``. Text: ``vocab_size`` hash buckets, ``max_words``.
    ``normalize``: channel|element|none (text ids are never normalised)."""

    kind: str
    key: str | None = None
    columns: list[str] | None = None
    points: int = 1024
    sampling: str = "fps"
    center: bool = True
    scale: bool = True
    size: list[int] | None = None
    patch: int = 8
    gray: bool | None = None
    channels_first: bool = False
    sample_rate: int = 16000
    n_mels: int = 40
    vocab_size: int = 32768
    max_words: int = 64
    normalize: str = "channel"


@dataclass
class ManifestOptions:
    """``path``: the CSV or JSONL manifest; ``split_key``: an optional column of train/val/test, the
    rest carved from train (``test_frac``, then ``val_frac``, stratified, with the run seed)."""

    path: str
    modalities: dict[str, ManifestField]
    target: TargetField
    split_key: str = "split"
    val_frac: float = 0.15
    test_frac: float = 0.2


def read_manifest(path: Path):
    """The manifest as a DataFrame (CSV, or JSON lines for ``.jsonl``/``.ndjson``)."""
    import pandas as pd

    if not path.is_file():
        raise HighmodalError(f"{path}: manifest not found")
    try:
        if path.suffix in (".jsonl", ".ndjson"):
            df = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
        else:
            df = pd.read_csv(path, skipinitialspace=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise HighmodalError(f"{path}: not a readable manifest ({str(e).splitlines()[0]})") from None
    if df.empty:
        raise HighmodalError(f"{path}: the manifest has no rows")
    return df


# --- point clouds ------------------------------------------------------------------------------------
def _ply(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise HighmodalError(f"{path}: not a PLY file (no 'ply' magic or 'end_header')")
    header = raw[:end].decode("ascii", "replace").splitlines()
    body = raw[raw.index(b"\n", end) + 1:]
    fmt = next((line.split()[1] for line in header if line.startswith("format")), "")
    count, props, in_vertex = 0, [], False
    types = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
             "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
             "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}
    for line in header:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            count = int(parts[2]) if in_vertex else count
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list" or parts[1] not in types:
                raise HighmodalError(f"{path}: vertex property {' '.join(parts[1:])!r} is not supported")
            props.append((parts[2], types[parts[1]]))
    if fmt == "ascii":
        rows = body.decode("ascii", "replace").split("\n")[:count]
        values = np.array([[float(v) for v in row.split()[: len(props)]] for row in rows])
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + t) for name, t in props])
        data = np.frombuffer(body, dtype=dtype, count=count)
        values = np.stack([data[name].astype(np.float64) for name, _ in props], axis=1)
    else:
        raise HighmodalError(f"{path}: PLY format {fmt!r} is not supported")
    names = [name for name, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise HighmodalError(f"{path}: PLY vertices have no x, y, z properties (found {', '.join(names)})")
    return values[:, [names.index(c) for c in "xyz"]]


def _off(path: Path) -> np.ndarray:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    first = lines[0]
    if not first.startswith("OFF"):
        raise HighmodalError(f"{path}: not an OFF file (first line {first[:20]!r})")
    counts = first[3:].split() or lines.pop(1).split()
    n = int(counts[0])
    return np.array([[float(v) for v in line.split()[:3]] for line in lines[1: 1 + n]])


def _text_points(path: Path) -> np.ndarray:
    text = path.read_text()
    if not text.strip():
        raise HighmodalError(f"{path}: empty file, no points; drop its row from the manifest")
    delimiter = "," if "," in text.split("\n", 1)[0] else None
    return np.loadtxt(path, delimiter=delimiter, ndmin=2)


POINT_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".xyz": _text_points, ".txt": _text_points, ".pts": _text_points, ".csv": _text_points,
    ".npy": lambda p: np.load(p, allow_pickle=False), ".ply": _ply, ".off": _off,
}


def farthest_points(xyz: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` points by farthest-point sampling (PointNet++), from a random start."""
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(len(xyz))
    dist = np.full(len(xyz), np.inf)
    for i in range(1, k):
        dist = np.minimum(dist, ((xyz - xyz[chosen[i - 1]]) ** 2).sum(1))
        chosen[i] = int(dist.argmax())
    return chosen


def read_points(path: Path, f: ManifestField, rng: np.random.Generator) -> np.ndarray:
    reader = POINT_READERS.get(path.suffix.lower())
    if reader is None:
        raise HighmodalError(f"{path}: point-cloud files must be one of {', '.join(POINT_READERS)}")
    try:
        pts = np.asarray(reader(path), dtype=np.float64)
    except (OSError, ValueError) as e:
        raise HighmodalError(f"{path}: cannot read the point cloud ({str(e).splitlines()[0]})") from None
    if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise HighmodalError(f"{path}: expected rows of at least 3 finite coordinates, got shape {pts.shape}")
    if len(pts) > f.points:
        keep = farthest_points(pts[:, :3], f.points, rng) if f.sampling == "fps" else \
            np.sort(rng.choice(len(pts), f.points, replace=False))
        pts = pts[keep]
    if f.center:
        pts[:, :3] -= pts[:, :3].mean(0)
    if f.scale:
        pts[:, :3] /= max(float(np.linalg.norm(pts[:, :3], axis=1).max()), 1e-12)
    return pts.astype(np.float32)


# --- images, sequences, audio -------------------------------------------------------------------------
def read_image(path: Path, f: ManifestField, size: tuple[int, int], gray: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if gray else "RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise HighmodalError(f"{path}: cannot read the image ({e})") from None


def read_sequence(path: Path, f: ManifestField) -> np.ndarray:
    import pandas as pd

    try:
        if path.suffix.lower() == ".npy":
            x = np.load(path, allow_pickle=False).astype(np.float32)
            if f.channels_first and x.ndim == 2:
                x = x.T
        elif path.suffix.lower() in (".csv", ".txt"):
            x = pd.read_csv(path).select_dtypes("number").to_numpy(dtype=np.float32)
        else:
            raise HighmodalError(f"{path}: sequence files must be .npy or .csv")
    except (OSError, ValueError) as e:
        raise HighmodalError(f"{path}: cannot read the sequence ({str(e).splitlines()[0]})") from None
    x = x.reshape(len(x), -1) if x.ndim > 1 else x[:, None]
    if len(x) == 0 or not np.all(np.isfinite(x)):
        raise HighmodalError(f"{path}: the sequence is empty or holds NaN/inf values")
    return x


AUDIO_FILES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def read_audio(path: Path, f: ManifestField) -> np.ndarray:
    """A sound file (soundfile: WAV, FLAC, OGG, AIFF) → log-mel frames; other files are per-frame features."""
    import soundfile
    from scipy.signal import resample_poly

    from highmodal.data.real.audio import SpectrogramOptions, log_mel, mel_filterbank

    if path.suffix.lower() not in AUDIO_FILES:
        return read_sequence(path, f)
    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise HighmodalError(f"{path}: cannot read the sound file ({type(e).__name__}: {e})") from None
    if wave.ndim == 2:
        wave = wave.mean(1)
    if rate != f.sample_rate:
        g = np.gcd(rate, f.sample_rate)
        wave = resample_poly(wave, f.sample_rate // g, rate // g).astype(np.float32)
    opts = SpectrogramOptions(n_mels=f.n_mels, max_seconds=max(len(wave) / f.sample_rate, 0.05))
    window, hop, _ = opts.framing(f.sample_rate)
    if len(wave) < window:
        raise HighmodalError(f"{path}: {len(wave)} samples, shorter than one {window}-sample window")
    return log_mel(wave, f.sample_rate, mel_filterbank(f.n_mels, window, f.sample_rate), window, hop)


# --- one modality column → arrays ------------------------------------------------------------------
READERS: Registry[Callable] = Registry("manifest modality kind")


def _files(df, f: ManifestField, base: Path, where: str) -> list[Path]:
    if f.key is None or f.key not in df.columns:
        raise HighmodalError(f"{where}: key {f.key!r} is not a manifest column; columns: {', '.join(df.columns)}")
    paths = [base / str(v) for v in df[f.key]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise HighmodalError(f"{where}: {len(missing)} file(s) not found, e.g. {missing[0]}")
    return paths


@READERS.register("point_cloud")
def _point_column(df, f, base, where, ref, seed):
    if f.sampling not in ("fps", "random") or f.points < 1:
        raise HighmodalError(f"{where}: sampling must be fps or random and points >= 1")
    rng = np.random.default_rng(seed)
    sets = [read_points(p, f, rng) for p in _files(df, f, base, where)]
    widths = {s.shape[1] for s in sets}
    if len(widths) != 1:
        raise HighmodalError(f"{where}: point files have different numbers of columns {sorted(widths)}")
    length = ref.max_len if ref is not None else f.points
    x, mask = pad_sequences(sets, length)
    return x, mask, (None, x.shape[-1]), length


def _image_column(df, f, base, where, ref, seed):
    paths = _files(df, f, base, where)
    if ref is not None:
        gh, gw, d = ref.shape
        gray = d == f.patch * f.patch
        size = (gh * f.patch, gw * f.patch)
    else:
        from PIL import Image

        with Image.open(paths[0]) as first:
            w, h = first.size
            gray = f.gray if f.gray is not None else first.mode in ("L", "I", "I;16", "F", "1")
        size = tuple(f.size) if f.size else (h, w)
        size = (size[0] // f.patch * f.patch, size[1] // f.patch * f.patch)
        if min(size) < f.patch:
            raise HighmodalError(f"{where}: images of {h}x{w} are smaller than one {f.patch}-pixel patch")
    from highmodal.data.real.common import patchify

    images = np.stack([read_image(p, f, size, gray) for p in paths])
    x = patchify(images, f.patch)
    return x, None, x.shape[1:], None


for _kind in IMAGE_KINDS:
    READERS.register(_kind)(_image_column)


def _sequence_column(read: Callable[[Path, ManifestField], np.ndarray]):
    def column(df, f, base, where, ref, seed):
        seqs = [read(p, f) for p in _files(df, f, base, where)]
        widths = {s.shape[1] for s in seqs}
        if len(widths) != 1 or (ref is not None and widths != {ref.shape[-1]}):
            raise HighmodalError(f"{where}: sequences have {sorted(widths)} channels"
                                 + (f"; the model expects {ref.shape[-1]}" if ref is not None else ""))
        longest = max(len(s) for s in seqs)
        length = ref.max_len if ref is not None else longest
        if longest > length:
            raise HighmodalError(f"{where}: a sequence has {longest} steps; the model was trained on at most {length}")
        x, mask = pad_sequences(seqs, length)
        return x, mask, (None, x.shape[-1]), length
    return column


for _kind in ("time_series", "imu", "video"):
    READERS.register(_kind)(_sequence_column(read_sequence))
READERS.register("audio")(_sequence_column(read_audio))


@READERS.register("tabular")
def _tabular_column(df, f, base, where, ref, seed):
    cols = f.columns or ([f.key] if f.key else None)
    if not cols or any(c not in df.columns for c in cols):
        raise HighmodalError(f"{where}: columns {cols} must be manifest columns; columns: {', '.join(df.columns)}")
    values = df[cols]
    if values.isna().any().any() or not all(np.issubdtype(t, np.number) for t in values.dtypes):
        raise HighmodalError(f"{where}: columns {cols} must be numeric with no missing values")
    x = values.to_numpy(dtype=np.float32)[..., None]
    return x, None, x.shape[1:], None


def hashed_ids(text: str, vocab_size: int, max_words: int) -> np.ndarray:
    """Words and punctuation of lower-cased ``text`` → ids in ``1..vocab_size-1`` (0 pads), stable
    across runs and machines (blake2b, not Python's salted hash)."""
    import hashlib
    import re

    words = re.findall(r"\w+|[^\w\s]", text.lower())[:max_words] or [""]
    return np.array([1 + int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                     % (vocab_size - 1) for w in words], dtype=np.float32)


@READERS.register("text")
def _text_column(df, f, base, where, ref, seed):
    if f.key is None or f.key not in df.columns:
        raise HighmodalError(f"{where}: key {f.key!r} is not a manifest column; columns: {', '.join(df.columns)}")
    if f.vocab_size < 2 or f.max_words < 1:
        raise HighmodalError(f"{where}: vocab_size must be >= 2 and max_words >= 1")
    texts = df[f.key].fillna("").astype(str).tolist()
    vocab = ref.vocab_size if ref is not None else f.vocab_size
    length = ref.max_len if ref is not None else f.max_words
    x, mask = pad_sequences([hashed_ids(t, vocab, length)[:, None] for t in texts], length)
    return x, mask, (None, 1), length


def manifest_inputs(df, fields: dict[str, ManifestField], base: Path, where: str, seed: int,
                    specs: dict[str, ModalitySpec] | None = None):
    """Each modality's ``(N, ...)`` array, mask (or None), per-sample shape and reference length.
    ``specs`` (at predict time): the trained model's, whose shapes and lengths the inputs must take."""
    out = {}
    for name, f in fields.items():
        at = f"{where} [modality {name!r}]"
        if f.kind not in KINDS or f.kind not in READERS:
            raise HighmodalError(f"{at} kind: {f.kind!r} is not one of {', '.join(READERS)}")
        if f.normalize not in NORMALIZE:
            raise HighmodalError(f"{at} normalize: {f.normalize!r} is not one of {', '.join(NORMALIZE)}")
        out[name] = READERS.get(f.kind)(df, f, base, at, None if specs is None else specs[name], seed)
    return out


@register_loader("manifest", ManifestOptions, tuple(READERS),
                 "a CSV/JSONL manifest: one row per sample, file paths or values per modality, a target")
def load_manifest(opts: ManifestOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    path = ctx.resolve(opts.path)
    df = read_manifest(path)
    if not opts.modalities:
        raise HighmodalError(f"{path}: task {entry.name!r} lists no modalities")
    if opts.target.key not in df.columns:
        raise HighmodalError(f"{path}: target column {opts.target.key!r} not found; columns: {', '.join(df.columns)}")
    raw = df[opts.target.key]
    if raw.isna().any():
        raise HighmodalError(f"{path}: target column {opts.target.key!r} has missing values")
    import pandas as pd

    raw_y = raw.to_numpy() if pd.api.types.is_numeric_dtype(raw) else raw.astype(str).to_numpy()
    y, class_names, out_dim = read_labels(raw_y, opts.target, f"{path} [{opts.target.key}]")
    read = manifest_inputs(df, opts.modalities, path.parent, str(path), ctx.seed)
    inputs = {m: r[0] for m, r in read.items()}
    masks = {m: r[1] for m, r in read.items() if r[1] is not None}
    fields = opts.modalities
    specs = {m: spec(m, fields[m].kind, r[2], max_len=r[3],
                     vocab_size=fields[m].vocab_size if fields[m].kind == "text" else None) for m, r in read.items()}
    texts = [m for m, f in fields.items() if f.kind == "text"]
    meta = {"text": df[fields[texts[0]].key].fillna("").astype(str).to_numpy()} if len(texts) == 1 else {}
    split = df[opts.split_key].to_numpy() if opts.split_key in df.columns else None
    splits = assign_splits(SplitData(inputs, y, masks, meta), split, opts, opts.target.kind == "classification",
                           ctx.seed, str(path))
    task = make_task(entry, list(fields), opts.target.kind, out_dim, class_names, f"from {path.name}")
    return fit_normalization(TaskData(task, specs, splits, str(path)),
                             {m: "none" if f.kind == "text" else f.normalize for m, f in fields.items()})


@dataclass
class FolderOptions:
    """``path``: a folder with one sub-folder per class (ImageFolder layout), or ``train``/``val``/
    ``test`` sub-folders each holding the class folders. ``modality``: the files' name in the model
    and ``field`` how they are read (as a manifest field; ``kind`` image or audio, ...)."""

    path: str
    field: ManifestField
    modality: str = "input"
    val_frac: float = 0.15
    test_frac: float = 0.2


def folder_manifest(folder: Path):
    """An ImageFolder-style tree → a manifest DataFrame (file, label[, split]); hidden files skipped."""
    import pandas as pd

    if not folder.is_dir():
        raise HighmodalError(f"{folder}: folder not found")
    splits = [s for s in ("train", "val", "test") if (folder / s).is_dir()]
    roots = [(folder / s, s) for s in splits] if splits else [(folder, None)]
    rows = []
    for root, split in roots:
        for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(p for p in cls.rglob("*") if p.is_file() and not p.name.startswith(".")):
                rows.append({"file": str(f.relative_to(folder)), "label": cls.name, "split": split})
    if not rows:
        raise HighmodalError(f"{folder}: no files in class sub-folders (expected {folder}/<class>/<file>)")
    df = pd.DataFrame(rows)
    return df if splits else df.drop(columns="split")


@register_loader("folder", FolderOptions, tuple(READERS), "a folder per class of image or audio files (ImageFolder)")
def load_folder(opts: FolderOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    folder = ctx.resolve(opts.path)
    df = folder_manifest(folder)
    field = dataclasses.replace(opts.field, key="file")
    read = manifest_inputs(df, {opts.modality: field}, folder, str(folder), ctx.seed)[opts.modality]
    y, class_names, out_dim = read_labels(df["label"].astype(str).to_numpy(), TargetField("classification"),
                                          f"{folder} [class folders]")
    split = df["split"].to_numpy() if "split" in df.columns else None
    data = SplitData({opts.modality: read[0]}, y, {} if read[1] is None else {opts.modality: read[1]})
    splits = assign_splits(data, split, opts, True, ctx.seed, str(folder))
    task = make_task(entry, [opts.modality], "classification", out_dim, class_names, f"class folders of {folder.name}")
    specs = {opts.modality: spec(opts.modality, field.kind, read[2], max_len=read[3])}
    return fit_normalization(TaskData(task, specs, splits, str(folder)), {opts.modality: field.normalize})
