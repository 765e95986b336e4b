"""interp-workbench: mechanistic interpretability on hooked TransformerLens bridges."""

from interp.errors import WorkbenchError
from interp.models import Model, ModelInfo, load

__all__ = ["Model", "ModelInfo", "WorkbenchError", "load"]
__version__ = "0.1.0"
