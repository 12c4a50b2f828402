"""Text tokens: BERT-style subword embeddings, or a projection of given per-token word vectors.

OmniVec2's transformer f is BERT-based (§3.1) and its text tokenizer follows Uni-Perceiver's, which
embeds BPE subwords with a learned table and learned positions. So for token ids (``spec.vocab_size``
set; the subword vocabulary is trained offline on the task's own training corpus) the tokenizer is
BERT's input embedding: ``Embedding(vocab_size, d, padding_idx=0) + learned positions → LayerNorm``.
BERT's segment embedding is left out: a sample is one sentence. Id 0 is padding: its tokens are
masked out (as is everything the data mask marks padded) and its embedding row stays zero.

The paper leaves open what to do with text given as fixed word vectors, which is what the HighMMT
loaders produce (PPMI-SVD vectors per word): those are projected with a Linear map plus the same
learned positions, like any other per-token feature sequence. Positions cover ``max_len`` tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import NoOptions, Tokenizer, Tokens, learned_positions, register_tokenizer


@register_tokenizer("text")
class TextEmbedding(Tokenizer):
    summary = "BERT subword embedding (padding id 0) + learned positions + LayerNorm; word vectors: Linear + positions"

    def __init__(self, spec: ModalitySpec, d_model: int, options: NoOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 1:
            raise self.fail("expects a token sequence (length, 1) of subword ids or (length, dim) of word vectors")
        (length,) = spec.ref_lengths()
        self.pos = learned_positions(length, d_model=d_model)
        if spec.vocab_size is not None:
            self.target_loss = "ce"  # masked subwords are predicted as ids
            self.embed: nn.Module = nn.Embedding(spec.vocab_size, d_model, padding_idx=0)
            self.norm: nn.Module = nn.LayerNorm(d_model)
        else:
            self.embed = nn.Linear(spec.channels, d_model)
            self.norm = nn.Identity()

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        token_mask = self.step_mask(x, mask)
        if self.spec.vocab_size is None:
            x = self.normalised(x)
            return Tokens(self.embed(x), self.pos[: x.shape[1]], token_mask, x if targets else None)
        ids = x[..., 0].long()
        # Checked on the CPU only: on a GPU the check would stall every step, and loaded data was
        # checked already (ModalitySpec.validate).
        if ids.device.type == "cpu" and ids.numel() and (ids.min() < 0 or ids.max() >= self.spec.vocab_size):
            raise self.fail(f"expects subword ids in [0, {self.spec.vocab_size}), got ids from "
                            f"{int(ids.min())} to {int(ids.max())}")
        token_mask = ids != 0 if token_mask is None else token_mask & (ids != 0)
        return Tokens(self.embed(ids), self.pos[: x.shape[1]], token_mask, ids if targets else None)

    def combine(self, content: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        return self.norm(super().combine(content, pos))
