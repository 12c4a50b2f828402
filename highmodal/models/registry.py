"""timm-style model registry: ``@register_model`` on a builder, ``create_model(name, ...)`` to build."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import TypeVar

from torch import nn

from highmodal.errors import HighmodalError, did_you_mean
from highmodal.modalities.spec import ModalitySpec
from highmodal.registry import Registry
from highmodal.tasks import Task

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
C = TypeVar("C")


def resolve_preset(presets: dict[str, C], preset: str, overrides: dict, label: str) -> C:
    """``presets[preset]`` with ``overrides`` applied; unknown presets and option names are errors."""
    if preset not in presets:
        raise HighmodalError(f"unknown {label} preset {preset!r}{did_you_mean(preset, presets)}; "
                             f"known: {', '.join(presets)}")
    base = presets[preset]
    names = {f.name for f in fields(base)}
    for key in overrides:
        if key not in names:
            raise HighmodalError(f"model: unknown {label} option {key!r}{did_you_mean(key, names)}")
    return replace(base, **overrides)


def register_model(name: str) -> Callable:
    return MODELS.register(name)


def default_preset(name: str) -> str:
    """The preset model ``name`` builds when none is given (its constructor's default)."""
    import inspect

    return inspect.signature(MODELS.get(name)).parameters["preset"].default


def create_model(name: str, specs: Sequence[ModalitySpec], tasks: Sequence[Task], **cfg) -> nn.Module:
    """Build model ``name`` for the given modalities and tasks; ``cfg`` holds preset + overrides."""
    return MODELS.get(name)(specs=list(specs), tasks=list(tasks), **cfg)
