"""SST-2 / SST-5 / TREC on the real files: official split sizes, the offline PPMI word vectors (shared by
the two SST tasks, deterministic, fit on training text only), file errors, and a HighMMT forward pass;
and the ``tokens: subword`` view (WordPiece ids for OmniVec2, vocabulary trained on training text only)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_tiny_forward, corrupt_copy

import highmodal.data.real.text as text
from highmodal.data import LoadContext, build_suite
from highmodal.errors import HighmodalError

DIM = 64  # narrower than the default: the width is an option, and 64-d arrays keep these tests fast
ENTRIES = [{"name": n, "source": n, "dim": DIM} for n in ("sst2", "sst5", "trec")]


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
        assert s.kind == "text" and s.shape == (None, DIM) and s.max_len == 50
        data = td.splits["train"]
        assert data.inputs[m].shape[1:] == (50, DIM) and data.masks[m].shape == (len(data), 50)
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
    td = build_suite([{"name": "t", "source": "trec", "dim": DIM}], LoadContext(data_root=data_root, seed=3))["t"]
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


# --- tokens: subword (OmniVec2's text tokenizer: WordPiece ids, vocabulary trained on the training split) ---

SUBWORD_ENTRIES = [{"name": n, "source": n, "tokens": "subword"} for n in ("sst2", "sst5", "trec")]


@pytest.fixture(scope="module")
def subword_suite(data_root):
    return build_suite(SUBWORD_ENTRIES, LoadContext(data_root=data_root))


def _ids(td):
    (m,) = td.task.modalities
    return {split: data.inputs[m][..., 0] for split, data in td.splits.items()}


def _decode(tokenizer, ids):
    return [tokenizer.decode(row[row != 0].astype(int).tolist()) for row in ids]


def _pieces_of(words):
    """What WordPiece training on ``words`` can make: word prefixes, single characters, and ``##``
    + any non-initial substring."""
    prefixes = {w[:j] for w in words for j in range(1, len(w) + 1)}
    chars = {c for w in words for c in w}
    inner = {"##" + w[i:j] for w in words for i in range(1, len(w)) for j in range(i + 1, len(w) + 1)}
    return prefixes | chars | inner | set(text.SUBWORD_SPECIALS)


def test_subword_view_specs_ids_and_masks(subword_suite, suite):
    for td in subword_suite:
        (m,) = td.task.modalities
        assert m == ("trec_subwords" if td.task.name == "trec" else "sst_subwords")
        s = td.specs[m]
        assert s.kind == "text" and s.shape == (None, 1) and s.max_len == 64 and s.vocab_size == 4000
        assert s.mean is None and s.std is None  # ids are never normalised
        assert "WordPiece" in td.task.description and "4,000" in td.task.description
        assert "training" in td.task.description
        assert sizes(td) == sizes(suite[td.task.name])  # same examples as the vectors view
        for split, data in td.splits.items():
            x, mask = data.inputs[m], data.masks[m]
            assert x.dtype == np.float32 and x.shape == (len(data), 64, 1) and mask.shape == (len(data), 64)
            ids = x[..., 0]
            assert np.all(ids == np.round(ids)) and ids.min() >= 0 and ids.max() < s.vocab_size
            np.testing.assert_array_equal(mask, ids != 0)  # mask True exactly where there is an id
            lengths = mask.sum(1)
            assert lengths.min() >= 1 and np.array_equal(mask, np.arange(64) < lengths[:, None])  # padded at the end
            s.validate(x, split)
    # Subword sequences are longer than word sequences: SST reaches the 64 limit, TREC does not.
    assert subword_suite["sst2"].splits["train"].masks["sst_subwords"].sum(1).max() == 64
    assert subword_suite["trec"].splits["train"].masks["trec_subwords"].sum(1).max() < 64


def test_subword_ids_decode_to_the_sentences_and_truncation_counts(subword_suite, data_root):
    """The ids spell the loader's words back, and the truncation counts in the module docstring hold."""
    folder = data_root / "sst_trec_text"
    tok = text.subword_tokenizer("sst2", LoadContext(data_root=data_root))
    assert tok.get_vocab_size() == 4000 and [tok.id_to_token(i) for i in (0, 1)] == ["[PAD]", "[UNK]"]
    for name, task, want in (("stsa.binary.train", "sst2", 22), ("stsa.fine.train", "sst5", 27)):
        sentences, _ = text.read_labelled(folder / name, "utf-8")
        full = [len(e.ids) for e in tok.encode_batch(sentences, is_pretokenized=True)]
        assert sum(n > 64 for n in full) == want
        ids = _ids(subword_suite[task])["train"]
        kept = [i for i, n in enumerate(full) if n <= 64]
        assert _decode(tok, ids[kept]) == [" ".join(sentences[i]) for i in kept]
        assert not np.any(ids == 1)  # every training character is in the vocabulary: no [UNK]
    assert len(text.sst_training_sentences(folder)) == 8534
    assert sum(len(e.ids) > 64 for e in tok.encode_batch(text.sst_training_sentences(folder),
                                                         is_pretokenized=True)) == 27


def test_subword_sst_tasks_share_one_vocabulary(subword_suite, data_root):
    folder = data_root / "sst_trec_text"
    for split, files in (("train", ("stsa.binary.train", "stsa.fine.train")),
                         ("test", ("stsa.binary.test", "stsa.fine.test"))):
        s2, _ = text.read_labelled(folder / files[0], "utf-8")
        s5, _ = text.read_labelled(folder / files[1], "utf-8")
        where5 = {" ".join(s): i for i, s in enumerate(s5)}
        pairs = [(i, where5[" ".join(s)]) for i, s in enumerate(s2) if " ".join(s) in where5]
        assert len(pairs) > 1800
        i2, i5 = np.array(pairs).T
        np.testing.assert_array_equal(_ids(subword_suite["sst2"])[split][i2], _ids(subword_suite["sst5"])[split][i5])


def test_subword_loads_are_deterministic(subword_suite, data_root, tmp_path, monkeypatch):
    """A rebuild from scratch (empty cache) gives the same arrays, and a separate process trains the
    byte-identical tokenizer (the library's trainer alone is not deterministic across processes)."""
    monkeypatch.setenv("HIGHMODAL_CACHE", str(tmp_path))
    again = build_suite(SUBWORD_ENTRIES, LoadContext(data_root=data_root))
    for td in subword_suite:
        (m,) = td.task.modalities
        for split, data in td.splits.items():
            np.testing.assert_array_equal(data.inputs[m], again[td.task.name].splits[split].inputs[m])
            np.testing.assert_array_equal(data.masks[m], again[td.task.name].splits[split].masks[m])
    folder = data_root / "sst_trec_text"
    code = ("import sys; from pathlib import Path; import highmodal.data.real.text as t; f = Path(sys.argv[1]); "
            "print(t.fit_subword_tokenizer(t.sst_training_sentences(f), 4000).to_str()); "
            "print(t.fit_subword_tokenizer(t.read_labelled(f / 'TREC.train.all', 'latin-1')[0], 4000).to_str())")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    trec_tok = text.fit_subword_tokenizer(text.read_labelled(folder / "TREC.train.all", "latin-1")[0], 4000)
    here = [text.subword_tokenizer("sst5", LoadContext(data_root=data_root)).to_str(), trec_tok.to_str()]
    assert out.stdout.splitlines() == here


def test_subword_vocabulary_learned_from_training_sentences_only(subword_suite, data_root, tmp_path, monkeypatch):
    folder = data_root / "sst_trec_text"
    ctx = LoadContext(data_root=data_root)
    dev_test = [s for name in ("stsa.binary.dev", "stsa.binary.test", "stsa.fine.dev", "stsa.fine.test")
                for s in text.read_labelled(folder / name, "utf-8")[0]]
    # SST: the vocabulary is the one trained by hand on the two training files (in another order).
    by_hand = sorted({" ".join(s) for name in text.SST_FEATURIZER_FILES
                      for s in text.read_labelled(folder / name, "utf-8")[0]})
    train = [s.split() for s in by_hand]
    sst_tok = text.subword_tokenizer("sst2", ctx)
    assert sst_tok.to_str() == text.fit_subword_tokenizer(train, 4000).to_str()
    # Every piece can be made from training words; with dev/test sentences added, some cannot.
    possible = _pieces_of({w for s in train for w in s})
    assert set(sst_tok.get_vocab()) <= possible
    leaky = text.fit_subword_tokenizer(train + dev_test, 4000)
    assert set(leaky.get_vocab()) - possible  # e.g. whole words seen only in dev/test

    # TREC: trained on exactly the training part; validation questions are left out.
    seen = []
    real_fit = text.fit_subword_tokenizer
    monkeypatch.setattr(text, "fit_subword_tokenizer", lambda s, n: seen.append(s) or real_fit(s, n))
    monkeypatch.setenv("HIGHMODAL_CACHE", str(tmp_path))
    td = build_suite([{"name": "t", "source": "trec", "tokens": "subword"}], ctx)["t"]
    (questions,) = seen
    tok = text.subword_tokenizer("trec", ctx)
    train = [q.split() for q in _decode(tok, _ids(td)["train"])]  # the training part, spelled back
    assert len(questions) == len(train) < 5452 and questions == train
    assert tok.to_str() == real_fit(train, 4000).to_str()
    assert set(tok.get_vocab()) <= _pieces_of({w for q in train for w in q})
    # The equality has teeth: validation or test questions in the training text change the vocabulary.
    val = [q.split() for q in _decode(tok, _ids(td)["val"])]
    test_questions, _ = text.read_labelled(folder / "TREC.test.all", "latin-1")
    for extra in (val, test_questions):
        assert real_fit(train + extra, 4000).get_vocab() != tok.get_vocab()


def test_subword_cache_key_holds_every_subword_option(subword_suite, data_root):
    entries = [{"name": "s", "source": "sst2", "tokens": "subword", "subword_max_len": 32},
               {"name": "v", "source": "sst5", "tokens": "subword", "vocab_size": 2000}]
    short, small = build_suite(entries, LoadContext(data_root=data_root))
    x = short.splits["test"].inputs["sst_subwords"]
    assert x.shape[1:] == (32, 1) and short.specs["sst_subwords"].max_len == 32
    np.testing.assert_array_equal(x, subword_suite["sst2"].splits["test"].inputs["sst_subwords"][:, :32])
    assert small.specs["sst_subwords"].vocab_size == 2000
    assert small.splits["train"].inputs["sst_subwords"].max() < 2000
    assert not np.array_equal(small.splits["train"].inputs["sst_subwords"],
                              subword_suite["sst5"].splits["train"].inputs["sst_subwords"])


def test_views_have_their_own_modalities(data_root):
    suite = build_suite([{"name": "w", "source": "trec"}, {"name": "s", "source": "trec", "tokens": "subword"}],
                        LoadContext(data_root=data_root))
    assert suite["w"].task.modalities == ("trec_text",) and suite["s"].task.modalities == ("trec_subwords",)
    assert suite["w"].specs["trec_text"].shape == (None, text.TextOptions.dim)  # the default width


@pytest.mark.parametrize("source", ["sst2", "trec"])
def test_bad_subword_options_are_named(data_root, source):
    ctx = LoadContext(data_root=data_root)
    with pytest.raises(HighmodalError, match=r"tokens must be one of 'vectors', 'subword', got 'bpe'"):
        build_suite([{"name": "t", "source": source, "tokens": "bpe"}], ctx)
    with pytest.raises(HighmodalError, match=r"vocab_size must be between"):
        build_suite([{"name": "t", "source": source, "tokens": "subword", "vocab_size": 1}], ctx)
    with pytest.raises(HighmodalError, match=r"subword_max_len must be >= 1"):
        build_suite([{"name": "t", "source": source, "tokens": "subword", "subword_max_len": 0}], ctx)


def test_standardizer_refuses_the_subword_ids(subword_suite):
    """HighMMT's standardizer reads real-valued features; it refuses an id modality by name."""
    import torch

    from highmodal.modalities.standardize import Standardizer

    td = subword_suite["trec"]
    spec = td.specs["trec_subwords"]
    data = td.splits["train"]
    x, mask = torch.from_numpy(data.inputs["trec_subwords"][:2]), torch.from_numpy(data.masks["trec_subwords"][:2])
    with pytest.raises(HighmodalError, match=r"'trec_subwords' holds token ids"):
        Standardizer([spec])("trec_subwords", x, mask)


def test_labelled_lines_accept_any_whitespace_and_blank_lines(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1 a good film\n\n0\tdull ,  slow\r\n \n")
    tokens, labels = text.read_labelled(path, "utf-8")
    assert tokens == [["a", "good", "film"], ["dull", ",", "slow"]] and labels.tolist() == [1, 0]
    path.write_text("1 fine\nx bad label\n")
    with pytest.raises(HighmodalError, match=r"s.txt:2: expected '<integer label> <sentence>'"):
        text.read_labelled(path, "utf-8")
