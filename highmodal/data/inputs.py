"""New inputs for a trained task, read the way its training data was read: ``highmodal predict`` on
a file in the task's own source format, with the options of the run's config (keys,
``channels_first``, masks, dimension splits, point sampling, image size) and the trained shapes.

Per source, a reader takes the task's config entry, the file and the model's specs and returns
``{modality: array}`` plus ``{modality: mask}``; labels in the file, if any, are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np

from highmodal.config import from_mapping
from highmodal.data.loaders import LOADERS, TaskEntry, pad_sequences
from highmodal.errors import HighmodalError
from highmodal.modalities.spec import ModalitySpec
from highmodal.registry import Registry

Read = Callable[[object, Path, dict[str, ModalitySpec], int], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
INPUT_READERS: Registry[Read] = Registry("predict input format")


def entry_options(entry: dict, where: str):
    """The source's options dataclass for a config task entry (the keys every entry has removed)."""
    common = {f.name for f in fields(TaskEntry)}
    loader = LOADERS.get(entry["source"])
    return from_mapping(loader.options, {k: v for k, v in entry.items() if k not in common}, where)


def read_inputs(entry: dict, path: Path, specs: dict[str, ModalitySpec], seed: int = 0
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """The task's inputs from ``path`` in its training source's format, or None when that source
    has no reader for this kind of file (the caller then reads modality-named arrays)."""
    source = entry.get("source")
    if source not in INPUT_READERS:
        return None
    return INPUT_READERS.get(source)(entry_options(entry, f"run config, task {entry.get('name')!r}"), path, specs,
                                     seed)


def _fit_length(x: np.ndarray, mask: np.ndarray | None, spec: ModalitySpec, where: str):
    """Pad (or refuse) a variable-length axis to the trained reference length."""
    if spec.max_len is None or spec.shape[0] is not None:
        return x, mask
    if x.shape[1] > spec.max_len:
        raise HighmodalError(f"{where}: {x.shape[1]} steps; the model was trained on at most {spec.max_len}")
    if mask is None:
        mask = np.ones(x.shape[:2], dtype=bool)
    pad = spec.max_len - x.shape[1]
    return (np.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)), np.pad(mask, [(0, 0), (0, pad)]))


def _fits(x: np.ndarray, spec: ModalitySpec) -> bool:
    return x.ndim == len(spec.shape) + 1 and all(s is None or a == s for a, s in zip(x.shape[1:], spec.shape,
                                                                                      strict=True))


@INPUT_READERS.register("npz")
def _npz(opts, path: Path, specs, seed):
    """Arrays under the training file's keys (or named by modality), in the training layout
    (``channels_first`` moved, as in training, unless the array already has the model's layout);
    masks under the training ``mask_key`` or ``<modality>_mask``. Missing modalities are left out."""
    from highmodal.data.byo import npz_graphs, open_npz
    from highmodal.data.real.graphs import GraphOptions

    if path.suffix != ".npz":
        return None
    arrays = open_npz(path)
    inputs, masks = {}, {}
    for name, m in opts.modalities.items():
        if m.edge_index is not None and name in specs:
            spec = specs[name]
            labels = m.key is not None and arrays.get(m.key, np.zeros(0)).ndim == 1 and \
                np.issubdtype(arrays[m.key].dtype, np.integer)
            width = spec.shape[-1] - 1 - GraphOptions().walk_steps if labels else None
            graphs = npz_graphs(arrays, m, f"{path} [modality {name!r}]", width)
            if graphs["x"].shape[-1] != spec.shape[-1]:
                raise HighmodalError(f"{path} [modality {name!r}]: graphs give {graphs['x'].shape[-1]} node "
                                     f"channels, the model was trained on {spec.shape[-1]}")
            inputs[name], masks[name] = _fit_length(graphs["x"][:, : spec.max_len].astype(np.float32),
                                                    graphs["mask"][:, : spec.max_len], spec, str(path))
            continue
        key = m.key if m.key in arrays else name if name in arrays else None
        if key is None or name not in specs:
            continue
        x, spec = arrays[key], specs[name]
        if x.ndim == len(spec.shape) and spec.channels == 1:
            x = x[..., None]
        elif m.channels_first and not _fits(x, spec) and _fits(np.moveaxis(x, 1, -1), spec):
            x = np.moveaxis(x, 1, -1)
        mask_key = m.mask_key if m.mask_key in arrays else f"{name}_mask" if f"{name}_mask" in arrays else None
        mask = arrays[mask_key].astype(bool) if mask_key else None
        x, mask = _fit_length(x.astype(np.float32), mask, spec, f"{path} [{key}]")
        inputs[name] = x
        if mask is not None:
            masks[name] = mask
    return inputs, masks


@INPUT_READERS.register("ts")
def _ts(opts, path: Path, specs, seed):
    from highmodal.data.archives import SeriesField, read_ts, ts_header

    if path.suffix != ".ts":
        return None
    kind = "regression" if ts_header(path).get("targetlabel", "false").lower() == "true" else "classification"
    series, _ = read_ts(path, kind)
    fields = opts.modalities or {next(iter(specs)): SeriesField()}
    inputs, masks = {}, {}
    for name, f in fields.items():
        cut = [s if f.dims is None else s[:, f.dims] for s in series]
        x, mask = pad_sequences(cut, max(len(s) for s in cut))
        if specs[name].shape[0] is not None:  # trained on equal lengths
            if x.shape[1] != specs[name].shape[0]:
                raise HighmodalError(f"{path}: series of {x.shape[1]} steps; the model was trained on "
                                     f"{specs[name].shape[0]}")
            mask = None
        x, mask = _fit_length(x, mask, specs[name], str(path))
        inputs[name] = x
        if mask is not None:
            masks[name] = mask
    return inputs, masks


@INPUT_READERS.register("manifest")
def _manifest(opts, path: Path, specs, seed):
    from highmodal.data.manifest import manifest_inputs, read_manifest

    if path.suffix not in (".csv", ".jsonl", ".ndjson"):
        return None
    read = manifest_inputs(read_manifest(path), opts.modalities, path.parent, str(path), seed,
                           {m: specs[m] for m in opts.modalities})
    return {m: r[0] for m, r in read.items()}, {m: r[1] for m, r in read.items() if r[1] is not None}


@INPUT_READERS.register("tu")
def _tu(opts, path: Path, specs, seed):
    from highmodal.data.archives import TU_EXTRAS
    from highmodal.data.real.graphs import GraphOptions, build_tu_graphs

    if not path.is_dir():
        return None
    ds = opts.name or path.name
    extras = tuple(k for k in TU_EXTRAS if (path / f"{ds}_{k}.txt").is_file())
    for needed in ("A", "graph_indicator"):
        if not (path / f"{ds}_{needed}.txt").is_file():
            raise HighmodalError(f"{path}: missing {ds}_{needed}.txt (a TU folder as in training)")
    graph = GraphOptions(opts.max_nodes, opts.walk_steps, opts.wl_iterations, opts.val_frac, opts.test_frac)
    arrays = build_tu_graphs(path, ds, graph, extras, signed_log=opts.attributes == "signed_log")
    (name, spec), = specs.items()
    if arrays["x"].shape[-1] != spec.shape[-1]:
        raise HighmodalError(f"{path}: graphs give {arrays['x'].shape[-1]} node channels, the model was trained on "
                             f"{spec.shape[-1]} (the same node-label set and files as in training are needed)")
    x, mask = _fit_length(arrays["x"][:, : spec.max_len], arrays["mask"][:, : spec.max_len], spec, str(path))
    return {name: x}, {name: mask}


@INPUT_READERS.register("folder")
def _folder(opts, path: Path, specs, seed):
    """A folder of new files (any depth, class folders not needed), read in sorted path order."""
    import dataclasses

    import pandas as pd

    from highmodal.data.manifest import manifest_inputs

    if not path.is_dir():
        return None
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise HighmodalError(f"{path}: no files to predict on")
    field = dataclasses.replace(opts.field, key="file")
    x, mask, _, _ = manifest_inputs(pd.DataFrame({"file": files}), {opts.modality: field}, path, str(path), seed,
                                    {opts.modality: specs[opts.modality]})[opts.modality]
    return {opts.modality: x}, {} if mask is None else {opts.modality: mask}
