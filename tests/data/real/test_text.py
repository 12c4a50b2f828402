"""SST-2 / SST-5 / TREC on the real files: official split sizes, the offline PPMI word vectors (shared by
the two SST tasks, deterministic, fit on training text only), file errors, and a HighMMT forward pass."""

import numpy as np
import pytest
from conftest import assert_tiny_forward, corrupt_copy

import highmodal.data.real.text as text
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError

ENTRIES = [{"name": "sst2", "source": "sst2"}, {"name": "sst5", "source": "sst5"}, {"name": "trec", "source": "trec"}]


@pytest.fixture(scope="module")
def suite(data_root):
    return build_suite(ENTRIES, LoadContext(data_root=data_root))


def sizes(td):
    return {k: len(v) for k, v in td.splits.items()}


def test_official_splits_and_shapes(suite):
    assert sizes(suite["sst2"]) == {"train": 6920, "val": 872, "test": 1821}
    assert sizes(suite["sst5"]) == {"train": 8544, "val": 1101, "test": 2210}
    trec = suite["trec"]
    assert len(trec.splits["train"]) + len(trec.splits["val"]) == 5452 and len(trec.splits["test"]) == 500
    # TREC coarse-class counts of the official test questions (DESC, ENTY, ABBR, HUM, LOC, NUM).
    assert np.bincount(trec.splits["test"].y).tolist() == [138, 94, 9, 65, 81, 113]
    assert trec.task.class_names == ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")
    assert np.bincount(suite["sst5"].splits["train"].y).tolist() == [1092, 2218, 1624, 2322, 1288]
    for td in suite:
        (m,) = td.task.modalities
        s = td.specs[m]
        assert s.kind == "text" and s.shape == (None, 64) and s.max_len == 50
        data = td.splits["train"]
        assert data.inputs[m].shape[1:] == (50, 64) and data.masks[m].shape == (len(data), 50)
        lengths = data.masks[m].sum(1)
        assert lengths.min() >= 1 and lengths.max() == (50 if m == "sst_text" else 37)
        assert np.all(data.inputs[m][~data.masks[m]] == 0)  # padding carries no data
    assert suite["sst2"].task.modalities == suite["sst5"].task.modalities == ("sst_text",)


def test_sst_tasks_share_one_featurizer(suite, data_root):
    """The same sentence gives the same token vectors in SST-2 and SST-5 (SST-2's test set is SST-5's
    minus the neutral sentences)."""
    folder = data_root / "sst_trec_text"
    s2, _ = text.read_labelled(folder / "stsa.binary.test", "utf-8")
    s5, _ = text.read_labelled(folder / "stsa.fine.test", "utf-8")
    where5 = {" ".join(s): i for i, s in enumerate(s5)}
    pairs = [(i, where5[" ".join(s)]) for i, s in enumerate(s2) if " ".join(s) in where5]
    assert len(pairs) > 1800
    i2, i5 = np.array(pairs).T
    x2, x5 = suite["sst2"].splits["test"].inputs["sst_text"], suite["sst5"].splits["test"].inputs["sst_text"]
    np.testing.assert_array_equal(x2[i2], x5[i5])


def test_word_vectors_are_deterministic_and_learned_from_training_text(data_root):
    tokens, _ = text.read_labelled(data_root / "sst_trec_text" / "TREC.train.all", "latin-1")
    vocab, vec = text.fit_word_vectors(tokens, 64, 4, 2, 50)
    vocab2, vec2 = text.fit_word_vectors(tokens, 64, 4, 2, 50)
    assert vocab == vocab2 and np.array_equal(vec, vec2)
    assert vocab[0] == text.UNK and vec.shape == (len(vocab), 64) and np.all(np.isfinite(vec))
    # Distributional similarity: question words used alike are closer than unrelated words.
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    idx = {w: i for i, w in enumerate(vocab)}

    def cos(a, b):
        return float(unit[idx[a]] @ unit[idx[b]])

    assert cos("city", "country") > cos("city", "invented")
    # Unknown words share the learned <unk> vector; padding is masked out.
    x, mask = text.embed(text.token_ids([["what", "zzzunseen"]], vocab, 4), vec)
    np.testing.assert_array_equal(x[0, 1], vec[0])
    assert mask[0].tolist() == [True, True, False, False]


def test_trec_vectors_ignore_validation_questions(data_root, tmp_path, monkeypatch):
    """The TREC featurizer is fit on the carved training part only, and the run seed moves the carve."""
    seen = []
    real_fit = text.fit_word_vectors
    monkeypatch.setattr(text, "fit_word_vectors", lambda s, *a: seen.append(len(s)) or real_fit(s, *a))
    monkeypatch.setenv("HIGHMODAL_CACHE", str(tmp_path))
    td = build_suite([{"name": "t", "source": "trec"}], LoadContext(data_root=data_root, seed=3))["t"]
    assert seen == [len(td.splits["train"])] and len(td.splits["train"]) < 5452


def test_corrupted_and_missing_files(data_root, tmp_path):
    # The SST-5 training file also feeds the shared featurizer, so SST-2 depends on it too.
    bad = corrupt_copy(data_root, "sst_trec_text", "stsa.fine.train", tmp_path)
    with pytest.raises(HighmodalError, match=r"stsa.fine.train: file is corrupted"):
        build_suite([{"name": "s", "source": "sst2"}], LoadContext(data_root=bad))
    (bad / "sst_trec_text" / "TREC.test.all").unlink()
    with pytest.raises(HighmodalError, match=r"TREC.test.all: required file .* is missing"):
        build_suite([{"name": "t", "source": "trec"}], LoadContext(data_root=bad))


def test_unparsable_line_names_file_and_line(data_root, tmp_path):
    bad = corrupt_copy(data_root, "sst_trec_text", "TREC.train.all", tmp_path)
    (bad / "CHECKSUMS.sha256").unlink()  # no manifest: the parser is the last line of defence
    (bad / "sst_trec_text" / "TREC.train.all").write_text("0 How are you ?\nDESC what is this ?\n")
    with pytest.raises(HighmodalError, match=r"TREC.train.all:2: expected '<integer label> <sentence>'"):
        build_suite([{"name": "t", "source": "trec"}], LoadContext(data_root=bad))


def test_tiny_highmmt_forward(suite):
    assert_tiny_forward(suite)
