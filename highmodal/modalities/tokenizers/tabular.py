"""Feature tokens for tables (FT-Transformer's feature tokenizer, Gorishniy et al. 2021).

OmniVec2 names no tokenizer for tables. FT-Transformer's is the established transformer input for
them: every feature f becomes one token ``x_f · W_f + b_f`` with its own ``W_f, b_f ∈ R^d``. The
per-feature bias is what tells the transformer which column a token is (columns have no order, so
there is no position embedding), and the per-feature weight lets each column scale differently.
Initialisation follows the reference implementation: uniform in ``±1/sqrt(d)`` for both.

Left open: FT-Transformer embeds categorical columns with a lookup table, but a ``ModalitySpec``
cannot say which columns are categorical, and our loaders give every column as one number (Adult's
categories as their standardised index in the training split's sorted list). So every column is a
numeric feature here. A column with several channels gets a ``(channels, d)`` weight, which reduces
to the paper's form for one channel.
"""

from __future__ import annotations

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import NoOptions, Tokenizer, Tokens, register_tokenizer


@register_tokenizer("tabular")
class FeatureTokenizer(Tokenizer):
    summary = "FT-Transformer feature tokens: token_f = x_f·W_f + b_f with per-feature W_f, b_f"

    def __init__(self, spec: ModalitySpec, d_model: int, options: NoOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 1 or spec.variable:
            raise self.fail("expects a fixed set of features (features, 1)")
        (features,) = spec.ref_lengths()
        bound = d_model**-0.5
        self.weight = nn.Parameter(torch.empty(features, spec.channels, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(features, d_model).uniform_(-bound, bound))

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        """The per-feature bias b_f is what tells features apart, so it serves as the position."""
        self.check_shape(x)
        x = self.normalised(x)
        return Tokens(torch.einsum("bfc,fcd->bfd", x, self.weight), self.bias, None, x if targets else None)
