"""Standard archives read in place, with no conversion: UEA/UCR ``.ts`` files and TU graph folders.

``source: ts`` reads a folder holding ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` (or one ``.ts`` file,
or a ``_TRAIN.ts`` file whose ``_TEST.ts`` sits beside it) with sktime's reader; the official
train/test split is kept and validation is carved from train. Series of unequal length are padded
with a mask. By default the series is one modality ``series`` of kind ``time_series`` holding every
dimension, named ``<task>_series``; ``modalities`` can name the kind and split the dimensions, e.g.
``{acc: {kind: imu, dims: [0, 1, 2]}, gyro: {kind: imu, dims: [3, 4, 5]}}``.

``source: tu`` reads any TU graph-dataset folder (Morris et al. 2020): ``NAME_A.txt``,
``NAME_graph_indicator.txt``, ``NAME_graph_labels.txt`` and, when present, ``NAME_node_labels.txt``,
``NAME_edge_labels.txt`` and ``NAME_node_attributes.txt``. Each graph becomes node tokens with the
structural encodings of ``data/real/graphs.py`` (degree, random-walk return probabilities), so a
user gives edges, not features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from highmodal.data.byo import TargetField, assign_splits, read_labels
from highmodal.data.loaders import (
    LoadContext,
    TaskEntry,
    fit_normalization,
    make_task,
    pad_sequences,
    register_loader,
    spec,
)
from highmodal.data.real.graphs import GraphOptions, build_tu_graphs, graph_task
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import KINDS
from highmodal.tasks import SplitData, TaskData

SERIES_KINDS = ("time_series", "imu", "audio")
TU_EXTRAS = ("node_labels", "edge_labels", "node_attributes")


@dataclass
class SeriesField:
    """One modality cut from the archive's dimensions (``dims``: their indices; None: all)."""

    kind: str = "time_series"
    dims: list[int] | None = None
    normalize: str = "channel"


@dataclass
class TsOptions:
    """``target.kind``: classification reads the class labels (``@classLabel``), regression the
    ``@targetLabel`` values; by default whichever the file declares."""

    path: str
    modalities: dict[str, SeriesField] | None = None  # None: one modality <task>_series, all dimensions
    target: TargetField | None = None
    val_frac: float = 0.15
    test_frac: float = 0.2  # only used when the archive has no test file


def ts_files(path: Path) -> tuple[Path, Path | None]:
    """The train file and (when there is one) the test file that ``path`` names."""
    if path.is_dir():
        trains = sorted(path.glob("*_TRAIN.ts"))
        if len(trains) != 1:
            found = ", ".join(p.name for p in sorted(path.glob("*.ts"))) or "none"
            raise HighmodalError(f"{path}: expected one NAME_TRAIN.ts file in the folder; .ts files found: {found}")
        path = trains[0]
    if not path.is_file():
        raise HighmodalError(f"{path}: .ts file not found")
    if path.suffix != ".ts":
        raise HighmodalError(f"{path}: expected a .ts file (UEA/UCR format) or a folder holding NAME_TRAIN.ts")
    test = path.with_name(path.name.replace("_TRAIN.ts", "_TEST.ts")) if path.name.endswith("_TRAIN.ts") else None
    return path, test if test is not None and test.is_file() else None


def ts_header(path: Path) -> dict[str, str]:
    """The ``@key value`` lines before ``@data`` (lower-case keys)."""
    header = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.lower().startswith("@data"):
                break
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
    return header


def read_ts(path: Path, target_kind: str) -> tuple[list[np.ndarray], np.ndarray]:
    """A ``.ts`` file → per-sample ``(L_i, D)`` arrays and the raw targets."""
    from sktime.datasets import load_from_tsfile

    try:
        x, y = load_from_tsfile(str(path), return_data_type="nested_univ",
                                y_dtype="float" if target_kind == "regression" else "str")
    except Exception as e:  # sktime raises IOError, ValueError and its own TsFileParseException
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HighmodalError(f"{path}: not a readable .ts file ({reason})") from None
    series = [np.stack([np.asarray(x.iloc[i, d], dtype=np.float32) for d in range(x.shape[1])], axis=1)
              if len({len(x.iloc[i, d]) for d in range(x.shape[1])}) == 1 else None for i in range(len(x))]
    if any(s is None for s in series):
        raise HighmodalError(f"{path}: a sample's dimensions have different lengths; each dimension of a sample "
                             "must have as many time points")
    if any(not np.all(np.isfinite(s)) for s in series):
        raise HighmodalError(f"{path}: missing values ('?' or NaN) in the series; fill them first")
    return series, np.asarray(y)


@register_loader("ts", TsOptions, SERIES_KINDS, "a UEA/UCR .ts archive (folder with NAME_TRAIN.ts, NAME_TEST.ts)")
def load_ts(opts: TsOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    train_path, test_path = ts_files(ctx.resolve(opts.path))
    header = ts_header(train_path)
    declared = "regression" if header.get("targetlabel", "false").lower() == "true" else "classification"
    target = opts.target or TargetField(declared)
    if target.kind == "classification" and header.get("classlabel", "true").lower().startswith("false"):
        raise HighmodalError(f"{train_path}: the file declares no class labels (@classLabel false); "
                             "set target: {kind: regression} if it has @targetLabel values")
    files = [train_path] + ([test_path] if test_path else [])
    parts = [read_ts(p, target.kind) for p in files]
    series = [s for p in parts for s in p[0]]
    dims = {s.shape[1] for s in series}
    if len(dims) != 1:
        raise HighmodalError(f"{train_path}: samples have different numbers of dimensions {sorted(dims)}")
    n_dims = dims.pop()
    y, class_names, out_dim = read_labels(np.concatenate([p[1] for p in parts]), target, f"{train_path} [target]")
    lengths = np.array([len(s) for s in series])
    inputs, masks, specs, modes = {}, {}, {}, {}
    fields = opts.modalities or {f"{entry.name}_series": SeriesField()}
    for name, m in fields.items():
        where = f"{train_path} [modality {name!r}]"
        if m.kind not in KINDS or m.kind not in SERIES_KINDS:
            raise HighmodalError(f"{where} kind: {m.kind!r} is not one of {', '.join(SERIES_KINDS)}")
        chosen = list(range(n_dims)) if m.dims is None else m.dims
        if not chosen or any(not 0 <= d < n_dims for d in chosen):
            raise HighmodalError(f"{where} dims: {m.dims} must be indices in 0..{n_dims - 1}")
        cut = [s[:, chosen] for s in series]
        if len(set(lengths)) == 1:
            inputs[name] = np.stack(cut)
            specs[name] = spec(name, m.kind, inputs[name].shape[1:])
        else:
            inputs[name], masks[name] = pad_sequences(cut, int(lengths.max()))
            specs[name] = spec(name, m.kind, (None, len(chosen)), max_len=int(lengths.max()))
        modes[name] = m.normalize
    split = None
    if test_path is not None:
        split = np.repeat(["train", "test"], [len(parts[0][0]), len(parts[1][0])])
    splits = assign_splits(SplitData(inputs, y, masks), split, opts, target.kind == "classification", ctx.seed,
                     str(train_path))
    what = f"from {train_path.name}" + (f" and {test_path.name} (official split)" if test_path else "")
    task = make_task(entry, list(fields), target.kind, out_dim, class_names, what)
    return fit_normalization(TaskData(task, specs, splits, str(train_path)), modes)


@dataclass
class TuOptions:
    """``path``: the folder; ``name``: the files' prefix (default: the folder's name).
    ``attributes``: ``signed_log`` passes node attributes through sign(x)·log(1+|x|) (for heavy
    tails), ``raw`` keeps them. The rest as for MUTAG/PROTEINS (``data/real/graphs.py``): node tokens
    kept per graph, random-walk steps, WL rounds of the kernel baseline, split fractions."""

    path: str
    name: str | None = None
    attributes: str = "raw"
    max_nodes: int = 256
    walk_steps: int = 8
    wl_iterations: int = 3
    val_frac: float = 0.1
    test_frac: float = 0.1


@register_loader("tu", TuOptions, ("graph",), "a TU graph-dataset folder (NAME_A.txt, NAME_graph_indicator.txt, ...)")
def load_tu(opts: TuOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    if opts.attributes not in ("raw", "signed_log"):
        raise HighmodalError(f"task {entry.name!r} (tu): attributes {opts.attributes!r} is not one of raw, signed_log")
    folder = ctx.resolve(opts.path)
    if not folder.is_dir():
        raise HighmodalError(f"{folder}: TU dataset folder not found")
    ds = opts.name or folder.name
    missing = [f"{ds}_{k}.txt" for k in ("A", "graph_indicator", "graph_labels")
               if not (folder / f"{ds}_{k}.txt").is_file()]
    if missing:
        found = ", ".join(sorted(p.name for p in folder.glob("*.txt"))[:8]) or "none"
        raise HighmodalError(f"{folder}: missing {', '.join(missing)} (set name: to the files' prefix if it is "
                             f"not the folder's name); .txt files found: {found}")
    extras = tuple(k for k in TU_EXTRAS if (folder / f"{ds}_{k}.txt").is_file())
    graph = GraphOptions(opts.max_nodes, opts.walk_steps, opts.wl_iterations, opts.val_frac, opts.test_frac)
    arrays = build_tu_graphs(folder, ds, graph, extras, signed_log=opts.attributes == "signed_log")
    what = f"TU graphs from {folder.name}" + (f" ({', '.join(extras)})" if extras else " (structure only)")
    labels = folder / f"{ds}_graph_labels.txt"
    return graph_task(arrays, f"{ds.lower()}_graph", labels, graph, entry, ctx, what, str(folder))
