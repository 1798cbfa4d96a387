"""The ReferDINO network: tensors in, tensors out. See `modeling.ReferDinoModel`."""

from .config import ReferDinoConfig, SwinSettings, TextSettings
from .modeling import ReferDinoModel

__all__ = ["ReferDinoConfig", "ReferDinoModel", "SwinSettings", "TextSettings"]
