"""Task heads: a normalisation followed by one linear map (HighMMT Appendix B.4)."""

from __future__ import annotations

from torch import nn

from highmodal.registry import Registry

NORMS: Registry[type[nn.Module]] = Registry("head norm")
NORMS.register("layernorm")(nn.LayerNorm)
NORMS.register("batchnorm")(nn.BatchNorm1d)


class LinearHead(nn.Sequential):
    """Norm + Linear. The official code uses LayerNorm; the paper's text says BatchNorm (both offered)."""

    def __init__(self, in_dim: int, out_dim: int, norm: str = "layernorm") -> None:
        super().__init__(NORMS.get(norm)(in_dim), nn.Linear(in_dim, out_dim))
