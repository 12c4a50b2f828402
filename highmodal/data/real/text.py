"""Sentence classification on the harvardnlp Kim-CNN files: SST-2, SST-5 (sentiment) and TREC (question type).

Two views: word vectors fit on each task's own training sentences (PPMI + SVD, HighMMT's per-token
features without pretrained GloVe; SST-2 and SST-5 share one modality), or WordPiece subword ids
trained on the training split (``tokens: subword``, OmniVec2's view). Design: docs/data.md#text-sst-2-sst-5-trec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD

from highmodal.data.cache import cached_arrays
from highmodal.data.loaders import LoadContext, TaskEntry, fit_normalization, make_task, register_loader, spec
from highmodal.data.shared import require_root, shared_available, verified_files
from highmodal.data.splits import carve
from highmodal.errors import HighmodalError
from highmodal.tasks import SplitData, TaskData

if TYPE_CHECKING:
    from tokenizers import Tokenizer

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
TOKEN_VIEWS = ("vectors", "subword")
SUBWORD_SPECIALS = ("[PAD]", "[UNK]")  # ids 0 and 1
MAX_EXACT_ID = 2**24  # float32 holds every integer below this exactly


@dataclass
class TextOptions:
    """``max_len``: tokens kept per sentence (50 covers all TREC questions and all but 8 of the
    ~11.8k SST sentences, the longest having 56). ``dim``/``window``/``min_count``: the word-vector
    fit (512 dims: the best of 64/256/512 on validation, 3 seeds per task; ±4 words is a mid-size
    window that captures both syntax and topic; words seen once are too noisy to get a vector).
    ``val_frac``: share of TREC's training questions held out for validation (SST has a dev set).

    ``tokens``: ``vectors`` (the word vectors above, modalities ``sst_text``/``trec_text``) or
    ``subword`` (WordPiece ids, modalities ``sst_subwords``/``trec_subwords``; ``max_len``, ``dim``,
    ``window`` and ``min_count`` then play no part). ``vocab_size``: the WordPiece trainer's target
    vocabulary size (specials and the character alphabet included). ``subword_max_len``: subwords kept
    per sentence; subword sequences are longer than word sequences, so it exceeds ``max_len``."""

    max_len: int = 50
    dim: int = 512
    window: int = 4
    min_count: int = 2
    val_frac: float = 0.1
    tokens: str = "vectors"
    vocab_size: int = 4000
    subword_max_len: int = 64


def read_labelled(path: Path, encoding: str) -> tuple[list[list[str]], np.ndarray]:
    """``<int label> <sentence>`` per line (any whitespace after the label; blank lines skipped) →
    lower-cased token lists and labels."""
    try:
        lines = path.read_bytes().decode(encoding).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HighmodalError(f"{path}: cannot read as {encoding} text ({e})") from None
    tokens, labels = [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, *words = line.lower().split()
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


def fit_subword_tokenizer(sentences: list[list[str]], vocab_size: int) -> Tokenizer:
    """A WordPiece tokenizer (HF ``tokenizers``) trained on the given token lists: whitespace
    pre-tokenizer, no normaliser, ``[PAD]`` = 0, ``[UNK]`` = 1, then the ``##`` continuation characters
    and the characters (each in code-point order), then the learned pieces. Deterministic (see the
    module docstring for how)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # Every "##c" the trainer would create, declared up front so its id does not depend on hash order.
    continuations = sorted({c for s in sentences for w in s for c in w[1:]})
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, show_progress=False,
                                        special_tokens=[*SUBWORD_SPECIALS, *(f"##{c}" for c in continuations)])
    scratch = Tokenizer(models.WordPiece(unk_token=SUBWORD_SPECIALS[1]))
    scratch.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    scratch.train_from_iterator((" ".join(s) for s in sentences), trainer, length=len(sentences))
    vocab = scratch.get_vocab()
    if [vocab.get(t) for t in SUBWORD_SPECIALS] != [0, 1]:
        raise HighmodalError(f"WordPiece training put {SUBWORD_SPECIALS} at ids "
                             f"{[vocab.get(t) for t in SUBWORD_SPECIALS]}, expected [0, 1]")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=SUBWORD_SPECIALS[1]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(cleanup=False)  # ids → the loader's words, space-joined
    tokenizer.add_special_tokens(list(SUBWORD_SPECIALS))
    return tokenizer


def subword_ids(tokenizer: Tokenizer, sentences: list[list[str]], max_len: int) -> np.ndarray:
    """Token lists → ``(N, max_len)`` int32 subword ids, truncated to ``max_len``, padded with 0."""
    ids = np.zeros((len(sentences), max_len), dtype=np.int32)
    for i, enc in enumerate(tokenizer.encode_batch(sentences, is_pretokenized=True)):
        row = enc.ids[:max_len]
        ids[i, : len(row)] = row
        if not row or 0 in row:
            raise HighmodalError(f"sentence {i} ({' '.join(sentences[i])[:60]!r}) encodes to "
                                 f"{'no subwords' if not row else 'the padding id 0'}")
    return ids


def _tokenizer_bytes(tokenizer: Tokenizer) -> np.ndarray:
    return np.frombuffer(tokenizer.to_str().encode("utf-8"), dtype=np.uint8)


def _tokenizer_from(arrays: dict[str, np.ndarray]) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(arrays["tokenizer"].tobytes().decode("utf-8"))


def _check_options(source: str, opts: TextOptions) -> None:
    if opts.tokens not in TOKEN_VIEWS:
        raise HighmodalError(f"{source}: tokens must be one of {', '.join(map(repr, TOKEN_VIEWS))}, "
                             f"got {opts.tokens!r}")
    if opts.tokens == "subword":
        if not len(SUBWORD_SPECIALS) < opts.vocab_size < MAX_EXACT_ID:
            raise HighmodalError(f"{source}: vocab_size must be between {len(SUBWORD_SPECIALS) + 1} and "
                                 f"{MAX_EXACT_ID - 1} (ids are stored as float32), got {opts.vocab_size}")
        if opts.subword_max_len < 1:
            raise HighmodalError(f"{source}: subword_max_len must be >= 1, got {opts.subword_max_len}")


def _subword_params(opts: TextOptions, training: bool = False) -> dict:
    """Cache-key settings of the subword view: the vocabulary's (``training``) or the ids' (all)."""
    import tokenizers

    params = {"tokens": "subword", "vocab_size": opts.vocab_size, "specials": list(SUBWORD_SPECIALS),
              "tokenizers": tokenizers.__version__}
    return params if training else {**params, "subword_max_len": opts.subword_max_len}


def _id_splits(modality: str, arrays: dict[str, np.ndarray]) -> dict[str, SplitData]:
    """Cached int32 ids → float32 ``(N, L, 1)`` ids and their mask (True where the id is not padding)."""
    out = {}
    for split in ("train", "val", "test"):
        ids = arrays[f"ids_{split}"]
        out[split] = SplitData({modality: ids[..., None].astype(np.float32)}, arrays[f"y_{split}"],
                               {modality: ids != 0}, {"text": arrays[f"text_{split}"]})
    return out


def _featurizer_params(opts: TextOptions) -> dict:
    return {"dim": opts.dim, "window": opts.window, "min_count": opts.min_count, "max_len": opts.max_len}


def sst_training_sentences(folder: Path) -> list[list[str]]:
    """The union of the SST-2 and SST-5 training sentences (each once, in first-seen order): what both
    shared SST featurizers, word vectors and subword vocabulary, are fit on."""
    seen: dict[str, None] = {}
    for name in SST_FEATURIZER_FILES:
        for s in read_labelled(folder / name, "utf-8")[0]:
            seen.setdefault(" ".join(s))
    return [s.split() for s in seen]


def _sst_featurizer(ctx: LoadContext, opts: TextOptions) -> tuple[dict[str, str], list[str], np.ndarray]:
    """The one ``sst_text`` featurizer (cached on its own, so SST-2 and SST-5 fit it once), and the
    checksums of the files it was fit on."""
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, SST_FEATURIZER_FILES)

    def build() -> dict[str, np.ndarray]:
        vocab, vectors = fit_word_vectors(sst_training_sentences(folder), opts.dim, opts.window, opts.min_count,
                                          opts.max_len)
        return {"vocab": np.array(vocab), "vectors": vectors}

    arrays = cached_arrays("sst_vectors", sums, _featurizer_params(opts), build)
    return sums, arrays["vocab"].tolist(), arrays["vectors"]


def _sst_subword_vocab(ctx: LoadContext, opts: TextOptions) -> tuple[dict[str, str], Tokenizer]:
    """The one ``sst_subwords`` WordPiece tokenizer (cached on its own, like the word vectors), and the
    checksums of the files it was trained on."""
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, SST_FEATURIZER_FILES)

    def build() -> dict[str, np.ndarray]:
        return {"tokenizer": _tokenizer_bytes(fit_subword_tokenizer(sst_training_sentences(folder), opts.vocab_size))}

    arrays = cached_arrays("sst_subword_vocab", sums, _subword_params(opts, training=True), build)
    return sums, _tokenizer_from(arrays)


def joined(tokens: list[list[str]]) -> np.ndarray:
    """Each sentence's tokens joined by spaces, as a string array (``SplitData.meta["text"]``)."""
    return np.array([" ".join(t) for t in tokens])


def _splits(modality: str, arrays: dict[str, np.ndarray], vectors: np.ndarray) -> dict[str, SplitData]:
    """The cache holds token ids (small); vectors are looked up at load time."""
    out = {}
    for split in ("train", "val", "test"):
        x, mask = embed(arrays[f"ids_{split}"], vectors)
        out[split] = SplitData({modality: x}, arrays[f"y_{split}"], {modality: mask}, {"text": arrays[f"text_{split}"]})
    return out


def _subword_task(entry: TaskEntry, modality: str, classes: list[str], what: str, trained_on: str,
                  opts: TextOptions, tokenizer: Tokenizer, arrays: dict[str, np.ndarray], source: str) -> TaskData:
    """The ``tokens: subword`` view: ids, no normalisation, the vocabulary's provenance in the description."""
    size = tokenizer.get_vocab_size()
    what = (f"{what}, from WordPiece subword ids (vocabulary of {size:,} pieces incl. [PAD]=0 and [UNK]=1, "
            f"target {opts.vocab_size:,}, trained offline on {trained_on}; at most {opts.subword_max_len} "
            "subwords per sentence)")
    return TaskData(make_task(entry, [modality], "classification", len(classes), classes, what),
                    {modality: spec(modality, "text", (None, 1), max_len=opts.subword_max_len, vocab_size=size)},
                    _id_splits(modality, arrays), source)


def _sst(name: str, opts: TextOptions, entry: TaskEntry, ctx: LoadContext, files: list[str],
         classes: list[str], what: str) -> TaskData:
    _check_options(name, opts)
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, files)
    subword = opts.tokens == "subword"
    if subword:
        featurizer_sums, tokenizer = _sst_subword_vocab(ctx, opts)
        params = _subword_params(opts)

        def encode(tokens: list[list[str]]) -> np.ndarray:
            return subword_ids(tokenizer, tokens, opts.subword_max_len)
    else:
        featurizer_sums, vocab, vectors = _sst_featurizer(ctx, opts)
        params = _featurizer_params(opts)

        def encode(tokens: list[list[str]]) -> np.ndarray:
            return token_ids(tokens, vocab, opts.max_len)

    def build() -> dict[str, np.ndarray]:
        out = {}
        for split, file in zip(("train", "val", "test"), files, strict=True):
            tokens, y = read_labelled(folder / file, "utf-8")
            if y.max() >= len(classes):
                raise HighmodalError(f"{folder / file}: label {y.max()} is out of range 0..{len(classes) - 1}")
            out[f"ids_{split}"], out[f"y_{split}"], out[f"text_{split}"] = encode(tokens), y, joined(tokens)
        return out

    arrays = cached_arrays(f"{name}_subwords" if subword else name, {**sums, **featurizer_sums}, params, build)
    if subword:
        return _subword_task(entry, "sst_subwords", classes, what,
                             "the union of the SST-2 and SST-5 training sentences (shared by both tasks)", opts,
                             tokenizer, arrays, str(folder))
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


def _trec_arrays(opts: TextOptions, ctx: LoadContext) -> tuple[Path, dict[str, np.ndarray]]:
    """TREC's cached arrays for either view: the per-split ids and labels, and the featurizer fit on
    the carved training part (``vectors``, or the subword ``tokenizer``'s JSON bytes)."""
    folder = require_root(ctx, DATASET)
    sums = verified_files(ctx, DATASET, TREC_FILES)
    subword = opts.tokens == "subword"
    params = {**(_subword_params(opts) if subword else _featurizer_params(opts)), "val_frac": opts.val_frac,
              "seed": ctx.seed}

    def build() -> dict[str, np.ndarray]:
        tokens, y = read_labelled(folder / TREC_FILES[0], "latin-1")
        test_tokens, y_test = read_labelled(folder / TREC_FILES[1], "latin-1")
        for name, labels in ((TREC_FILES[0], y), (TREC_FILES[1], y_test)):
            if labels.max() >= len(TREC_CLASSES):
                raise HighmodalError(f"{folder / name}: label {labels.max()} is out of range 0..5")
        idx = np.arange(len(y))  # carve question indices the way three_way carves validation
        train_part, val_part = carve(SplitData({"i": idx[:, None]}, y), opts.val_frac, ctx.seed + 1, stratify=True)
        parts = {"train": train_part.inputs["i"][:, 0], "val": val_part.inputs["i"][:, 0]}
        train_tokens = [tokens[i] for i in parts["train"]]
        if subword:
            tokenizer = fit_subword_tokenizer(train_tokens, opts.vocab_size)
            out = {"tokenizer": _tokenizer_bytes(tokenizer)}

            def encode(toks: list[list[str]]) -> np.ndarray:
                return subword_ids(tokenizer, toks, opts.subword_max_len)
        else:
            vocab, vectors = fit_word_vectors(train_tokens, opts.dim, opts.window, opts.min_count, opts.max_len)
            out = {"vectors": vectors}

            def encode(toks: list[list[str]]) -> np.ndarray:
                return token_ids(toks, vocab, opts.max_len)

        sets = {s: ([tokens[i] for i in part], y[part]) for s, part in parts.items()}
        sets["test"] = (test_tokens, y_test)
        for split, (toks, labels) in sets.items():
            out[f"ids_{split}"], out[f"y_{split}"], out[f"text_{split}"] = encode(toks), labels, joined(toks)
        return out

    return folder, cached_arrays("trec_subwords" if subword else "trec", sums, params, build)


@register_loader("trec", TextOptions, ("text",), "TREC question type, 6 coarse classes (5,452/500)",
                 shared_available(DATASET, TREC_FILES))
def trec(opts: TextOptions, entry: TaskEntry, ctx: LoadContext) -> TaskData:
    """Official train/test; validation is carved (stratified, run seed) from train *before* the word
    vectors or the subword vocabulary are fit, so validation questions are as unseen as test ones. The
    files are Latin-1 (one byte, 0xF0, in the training file is not valid UTF-8)."""
    _check_options("trec", opts)
    folder, arrays = _trec_arrays(opts, ctx)
    what = "question type (Li & Roth coarse classes) from the question's words"
    if opts.tokens == "subword":
        n = len(arrays["y_train"])
        return _subword_task(entry, "trec_subwords", TREC_CLASSES, what,
                             f"the {n:,} training questions (the carved validation part excluded)", opts,
                             _tokenizer_from(arrays), arrays, str(folder))
    splits = _splits("trec_text", arrays, arrays["vectors"])
    td = TaskData(make_task(entry, ["trec_text"], "classification", 6, TREC_CLASSES, what),
                  {"trec_text": spec("trec_text", "text", (None, opts.dim), max_len=opts.max_len)}, splits,
                  str(folder))
    return fit_normalization(td, {"trec_text": "none"})  # standardised by the featurizer


def subword_tokenizer(source: str, ctx: LoadContext, opts: TextOptions | None = None) -> Tokenizer:
    """The trained WordPiece tokenizer behind the ``tokens: subword`` view of ``source`` (``sst2``,
    ``sst5`` or ``trec``), from the cache (trained if absent); ``.to_str()`` gives its JSON. The TREC
    vocabulary depends on the run seed (through the validation carve) as well as on ``opts``."""
    opts = replace(opts or TextOptions(), tokens="subword")
    _check_options(source, opts)
    if source in ("sst2", "sst5"):
        return _sst_subword_vocab(ctx, opts)[1]
    if source == "trec":
        return _tokenizer_from(_trec_arrays(opts, ctx)[1])
    raise HighmodalError(f"subword_tokenizer: source must be 'sst2', 'sst5' or 'trec', got {source!r}")
