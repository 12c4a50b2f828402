"""OmniVec2's modality-specific tokenizers; importing this package registers one per modality kind."""

from highmodal.modalities.tokenizers import (  # noqa: F401  (imported for registration)
    audio,
    graph,
    hyperspectral,
    point_cloud,
    sequence,
    tabular,
    text,
    video,
    vision,
)
from highmodal.modalities.tokenizers.base import TOKENIZERS, Tokenizer, create_tokenizer, register_tokenizer

__all__ = ["TOKENIZERS", "Tokenizer", "create_tokenizer", "register_tokenizer"]
