"""One tokenizer for every modality (Meta-Transformer's "unified tokenizer", OmniVec2 Table 12).

The ablation's point is a tokenizer that knows nothing of the modality's structure. We reuse
HighMMT's parameter-free standardisation (data ⊕ Fourier positions, zero-padded to a common width,
with every modality given the same code since OmniVec2 attaches no modality embedding) followed by
ONE linear map shared by all modalities, so the only modality-specific parts left are the heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.standardize import Standardizer


class UnifiedTokenizer(nn.Module):
    def __init__(self, specs: Sequence[ModalitySpec], d_model: int) -> None:
        super().__init__()
        self.standardizer = Standardizer(specs, shared_embedding=False)
        self.proj = nn.Linear(self.standardizer.d_all, d_model)

    def forward(self, name: str, x: torch.Tensor, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens, mask = self.standardizer(name, x, mask)
        return self.proj(tokens), mask
