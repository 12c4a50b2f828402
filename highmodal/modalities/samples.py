"""Random inputs of a modality's per-sample shape, for benchmarks and export checks: the cost and
the traced graph of a model depend on shapes and dtypes alone, so no dataset is needed."""

from __future__ import annotations

import torch

from highmodal.modalities.spec import ModalitySpec


def random_values(spec: ModalitySpec, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, *reference lengths, channels)`` float32: Gaussian values, or token ids in
    ``[1, vocab_size)`` (never the padding id 0) for a modality of ids."""
    shape = (batch, *spec.ref_lengths(), spec.channels)
    if spec.vocab_size:
        return torch.randint(1, spec.vocab_size, shape, generator=generator).float()
    return torch.randn(shape, generator=generator)
