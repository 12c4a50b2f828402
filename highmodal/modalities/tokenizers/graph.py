"""Node tokens with structural encodings for graphs (as in GraphGPS, Rampášek et al. 2022).

OmniVec2 names no tokenizer for graphs. Graph transformers of the GraphGPS family make each node a
token and carry the graph's structure in per-node encodings instead of message passing in the
tokenizer; the real loaders already put the node label, the degree and random-walk structural
encodings (RWSE, from the real edges) into the node channels. The tokenizer is therefore a node
MLP, ``Linear(F, d) → GELU → Linear(d, d)`` (GraphGPS's node encoder plus its RWSE projection,
merged because both read the same channels).

No index position embedding by default: node order in TU files is arbitrary, and adding one would
break the permutation equivariance that RWSE keeps. ``order_embedding: true`` adds learned index
positions for graphs whose order means something (PROTEINS nodes roughly follow the chain). Padded
nodes are masked out with the data mask.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from highmodal.modalities.spec import ModalitySpec
from highmodal.modalities.tokenizers.base import Tokenizer, Tokens, learned_positions, register_tokenizer


@dataclasses.dataclass
class GraphOptions:
    """``order_embedding``: add a learned embedding of the node index."""

    order_embedding: bool = False


@register_tokenizer("graph")
class NodeEmbedding(Tokenizer):
    Options = GraphOptions
    summary = "node tokens: MLP over node channels (labels, degree, RWSE); no index positions unless order_embedding"

    def __init__(self, spec: ModalitySpec, d_model: int, options: GraphOptions) -> None:
        super().__init__(spec, d_model, options)
        if len(spec.axes) != 1:
            raise self.fail("expects node features (nodes, channels)")
        self.mlp = nn.Sequential(nn.Linear(spec.channels, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        if options.order_embedding:
            self.pos = learned_positions(*spec.ref_lengths(), d_model=d_model)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None, targets: bool = False) -> Tokens:
        self.check_shape(x)
        x = self.normalised(x)
        pos = self.pos[: x.shape[1]] if self.options.order_embedding else None
        return Tokens(self.mlp(x), pos, self.step_mask(x, mask), x if targets else None)
