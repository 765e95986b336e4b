"""Models: one loader for every source."""

from interp.models.load import Model, ModelInfo, load
from interp.models.sources import Source, registered, resolve

__all__ = ["Model", "ModelInfo", "Source", "load", "registered", "resolve"]
