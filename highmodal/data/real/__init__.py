"""Loaders for the shared real datasets (``--data-root`` / ``$HIGHMODAL_DATA``), one module per family."""

from highmodal.data.real import vision as vision

__all__ = ["vision"]
