"""Sentence classification on the harvardnlp Kim-CNN files: SST-2, SST-5 (sentiment) and TREC (question type).

HighMMT feeds text as a sequence of fixed per-token feature vectors (GloVe in the paper). Pretrained
vectors may not be downloaded here, so word vectors are learned offline from each task's own
*training* sentences, LSA-style: a lower-cased vocabulary (words seen at least twice, everything
else → ``<unk>``), positive PMI of word–context co-occurrence within ±4 words, factorised by a
truncated SVD to 64 dimensions. Levy, Goldberg & Dagan (TACL 2015) show that PPMI + SVD with
context-distribution smoothing (α = 0.75) and square-root eigenvalue weighting matches word2vec /
GloVe on similarity tasks at corpus sizes like these (about 10k sentences), where training a neural
embedding from scratch is noisy; and it is a deterministic, closed-form fit (no epochs, no seed
sensitivity beyond the SVD solver's fixed start vector).

Rare training words are counted as ``<unk>`` when fitting, so ``<unk>`` gets a learned vector (the
average context of a rare word) that out-of-vocabulary words at val/test time then share.
The vectors are standardised per dimension over all training token occurrences at fit time, so the
modality needs no further normalisation and a token's features depend only on the featurizer.

SST-2 and SST-5 share one modality, ``sst_text`` (as HighMMT shares the text modality between MOSEI
and UR-FUNNY), so both fit a single featurizer on the union of their training sentences: the same
sentence gives identical inputs in either task. (SST-2's training sentences are those of SST-5 minus
the neutral ones, so the union adds no dev/test sentence.) The files are already tokenized
(PTB-style, one sentence per line after an integer label); tokens are split on whitespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import carve
from highmodal.data.task import SplitData, TaskData
from highmodal.errors import HighmodalError

DATASET = "sst_trec_text"
SST_FEATURIZER_FILES = ["stsa.binary.train", "stsa.fine.train"]
SST2_FILES = ["stsa.binary.train", "stsa.binary.dev", "stsa.binary.test"]
SST5_FILES = ["stsa.fine.train", "stsa.fine.dev", "stsa.fine.test"]
TREC_FILES = ["TREC.train.all", "TREC.test.all"]
SST2_CLASSES = ["negative", "positive"]
SST5_CLASSES = ["very negative", "negative", "neutral", "positive", "very positive"]
# harvardnlp's integer codes for the six TREC coarse classes (Li & Roth 2002); checked against the
# per-class counts of the official 5,452 training questions (ABBR 86, DESC 1,162, ENTY 1,250,
# HUM 1,223, LOC 835, NUM 896) and 500 test questions, and by reading examples of each code.
TREC_CLASSES = ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
UNK = "<unk>"


@dataclass
class TextOptions:
    """``max_len``: tokens kept per sentence (50 covers all TREC questions and all but 8 of the
    ~11.8k SST sentences, the longest having 56). ``dim``/``window``/``min_count``: the word-vector
    fit (64 dims keep the per-token width modest for the Perceiver; ±4 words is a mid-size
    window that captures both syntax and topic; words seen once are too noisy to get a vector).
    ``val_frac``: share of TREC's training questions held out for validation (SST has a dev set)."""

    max_len: int = 50
    dim: int = 64
    window: int = 4
    min_count: int = 2
    val_frac: float = 0.1


def read_labelled(path: Path, encoding: str) -> tuple[list[list[str]], np.ndarray]:
    """``<int label> <sentence>`` per line → lower-cased token lists and labels."""
    try:
        lines = path.read_bytes().decode(encoding).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HighmodalError(f"{path}: cannot read as {encoding} text ({e})") from None
    tokens, labels = [], []
    for i, line in enumerate(lines, 1):
        label, _, sentence = line.partition(" ")
        words = sentence.lower().split()
        if not label.isdigit() or not words:
            raise HighmodalError(f"{path}:{i}: expected '<integer label> <sentence>', got {line[:60]!r}")
        tokens.append(words)
        labels.append(int(label))
    if not tokens:
        raise HighmodalError(f"{path}: file holds no sentences")
    return tokens, np.array(labels, dtype=np.int64)


def fit_word_vectors(
    sentences: list[list[str]], dim: int, window: int, min_count: int, max_len: int
) -> tuple[list[str], np.ndarray]:
    """Vocabulary (``<unk>`` first, then by descending count, ties alphabetical) and its ``(V, dim)``
    float32 vectors: PPMI(α = 0.75) over ±``window`` co-occurrences → truncated SVD → U·√S,
    standardised per dimension over the training tokens as the model will see them (first ``max_len``)."""
    counts: dict[str, int] = {}
    for s in sentences:
        for w in s:
            counts[w] = counts.get(w, 0) + 1
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = [UNK, *kept]
    if len(vocab) <= dim:
        raise HighmodalError(f"the training corpus has only {len(vocab)} words seen {min_count}+ times; "
                             f"word vectors of {dim} dimensions need more")
    index = {w: i for i, w in enumerate(vocab)}
    ids = [np.array([index.get(w, 0) for w in s], dtype=np.int64) for s in sentences]
    rows, cols = [], []
    for s in ids:
        for d in range(1, window + 1):
            rows += [s[:-d], s[d:]]
            cols += [s[d:], s[:-d]]
    v = len(vocab)
    co = sparse.coo_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(v, v)).tocsr()  # CSR conversion sums the repeated pairs
    total = co.sum()
    word_p = np.asarray(co.sum(axis=1)).ravel() / total
    ctx_w = np.asarray(co.sum(axis=0)).ravel() ** 0.75  # context-distribution smoothing (Levy et al. 2015)
    ctx_p = ctx_w / ctx_w.sum()
    co = co.tocoo()
    pmi = np.log(co.data / total / (word_p[co.row] * ctx_p[co.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (co.row[keep], co.col[keep])), shape=(v, v))
    # ARPACK gives the exact leading singular triplets (the randomized solver leaves the 64th
    # singular value about 1 % short at 10 power iterations); its start vector is seeded and sklearn
    # fixes the signs, so the vectors are the same on every run.
    svd = TruncatedSVD(dim, algorithm="arpack", random_state=0)
    vectors = svd.fit_transform(ppmi) / np.sqrt(svd.singular_values_)  # U·S → U·√S
    occurrences = np.concatenate([s[:max_len] for s in ids])
    mean = vectors[occurrences].mean(axis=0)
    std = vectors[occurrences].std(axis=0)
    vectors = (vectors - mean) / np.where(std > 1e-8, std, 1.0)
    return vocab, vectors.astype(np.float32)


def token_ids(sentences: list[list[str]], vocab: list[str], max_len: int) -> np.ndarray:
    """Token lists → ``(N, max_len)`` vocabulary ids (unknown words → ``<unk>`` = 0, padding → -1)."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.full((len(sentences), max_len), -1, dtype=np.int32)
    for i, s in enumerate(sentences):
        ids[i, : min(len(s), max_len)] = [index.get(w, 0) for w in s[:max_len]]
    return ids


def embed(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids from :func:`token_ids` → ``(N, max_len, dim)`` vectors (zero at padding) and the ``(N, max_len)`` mask."""
    mask = ids >= 0
    return np.where(mask[..., None], vectors[np.maximum(ids, 0)], 0).astype(np.float32), mask


def _featurizer_params(opts: TextOptions) -> dict:
    return {"dim": opts.dim, "window": opts.window, "min_count": opts.min_count, "max_len": opts.max_len}


def _sst_featurizer(ctx: LoadContext, opts: TextOptions) -> tuple[dict[str, str], list[str], np.ndarray]:
    """The one ``sst_text`` featurizer (cached on its own, so SST-2 and SST-5 fit it once), and the
    checksums of the files it was fit on."""
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, SST_FEATURIZER_FILES)

    def build() -> dict[str, np.ndarray]:
        seen: dict[str, None] = {}  # the union of the training sentences, first-seen order
        for name in SST_FEATURIZER_FILES:
            for s in read_labelled(folder / name, "utf-8")[0]:
                seen.setdefault(" ".join(s))
        vocab, vectors = fit_word_vectors([s.split() for s in seen], opts.dim, opts.window, opts.min_count,
                                          opts.max_len)
        return {"vocab": np.array(vocab), "vectors": vectors}

    arrays = cached_arrays("sst_vectors", sums, _featurizer_params(opts), build)
    return sums, arrays["vocab"].tolist(), arrays["vectors"]


def _splits(modality: str, arrays: dict[str, np.ndarray], vectors: np.ndarray) -> dict[str, SplitData]:
    """The cache holds token ids (small); vectors are looked up at load time."""
    out = {}
    for split in ("train", "val", "test"):
        x, mask = embed(arrays[f"ids_{split}"], vectors)
        out[split] = SplitData({modality: x}, arrays[f"y_{split}"], {modality: mask})
    return out


def _sst(name: str, opts: TextOptions, entry: TaskEntry, ctx: LoadContext, files: list[str],
         classes: list[str], what: str) -> TaskData:
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, files)
    featurizer_sums, vocab, vectors = _sst_featurizer(ctx, opts)

    def build() -> dict[str, np.ndarray]:
        out = {}
        for split, file in zip(("train", "val", "test"), files, strict=True):
            tokens, y = read_labelled(folder / file, "utf-8")
            if y.max() >= len(classes):
                raise HighmodalError(f"{folder / file}: label {y.max()} is out of range 0..{len(classes) - 1}")
            out[f"ids_{split}"], out[f"y_{split}"] = token_ids(tokens, vocab, opts.max_len), y
        return out

    arrays = cached_arrays(name, {**sums, **featurizer_sums}, _featurizer_params(opts), build)
    splits = _splits("sst_text", arrays, vectors)
    td = TaskData(make_task(entry, ["sst_text"], "classification", len(classes), classes, what),
                  {"sst_text": spec("sst_text", "text", (None, opts.dim), max_len=opts.max_len)}, splits,
                  str(folder))
    return fit_normalization(td, {"sst_text": "none"})  # standardised by the shared featurizer


@register_loader("sst2", TextOptions, ("text",), "SST-2 binary sentiment, sentence level (6,920/872/1,821)",
                 shared_available(DATASET, SST2_FILES + SST_FEATURIZER_FILES))
def sst2(opts: TextOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Official train/dev/test; dev is the validation split. Sentence-level training data only (the
    phrase-level files behind the published 87.1 % are not available), so expect lower scores."""
    return _sst("sst2", opts, entry, ctx, SST2_FILES, SST2_CLASSES, "movie-review sentence sentiment, 2 classes")


@register_loader("sst5", TextOptions, ("text",), "SST-5 fine-grained sentiment, sentence level (8,544/1,101/2,210)",
                 shared_available(DATASET, SST5_FILES + SST_FEATURIZER_FILES))
def sst5(opts: TextOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Official train/dev/test; dev is the validation split. Same caveat as ``sst2`` (published SST-1
    46.7 % used phrase-level training data)."""
    return _sst("sst5", opts, entry, ctx, SST5_FILES, SST5_CLASSES, "movie-review sentence sentiment, 5 classes")


@register_loader("trec", TextOptions, ("text",), "TREC question type, 6 coarse classes (5,452/500)",
                 shared_available(DATASET, TREC_FILES))
def trec(opts: TextOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Official train/test; validation is carved (stratified, run seed) from train *before* the word
    vectors are fit, so validation questions are as unseen as test ones. The files are Latin-1 (one
    byte, 0xF0, in the training file is not valid UTF-8)."""
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, TREC_FILES)
    params = {**_featurizer_params(opts), "val_frac": opts.val_frac, "seed": ctx.seed}

    def build() -> dict[str, np.ndarray]:
        tokens, y = read_labelled(folder / TREC_FILES[0], "latin-1")
        test_tokens, y_test = read_labelled(folder / TREC_FILES[1], "latin-1")
        for name, labels in ((TREC_FILES[0], y), (TREC_FILES[1], y_test)):
            if labels.max() >= len(TREC_CLASSES):
                raise HighmodalError(f"{folder / name}: label {labels.max()} is out of range 0..5")
        idx = np.arange(len(y))  # carve question indices the way three_way carves validation
        train_part, val_part = carve(SplitData({"i": idx[:, None]}, y), opts.val_frac, ctx.seed + 1, stratify=True)
        parts = {"train": train_part.inputs["i"][:, 0], "val": val_part.inputs["i"][:, 0]}
        vocab, vectors = fit_word_vectors([tokens[i] for i in parts["train"]], opts.dim, opts.window,
                                          opts.min_count, opts.max_len)
        sets = {s: ([tokens[i] for i in part], y[part]) for s, part in parts.items()}
        sets["test"] = (test_tokens, y_test)
        out = {"vectors": vectors}
        for split, (toks, labels) in sets.items():
            out[f"ids_{split}"], out[f"y_{split}"] = token_ids(toks, vocab, opts.max_len), labels
        return out

    arrays = cached_arrays("trec", sums, params, build)
    splits = _splits("trec_text", arrays, arrays["vectors"])
    td = TaskData(make_task(entry, ["trec_text"], "classification", 6, TREC_CLASSES,
                            "question type (Li & Roth coarse classes) from the question's words"),
                  {"trec_text": spec("trec_text", "text", (None, opts.dim), max_len=opts.max_len)}, splits,
                  str(folder))
    return fit_normalization(td, {"trec_text": "none"})  # standardised by the featurizer
