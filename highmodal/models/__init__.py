"""Whole architectures, built by name: ``create_model("highmmt", specs, tasks, preset="large")``."""

from highmodal.models import highmmt as highmmt
from highmodal.models import omnivec2 as omnivec2
from highmodal.models import probe as probe
from highmodal.models.registry import MODELS, create_model, register_model

__all__ = ["MODELS", "create_model", "register_model"]
