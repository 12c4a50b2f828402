"""Bring your own data with no code: an ``.npz`` (one array per modality) or a CSV table.

Example task entry (configs/byo_motions.yaml is a whole config; docs/bring-your-own.md)::

    - name: racket
      source: npz
      path: data/racket.npz        # relative to the config file
      modalities:
        imu: {kind: imu, key: X}   # (N, 30, 6): 30 time steps × 6 channels (channels last)
      target: {kind: classification, key: y}

An optional ``split`` array of strings (train/val/test) gives the splits; whatever is missing is
carved from train with the run seed (stratified for classification).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from highmodal.data.loaders import (
    LoadContext,
    TaskEntry,
    encode_labels,
    fit_normalization,
    make_task,
    register_loader,
    spec,
)
from highmodal.data.splits import carve
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import KINDS
from highmodal.tasks import SPLITS, TARGETS, SplitData, TaskData

NORMALIZE = ("channel", "element", "none")


@dataclass
class ModalityField:
    """One modality of a file. ``shape`` (optional) is the expected per-sample shape, checked on load;
    ``channels_first`` moves axis 1 of the array to the end; ``mask_key`` names a ``(N, L)`` boolean
    array marking the real steps of a variable-length first axis.

    Graphs given as edges (kind ``graph``, PyTorch Geometric's layout over all graphs at once):
    ``edge_index`` names a ``(2, E)`` integer array of 0-based node ids, ``graph_index`` a per-node
    array of 0-based graph ids in non-decreasing order (PyG's ``batch``), and ``key`` (optional)
    the node features: ``(nodes,)`` integer labels (one-hot) or ``(nodes, F)`` values. Degree and
    random-walk encodings are computed from the edges; ``max_nodes`` tokens are kept per graph."""

    kind: str
    key: str | None = None
    shape: list[int] | None = None
    channels_first: bool = False
    mask_key: str | None = None
    normalize: str = "channel"
    num_freq_bands: int = 6
    max_freq: float = 1.0
    edge_index: str | None = None
    graph_index: str | None = None
    max_nodes: int = 256


@dataclass
class ForecastField:
    """The input channel a forecast target continues: ``modality`` (``(N, steps, channels)``), ``channel``."""

    modality: str
    channel: int = 0


@dataclass
class TargetField:
    """``num_classes`` (classification, integer labels): labels must lie in 0..num_classes-1.
    ``forecast`` (regression): the ``{modality, channel}`` of a ``(N, steps, channels)`` input whose
    next values the target holds; its last observed value is then the naive forecast to beat, and
    the model forecasts from it (see the task keys ``forecast_residual``, ``forecast_instance_norm``)."""

    kind: str
    key: str = "y"
    num_classes: int | None = None
    forecast: ForecastField | None = None


@dataclass
class NpzOptions:
    """``path``: the .npz (relative to the config file); ``split_key``: an optional array of
    train/val/test strings; what it leaves out (or all, without one) is carved from train:
    ``test_frac`` then ``val_frac`` of the rows, stratified for classification, with the run seed."""

    path: str
    modalities: dict[str, ModalityField]
    target: TargetField
    split_key: str = "split"
    val_frac: float = 0.15
    test_frac: float = 0.2


@dataclass
class CsvOptions:
    """A table: each feature column is one token of the ``modality`` (kind tabular). ``features``:
    the columns to use (default: all but target and split); ``split_column``: optional
    train/val/test strings, the rest carved as for ``npz``; ``categorical``: columns coded by value."""

    path: str
    target: TargetField
    features: list[str] | None = None
    modality: str = "table"
    split_column: str | None = None
    val_frac: float = 0.15
    test_frac: float = 0.2
    categorical: list[str] = field(default_factory=list)


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise HighmodalError(f"{where}: {value!r} is not one of {', '.join(choices)}")


def read_labels(raw: np.ndarray, target: TargetField, where: str) -> tuple[np.ndarray, list[str], int]:
    """Targets → (y, class names, out_dim), with range and type checks naming ``where``."""
    _check_choice(target.kind, TARGETS, f"{where}: target.kind")
    if target.kind == "regression":
        if not np.issubdtype(raw.dtype, np.number) or raw.ndim not in (1, 2):
            raise HighmodalError(f"{where}: regression target must be numeric of shape (N,) or (N, K), "
                                 f"got {raw.dtype} {raw.shape}")
        y = raw.astype(np.float32).reshape(len(raw), -1)
        if not np.all(np.isfinite(y)):
            raise HighmodalError(f"{where}: regression target contains NaN or inf")
        return y, [], y.shape[1]
    if raw.ndim != 1:
        raise HighmodalError(f"{where}: classification labels must be 1-D, got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.floating):
        raise HighmodalError(f"{where}: classification labels must be integers or strings, got {raw.dtype}")
    if target.num_classes is not None and np.issubdtype(raw.dtype, np.integer):
        bad = raw[(raw < 0) | (raw >= target.num_classes)]
        if len(bad):
            raise HighmodalError(f"{where}: label {int(bad[0])} is out of range 0..{target.num_classes - 1} "
                                 f"(target.num_classes = {target.num_classes})")
        absent = sorted(set(range(target.num_classes)) - set(np.unique(raw).tolist()))
        if absent:
            raise HighmodalError(f"{where}: target.num_classes = {target.num_classes} but class(es) "
                                 f"{', '.join(map(str, absent))} have no rows; give the number of classes the "
                                 "labels hold")
        return raw.astype(np.int64), [str(i) for i in range(target.num_classes)], target.num_classes
    y, names = encode_labels(raw, where)
    if target.num_classes is not None and target.num_classes != len(names):
        raise HighmodalError(f"{where}: target.num_classes = {target.num_classes} but the labels hold "
                             f"{len(names)} distinct values ({', '.join(names[:10])})")
    if len(names) < 2:
        raise HighmodalError(f"{where}: classification needs at least 2 distinct labels, found {names}")
    return y, names, len(names)


def assign_splits(data: SplitData, split: np.ndarray | None, opts, stratify: bool, seed: int, where: str):
    """Use the file's split labels where given; carve what is missing from train."""
    if split is None:
        parts = {"train": data}
    else:
        split = np.asarray(split).astype(str)
        unknown = sorted(set(split.tolist()) - set(SPLITS))
        if unknown:
            raise HighmodalError(f"{where}: split values must be train/val/test, found {unknown}")
        parts = {s: data.subset(np.flatnonzero(split == s)) for s in SPLITS if (split == s).any()}
        if "train" not in parts:
            raise HighmodalError(f"{where}: the split array marks no 'train' samples")
    if "test" not in parts:
        parts["train"], parts["test"] = carve(parts["train"], opts.test_frac, seed, stratify, f"{where}: test_frac")
    if "val" not in parts:
        parts["train"], parts["val"] = carve(parts["train"], opts.val_frac, seed + 1, stratify, f"{where}: val_frac")
    return parts


def open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise HighmodalError(f"{path}: data file not found")
    if not zipfile.is_zipfile(path):
        raise HighmodalError(f"{path}: not a readable .npz file (not a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise HighmodalError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:
        raise HighmodalError(f"{path}: holds object arrays, which are refused (no pickle): {e}") from None


def npz_graphs(arrays: dict[str, np.ndarray], m: ModalityField, where: str, n_labels: int | None = None
               ) -> dict[str, np.ndarray]:
    """A graph modality given as ``edge_index`` + ``graph_index`` (+ node features under ``key``) →
    padded node tokens (``x``, ``mask``, ``wl``, ``nodes``). ``n_labels``: the one-hot width of integer
    node labels (the training file's, at predict time; else the largest label + 1)."""
    from highmodal.data.real.graphs import GraphOptions, graph_tokens

    for what, key in (("edge_index", m.edge_index), ("graph_index", m.graph_index)):
        if key is None:
            raise HighmodalError(f"{where}: a graph given as edges needs both edge_index and graph_index keys")
        if key not in arrays:
            raise HighmodalError(f"{where}: {what} key {key!r} not found; keys in file: {', '.join(arrays)}")
    edges, graph_of = arrays[m.edge_index], arrays[m.graph_index]
    if not np.issubdtype(edges.dtype, np.integer) or edges.ndim != 2 or 2 not in edges.shape:
        raise HighmodalError(f"{where}: {m.edge_index!r} must be integer node ids of shape (2, E), "
                             f"got {edges.dtype} {edges.shape}")
    edges = edges.T if edges.shape[0] == 2 else edges
    if not np.issubdtype(graph_of.dtype, np.integer) or graph_of.ndim != 1 or len(graph_of) == 0:
        raise HighmodalError(f"{where}: {m.graph_index!r} must be a 1-D integer array (a graph id per node), "
                             f"got {graph_of.dtype} {graph_of.shape}")
    if graph_of[0] != 0 or np.any(np.diff(graph_of) < 0):
        raise HighmodalError(f"{where}: {m.graph_index!r} must run in non-decreasing order from 0 "
                             "(each graph's nodes together)")
    n = len(graph_of)
    if len(edges) and (edges.min() < 0 or edges.max() >= n or np.any(graph_of[edges[:, 0]] != graph_of[edges[:, 1]])):
        raise HighmodalError(f"{where}: {m.edge_index!r} refers to a node outside 0..{n - 1} or joins two graphs")
    leading, trailing, labels = [], [], None
    if m.key is not None:
        if m.key not in arrays:
            raise HighmodalError(f"{where}: node feature key {m.key!r} not found; keys in file: {', '.join(arrays)}")
        feats = arrays[m.key]
        if len(feats) != n:
            raise HighmodalError(f"{where}: {m.key!r} has {len(feats)} rows for {n} nodes")
        if feats.ndim == 1 and np.issubdtype(feats.dtype, np.integer):
            width = int(feats.max()) + 1 if n_labels is None else n_labels
            if feats.min() < 0 or feats.max() >= width:
                raise HighmodalError(f"{where}: node labels {m.key!r} must lie in 0..{width - 1}")
            labels, leading = feats, [np.eye(width)[feats]]
        elif np.issubdtype(feats.dtype, np.number) and feats.ndim in (1, 2):
            trailing = [feats.reshape(n, -1).astype(np.float64)]
        else:
            raise HighmodalError(f"{where}: node features {m.key!r} must be integer labels (nodes,) or numbers "
                                 f"(nodes, F), got {feats.dtype} {feats.shape}")
    opts = GraphOptions(max_nodes=m.max_nodes)
    return graph_tokens(edges.astype(np.int64), graph_of.astype(np.int64), int(graph_of[-1]) + 1, leading, trailing,
                        labels, opts, where)


@register_loader("npz", NpzOptions, KINDS, "your own .npz: one array per modality, a target, optional split")
def load_npz(opts: NpzOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    path = ctx.resolve(opts.path)
    arrays = open_npz(path)

    def get(key: str, what: str) -> np.ndarray:
        if key not in arrays:
            raise HighmodalError(f"{path}: {what} key {key!r} not found; keys in file: {', '.join(arrays)}")
        return arrays[key]

    if not opts.modalities:
        raise HighmodalError(f"{path}: task {entry.name!r} lists no modalities")
    y, class_names, out_dim = read_labels(get(opts.target.key, "target"), opts.target, f"{path} [{opts.target.key}]")
    inputs, masks, specs, modes, meta = {}, {}, {}, {}, {}
    for name, m in opts.modalities.items():
        where = f"{path} [modality {name!r}, key {m.key!r}]"
        _check_choice(m.kind, KINDS, f"{where} kind")
        _check_choice(m.normalize, NORMALIZE, f"{where} normalize")
        if m.edge_index is not None or m.graph_index is not None:
            if m.kind != "graph":
                raise HighmodalError(f"{where}: edge_index/graph_index are for kind 'graph', not {m.kind!r}")
            graphs = npz_graphs(arrays, m, where)
            inputs[name], masks[name], meta["wl"] = graphs["x"].astype(np.float32), graphs["mask"], graphs["wl"]
            specs[name] = spec(name, "graph", (None, graphs["x"].shape[-1]), max_len=graphs["x"].shape[1])
            modes[name] = m.normalize
            continue
        if m.key is None:
            raise HighmodalError(f"{where}: 'key' (the array's name in the file) is required")
        x = get(m.key, f"modality {name!r}")
        if not np.issubdtype(x.dtype, np.number):
            raise HighmodalError(f"{where}: expected a numeric array, got dtype {x.dtype}")
        if x.ndim == 2:
            x = x[..., None]
        elif m.channels_first:
            x = np.moveaxis(x, 1, -1)
        if m.shape is not None and list(x.shape[1:]) != list(m.shape):
            raise HighmodalError(f"{where}: expected per-sample shape {tuple(m.shape)}, got {x.shape[1:]}")
        shape: tuple = x.shape[1:]
        max_len = None
        if m.mask_key is not None:
            mask = get(m.mask_key, f"mask of {name!r}").astype(bool)
            if mask.shape != x.shape[:2]:
                raise HighmodalError(f"{where}: mask {m.mask_key!r} must have shape {x.shape[:2]}, got {mask.shape}")
            masks[name] = mask
            shape, max_len = (None, *x.shape[2:]), x.shape[1]
        inputs[name] = x.astype(np.float32)
        specs[name] = spec(name, m.kind, shape, num_freq_bands=m.num_freq_bands, max_freq=m.max_freq,
                           max_len=max_len)
        modes[name] = m.normalize
    split = arrays.get(opts.split_key)
    data = SplitData(inputs, y, masks, meta)
    for name, x in inputs.items():
        if len(x) != len(y):
            raise HighmodalError(f"{path}: modality {name!r} has {len(x)} samples but the target has {len(y)}")
    if split is not None and len(split) != len(y):
        raise HighmodalError(f"{path}: split array {opts.split_key!r} has {len(split)} entries, expected {len(y)}")
    splits = assign_splits(data, split, opts, opts.target.kind == "classification", ctx.seed, str(path))
    task = make_task(entry, list(opts.modalities), opts.target.kind, out_dim, class_names, f"from {path.name}")
    if opts.target.forecast is not None:
        forecast = forecast_of(opts.target, inputs, f"{path} [target.forecast]")
        task = replace(task, forecast=forecast, metric=task.metric or "mse")
        if task.forecast_instance_norm:
            modes[task.forecast[0]] = "none"  # each window is standardised on its own
    return fit_normalization(TaskData(task, specs, splits, str(path)), modes)


def forecast_of(target: TargetField, inputs: dict[str, np.ndarray], where: str) -> tuple[str, int]:
    """``target.forecast`` checked against the inputs: ``(modality, channel)``."""
    modality, channel = target.forecast.modality, target.forecast.channel
    if target.kind != "regression":
        raise HighmodalError(f"{where}: a forecast target is a regression target, not {target.kind!r}")
    if modality not in inputs or inputs[modality].ndim != 3:
        raise HighmodalError(f"{where}: modality {modality!r} must be a (N, steps, channels) input of the task")
    if not 0 <= channel < inputs[modality].shape[-1]:
        raise HighmodalError(f"{where}: channel {channel!r} is not in 0..{inputs[modality].shape[-1] - 1}")
    return modality, channel


@register_loader("csv", CsvOptions, ("tabular",), "your own CSV table: feature columns and a target column")
def load_csv(opts: CsvOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Numeric columns are used as they are; columns listed in ``categorical`` (or holding text) are
    coded by their sorted distinct values. Missing values are an error, not silently filled."""
    import pandas as pd

    path = ctx.resolve(opts.path)
    if not path.is_file():
        raise HighmodalError(f"{path}: data file not found")
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise HighmodalError(f"{path}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    special = [opts.target.key] + ([opts.split_column] if opts.split_column else [])
    features = opts.features if opts.features is not None else [c for c in df.columns if c not in special]
    for col in [*special, *features, *opts.categorical]:
        if col not in df.columns:
            raise HighmodalError(f"{path}: column {col!r} not found; columns: {', '.join(map(str, df.columns))}")
    if not features:
        raise HighmodalError(f"{path}: no feature columns")
    cols = []
    for col in features:
        values = df[col]
        if values.isna().any():
            raise HighmodalError(f"{path}: column {col!r} has {int(values.isna().sum())} missing values; "
                                 "fill or drop them first")
        if col in opts.categorical or not pd.api.types.is_numeric_dtype(values):
            values = pd.Series(pd.Categorical(values.astype(str)).codes, index=values.index)
        cols.append(values.to_numpy(dtype=np.float32))
    x = np.stack(cols, axis=1)[..., None]
    raw = df[opts.target.key]
    if raw.isna().any():
        raise HighmodalError(f"{path}: target column {opts.target.key!r} has missing values")
    raw_y = raw.to_numpy() if pd.api.types.is_numeric_dtype(raw) else raw.astype(str).to_numpy()
    y, class_names, out_dim = read_labels(raw_y, opts.target, f"{path} [{opts.target.key}]")
    split = df[opts.split_column].to_numpy() if opts.split_column else None
    splits = assign_splits(SplitData({opts.modality: x}, y), split, opts, opts.target.kind == "classification",
                     ctx.seed, str(path))
    task = make_task(entry, [opts.modality], opts.target.kind, out_dim, class_names, f"from {path.name}")
    specs = {opts.modality: spec(opts.modality, "tabular", x.shape[1:])}
    return fit_normalization(TaskData(task, specs, splits, str(path)), {opts.modality: "element"})
