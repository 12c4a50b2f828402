"""Graph classification on TU-format datasets: MUTAG (molecules) and PROTEINS (secondary-structure graphs).

A graph becomes a sequence of node tokens whose channels fold in the structure: one-hot label,
degree, random-walk return probabilities (RWSE) and what the folder holds per node; zero-padded with
a mask; a stratified 80/10/10 split with the run seed. Design: docs/data.md#graphs-mutag-proteins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import (
    LoadContext,
    TaskEntry,
    encode_labels,
    fit_normalization,
    make_task,
    pad_sequences,
    register_loader,
    spec,
)
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import three_way
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

DATASET = "tu_graphs"
BASE_FILES = ["A", "graph_indicator", "graph_labels", "node_labels"]


@dataclass
class GraphOptions:
    """``max_nodes``: node tokens kept per graph. PROTEINS has a long tail (median 26 nodes, 7 of
    1,113 graphs above 256, the largest 620); 256 keeps every token sequence short for the
    Perceiver on CPU at the cost of truncating those 7. A longer graph keeps its first ``max_nodes``
    nodes in file order, with degree and RWSE still computed on the whole graph, so each kept token
    describes its node's place in the full structure. MUTAG (at most 28 nodes) is never truncated.
    ``walk_steps``: random-walk lengths in the RWSE (8, as in Dwivedi et al.'s molecular experiments).
    ``wl_iterations``: rounds of the Weisfeiler-Lehman features kept for the graph-kernel baseline
    (``SplitData.meta["wl"]``, over the full graphs; no model reads them).
    ``val_frac``/``test_frac``: fractions of all graphs."""

    max_nodes: int = 256
    walk_steps: int = 8
    wl_iterations: int = 3
    val_frac: float = 0.1
    test_frac: float = 0.1


def random_walk_se(adj: np.ndarray, steps: int) -> np.ndarray:
    """``(n, n)`` 0/1 adjacency → ``(n, steps)`` return probabilities ``diag(P^k)``, ``P = D⁻¹A``,
    k = 1..steps. An isolated node cannot walk anywhere: its row is zero."""
    deg = adj.sum(axis=1)
    p = np.divide(adj, deg[:, None], out=np.zeros(adj.shape), where=deg[:, None] > 0)
    out = np.empty((len(adj), steps))
    walk = np.eye(len(adj))
    for k in range(steps):
        walk = walk @ p
        out[:, k] = np.diag(walk)
    return out


def structure_features(adj: np.ndarray, steps: int) -> np.ndarray:
    """Degree ⊕ RWSE: ``(n, 1 + steps)``."""
    return np.concatenate([adj.sum(axis=1, keepdims=True), random_walk_se(adj, steps)], axis=1)


WL_DIM = 4096  # hashed Weisfeiler-Lehman label counts per graph


def wl_histogram(adj: np.ndarray, labels: np.ndarray, iterations: int, dim: int = WL_DIM) -> np.ndarray:
    """Weisfeiler-Lehman subtree features (Shervashidze et al. 2011): counts of every node label after
    0..``iterations`` rounds of relabelling by (own label, sorted neighbour labels), hashed into
    ``dim`` bins (stable across runs: labels are strings hashed with blake2b, not Python's hash)."""
    import hashlib

    out = np.zeros(dim, np.float32)
    current = [str(v) for v in labels]
    neighbours = [np.flatnonzero(row) for row in adj]
    for it in range(iterations + 1):
        for label in current:
            digest = hashlib.blake2b(f"{it}:{label}".encode(), digest_size=8).digest()
            out[int.from_bytes(digest, "little") % dim] += 1
        current = [f"{current[i]}({','.join(sorted(current[j] for j in neighbours[i]))})" for i in range(len(adj))]
        current = [hashlib.blake2b(c.encode(), digest_size=8).hexdigest() for c in current]
    return out


def _read(path: Path, dtype: type, cols: int) -> np.ndarray:
    try:
        out = np.loadtxt(path, delimiter=",", dtype=dtype, ndmin=2)
    except (OSError, ValueError) as e:
        raise HighmodalError(f"{path}: cannot parse as comma-separated {dtype.__name__} values ({e})") from None
    if out.shape[1] != cols or len(out) == 0:
        raise HighmodalError(f"{path}: expected {cols} value(s) per line, got shape {out.shape}")
    return out[:, 0] if cols == 1 else out


def build_tu_graphs(folder: Path, ds: str, opts: GraphOptions, extras: tuple[str, ...] = (),
                    signed_log: bool = False) -> dict[str, np.ndarray]:
    """A TU folder's graphs → ``(n_i, C)`` node channels, padded to the longest kept length: one-hot
    node labels (when ``node_labels`` is among ``extras``) ⊕ degree ⊕ RWSE ⊕ per-node counts of
    incident edges by label (``edge_labels``) ⊕ node attributes (``node_attributes``, any number of
    columns, through sign(x)·log(1+|x|) when ``signed_log``). Also the graphs' WL features (node
    labels, or degrees when the folder has none) and node counts. Without ``NAME_graph_labels.txt``
    (new graphs to predict) every graph gets label 0."""
    f = {k: folder / f"{ds}_{k}.txt" for k in ["A", "graph_indicator", "graph_labels", *extras]}
    edges = _read(f["A"], np.int64, 2) - 1
    graph_of = _read(f["graph_indicator"], np.int64, 1)
    # New graphs to predict may come without labels: then one placeholder label per graph id.
    graph_y = _read(f["graph_labels"], np.int64, 1) if f["graph_labels"].is_file() else \
        np.zeros(int(graph_of.max()), np.int64)
    n_nodes = len(graph_of)
    if np.any(np.diff(graph_of) < 0) or graph_of[0] != 1 or graph_of[-1] != len(graph_y):
        raise HighmodalError(f"{f['graph_indicator']}: graph ids must run in order from 1 to {len(graph_y)} "
                             f"(the number of lines of {f['graph_labels'].name})")
    if edges.min() < 0 or edges.max() >= n_nodes or np.any(graph_of[edges[:, 0]] != graph_of[edges[:, 1]]):
        raise HighmodalError(f"{f['A']}: an edge refers to a node outside 1..{n_nodes} or joins two graphs")
    channels = []
    node_label = None
    if "node_labels" in extras:
        node_label = _read(f["node_labels"], np.int64, 1)
        if len(node_label) != n_nodes:
            raise HighmodalError(f"{f['node_labels']}: {len(node_label)} lines for {n_nodes} nodes")
        channels.append((node_label[:, None] == np.unique(node_label)[None, :]).astype(np.float64))
    per_node = []
    if "edge_labels" in extras:
        edge_label = _read(f["edge_labels"], np.int64, 1)
        if len(edge_label) != len(edges):
            raise HighmodalError(f"{f['edge_labels']}: {len(edge_label)} lines for {len(edges)} edges")
        # Incident edges of each label per node (each undirected edge is listed in both directions).
        counts = np.zeros((n_nodes, edge_label.max() - min(edge_label.min(), 0) + 1))
        np.add.at(counts, (edges[:, 0], edge_label - min(edge_label.min(), 0)), 1.0)
        per_node.append(counts)
    if "node_attributes" in extras:
        attr = _read_rows(f["node_attributes"])
        if len(attr) != n_nodes:
            raise HighmodalError(f"{f['node_attributes']}: {len(attr)} lines for {n_nodes} nodes")
        per_node.append(np.sign(attr) * np.log1p(np.abs(attr)) if signed_log else attr)
    arrays = graph_tokens(edges, graph_of - 1, len(graph_y), channels, per_node, node_label, opts,
                          str(f["graph_indicator"]))
    return {**arrays, "y": graph_y}


def graph_tokens(edges: np.ndarray, graph_of: np.ndarray, n_graphs: int, leading: list[np.ndarray],
                 trailing: list[np.ndarray], node_label: np.ndarray | None, opts: GraphOptions,
                 where: str) -> dict[str, np.ndarray]:
    """Graphs as one edge list over all nodes → padded node tokens. ``edges``: ``(E, 2)`` 0-based
    node ids (either direction; the graph is made undirected); ``graph_of``: each node's 0-based graph
    id, non-decreasing. A node's channels: ``leading`` ⊕ degree ⊕ RWSE ⊕ ``trailing`` (each a list of
    ``(n_nodes, c)`` arrays). WL features use ``node_label`` or, without one, the degrees."""
    starts = np.searchsorted(graph_of, np.arange(n_graphs + 1))
    edge_graph = graph_of[edges[:, 0]]
    edge_starts = np.searchsorted(np.sort(edge_graph), np.arange(n_graphs + 1))
    edges = edges[np.argsort(edge_graph, kind="stable")]
    seqs, wl = [], []
    for g in range(n_graphs):
        lo, hi = starts[g], starts[g + 1]
        if hi == lo:
            raise HighmodalError(f"{where}: graph {g + 1} has no nodes")
        local = edges[edge_starts[g]: edge_starts[g + 1]] - lo
        adj = np.zeros((hi - lo, hi - lo))
        adj[local[:, 0], local[:, 1]] = 1.0
        adj = np.maximum(adj, adj.T)
        nodes = np.concatenate([c[lo:hi] for c in leading] + [structure_features(adj, opts.walk_steps)]
                               + [c[lo:hi] for c in trailing], axis=1)
        seqs.append(nodes[: opts.max_nodes])
        labels = node_label[lo:hi] if node_label is not None else adj.sum(1).astype(np.int64)
        wl.append(wl_histogram(adj, labels, opts.wl_iterations))
    x, mask = pad_sequences(seqs, max(len(s) for s in seqs))
    return {"x": x, "mask": mask, "nodes": np.diff(starts), "wl": np.stack(wl)}


def _read_rows(path: Path) -> np.ndarray:
    """Comma-separated float rows, any number of columns: ``(lines, columns)``."""
    try:
        out = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise HighmodalError(f"{path}: cannot parse as comma-separated float values ({e})") from None
    if len(out) == 0:
        raise HighmodalError(f"{path}: empty file")
    return out


def graph_task(arrays: dict[str, np.ndarray], name: str, labels_file: Path, opts: GraphOptions, entry: TaskEntry,
               ctx: LoadContext, what: str, source: str) -> TaskData:
    """Built graphs → a classification TaskData with a stratified, seeded train/val/test split."""
    y, classes = encode_labels(arrays["y"], str(labels_file))
    if len(classes) < 2:
        raise HighmodalError(f"{labels_file}: classification needs at least 2 distinct graph labels, found {classes}")
    splits = three_way(SplitData({name: arrays["x"]}, y, {name: arrays["mask"]}, {"wl": arrays["wl"]}), None,
                       opts.val_frac / (1 - opts.test_frac), opts.test_frac, ctx.seed, stratify=True)
    truncated = int((arrays["nodes"] > opts.max_nodes).sum())
    if truncated:
        what += f"; {truncated} graph(s) truncated to {opts.max_nodes} nodes"
    td = TaskData(make_task(entry, [name], "classification", len(classes), classes, what),
                  {name: spec(name, "graph", (None, arrays["x"].shape[-1]), max_len=arrays["x"].shape[1])},
                  splits, source)
    return fit_normalization(td, {name: "channel"})


def _load(ds: str, extra: str, opts: GraphOptions, entry: TaskEntry, ctx: LoadContext, what: str) -> TaskData:
    folder = require_root(ctx, DATASET) / ds
    files = [f"{ds}/{ds}_{k}.txt" for k in [*BASE_FILES, extra]]
    sums = verified_files(ctx, DATASET, files)
    params = {"max_nodes": opts.max_nodes, "walk_steps": opts.walk_steps, "wl_iterations": opts.wl_iterations,
              "wl_dim": WL_DIM}
    arrays = cached_arrays(ds.lower(), sums, params, lambda: build_tu_graphs(
        folder, ds, opts, ("node_labels", extra), signed_log=extra == "node_attributes"))
    return graph_task(arrays, f"{ds.lower()}_graph", folder / f"{ds}_graph_labels.txt", opts, entry, ctx, what,
                      str(folder))


@register_loader("mutag", GraphOptions, ("graph",), "MUTAG mutagenicity of 188 nitro compounds (125/63)",
                 shared_available(DATASET, [f"MUTAG/MUTAG_{k}.txt" for k in [*BASE_FILES, "edge_labels"]]))
def mutag(opts: GraphOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Node channels: 7 atom types ⊕ degree ⊕ RWSE(8) ⊕ 4 bond-type counts = 20."""
    return _load("MUTAG", "edge_labels", opts, entry, ctx, "mutagenic effect of a molecule from its atom/bond graph")


@register_loader("proteins", GraphOptions, ("graph",), "PROTEINS enzyme vs non-enzyme, 1,113 graphs (663/450)",
                 shared_available(DATASET, [f"PROTEINS/PROTEINS_{k}.txt" for k in [*BASE_FILES, "node_attributes"]]))
def proteins(opts: GraphOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Node channels: 3 secondary-structure types ⊕ degree ⊕ RWSE(8) ⊕ the node attribute = 13."""
    return _load("PROTEINS", "node_attributes", opts, entry, ctx,
                 "enzyme or not from a graph of secondary-structure elements")
