"""MUTAG / PROTEINS on the real TU files: counts, the structure carried by node channels (degree and
random-walk encodings), the PROTEINS node cap, file errors, and a HighMMT forward pass."""

import numpy as np
import pytest
from conftest import assert_tiny_forward, corrupt_copy

from highmodal.data import LoadContext, build_suite
from highmodal.data.real.graphs import random_walk_se, structure_features
from highmodal.errors import HighmodalError

# MUTAG channel layout: 7 atom one-hot | degree | RWSE k=1..8 | aromatic/single/double/triple bond counts.
ATOMS, DEG, RWSE, BONDS = slice(0, 7), 7, slice(8, 16), slice(16, 20)


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite([{"name": "mutag", "source": "mutag"}, {"name": "proteins", "source": "proteins"}],
                       LoadContext(data_root=data_root))


def all_splits(td, modality):
    s = td.splits
    return (np.concatenate([s[k].inputs[modality] for k in s]), np.concatenate([s[k].masks[modality] for k in s]),
            np.concatenate([s[k].y for k in s]))


def test_counts_shapes_and_stratified_split(suite):
    mutag, proteins = suite["mutag"], suite["proteins"]
    assert {k: len(v) for k, v in mutag.splits.items()} == {"train": 150, "val": 19, "test": 19}
    assert {k: len(v) for k, v in proteins.splits.items()} == {"train": 889, "val": 112, "test": 112}
    assert mutag.task.class_names == ("-1", "1") and proteins.task.class_names == ("1", "2")
    assert np.bincount(all_splits(mutag, "mutag_graph")[2]).tolist() == [63, 125]
    assert np.bincount(all_splits(proteins, "proteins_graph")[2]).tolist() == [663, 450]
    assert mutag.specs["mutag_graph"].shape == (None, 20) and mutag.specs["mutag_graph"].max_len == 28
    assert proteins.specs["proteins_graph"].shape == (None, 13) and proteins.specs["proteins_graph"].max_len == 256
    for s in mutag.splits.values():  # stratified: about one third negatives in every split
        assert 0.25 < np.mean(s.y == 0) < 0.42
    x, mask, _ = all_splits(mutag, "mutag_graph")
    assert mask.sum() == 3371  # every node of MUTAG_graph_indicator.txt
    assert np.all(x[mask][:, ATOMS].sum(1) == 1) and np.all(x[~mask] == 0)


def test_random_walk_encoding_known_values():
    # Triangle: return probability after k steps is (1 + 2·(-1/2)^k) / 3.
    tri = np.ones((3, 3)) - np.eye(3)
    expected = [(1 + 2 * (-0.5) ** k) / 3 for k in range(1, 9)]
    np.testing.assert_allclose(random_walk_se(tri, 8), np.tile(expected, (3, 1)))
    # Path a-b-c: an end returns in two steps with prob 1/2, the centre surely; odd steps never return.
    path = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], float)
    rw = random_walk_se(path, 4)
    np.testing.assert_allclose(rw[:, [0, 2]], 0)
    np.testing.assert_allclose(rw[:, 1], [0.5, 1, 0.5])
    # An isolated node walks nowhere.
    np.testing.assert_array_equal(structure_features(np.zeros((2, 2)), 3), 0)


def test_node_channels_carry_structure(suite):
    x, mask, _ = all_splits(suite["mutag"], "mutag_graph")
    nodes = x[mask]
    carbon = nodes[nodes[:, 0] == 1]
    # Same label, different degree → different channels.
    assert len(np.unique(carbon[:, DEG])) >= 3
    # Same label and degree, different neighbourhood → different RWSE (ring vs chain carbons).
    deg2 = carbon[carbon[:, DEG] == 2]
    assert len(np.unique(deg2[:, RWSE].round(6), axis=0)) > 1
    # Consistency of two source files: degree (from MUTAG_A.txt) = incident bond count (edge labels).
    np.testing.assert_array_equal(nodes[:, DEG], nodes[:, BONDS].sum(1))
    # Return probabilities: none after one step (no self-loops), some after two (there and back).
    np.testing.assert_allclose(nodes[:, RWSE][:, 0], 0)
    assert np.all((nodes[:, RWSE][:, 1] > 0) & (nodes[:, RWSE][:, 1] <= 1))
    # Odd closed walks exist only in graphs with an odd cycle: molecules with a 5-membered ring have
    # them at k = 5, molecules of 6-rings and chains only (bipartite) do not.
    odd = [(g[m][:, RWSE][:, 4] > 1e-9).any() for g, m in zip(x, mask, strict=True)]
    assert 0.1 < np.mean(odd) < 0.9


def test_proteins_cap(suite):
    td = suite["proteins"]
    _, mask, _ = all_splits(td, "proteins_graph")
    assert mask.sum(1).max() == 256 and (mask.sum(1) == 256).sum() == 7
    assert "7 graph(s) truncated to 256 nodes" in td.task.description


def test_corrupted_missing_and_unparsable_files(data_root, tmp_path):
    bad = corrupt_copy(data_root, "tu_graphs", "PROTEINS/PROTEINS_A.txt", tmp_path / "a")
    with pytest.raises(HighmodalError, match=r"PROTEINS_A.txt: file is corrupted"):
        build_suite([{"name": "p", "source": "proteins"}], LoadContext(data_root=bad))
    bad = corrupt_copy(data_root, "tu_graphs", "MUTAG/MUTAG_edge_labels.txt", tmp_path / "b")
    (bad / "tu_graphs" / "MUTAG" / "MUTAG_edge_labels.txt").unlink()
    with pytest.raises(HighmodalError, match=r"MUTAG_edge_labels.txt: required file .* is missing"):
        build_suite([{"name": "m", "source": "mutag"}], LoadContext(data_root=bad))
    bad = corrupt_copy(data_root, "tu_graphs", "MUTAG/MUTAG_edge_labels.txt", tmp_path / "c")
    (bad / "CHECKSUMS.sha256").unlink()  # no manifest: the parser is the last line of defence
    (bad / "tu_graphs" / "MUTAG" / "MUTAG_edge_labels.txt").write_text("0\n1\nsingle\n")
    with pytest.raises(HighmodalError, match=r"MUTAG_edge_labels.txt: cannot parse"):
        build_suite([{"name": "m", "source": "mutag"}], LoadContext(data_root=bad))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite)
