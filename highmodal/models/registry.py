"""timm-style model registry: ``@register_model`` on a builder, ``create_model(name, ...)`` to build."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from highmodal.data.task import Task
from highmodal.modalities.spec import ModalitySpec
from highmodal.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable:
    return MODELS.register(name)


def create_model(name: str, specs: Sequence[ModalitySpec], tasks: Sequence[Task], **cfg) -> nn.Module:
    """Build model ``name`` for the given modalities and tasks; ``cfg`` holds preset + overrides."""
    return MODELS.get(name)(specs=list(specs), tasks=list(tasks), **cfg)
