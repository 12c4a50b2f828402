"""Loaders for the shared real datasets (``--data-root`` / ``$HIGHMODAL_DATA``), one module per family."""

from highmodal.data.real import audio as audio
from highmodal.data.real import clinical as clinical
from highmodal.data.real import forecasting as forecasting
from highmodal.data.real import graphs as graphs
from highmodal.data.real import hyperspectral as hyperspectral
from highmodal.data.real import infrared as infrared
from highmodal.data.real import shapes as shapes
from highmodal.data.real import tabular as tabular
from highmodal.data.real import text as text
from highmodal.data.real import vision as vision

__all__ = ["audio", "clinical", "forecasting", "graphs", "hyperspectral", "infrared", "shapes", "tabular", "text",
           "vision"]
