"""Loss per target kind, looked up by name rather than branched on."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from highmodal.registry import Registry

LOSSES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("loss")
LOSSES.register("classification")(F.cross_entropy)
LOSSES.register("regression")(F.mse_loss)  # on standardised targets, see Task.target_mean
