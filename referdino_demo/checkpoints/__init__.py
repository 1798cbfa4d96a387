"""Checkpoints: converting the official release format, and finding files (Hub, local, tiny-random).

`load_model` builds a `ReferDinoModel` from any of them; `save_model` writes our own folder format. The model
package knows nothing of files: this package depends on it, never the other way round.
"""

from .loading import LoadReport, load_model, save_model, tiny_random_model

__all__ = ["LoadReport", "load_model", "save_model", "tiny_random_model"]
