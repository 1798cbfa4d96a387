"""referdino-demo: ReferDINO referring video object segmentation for Python, the CLI, Gradio and Jupyter.

    from referdino_demo import ReferDinoPredictor
    seg = ReferDinoPredictor.from_pretrained("tiny-random").segment("clip.mp4", ["the red ball"])
"""

import warnings

from .threads import openmp_defaults

__version__ = "0.1.0"

# Before anything imports torch: libgomp reads its settings once, when torch loads it (see `threads.py`). Users'
# own settings win, and importing torch before this package leaves OpenMP's defaults.
openmp_defaults()

# supervision warns on import that OpenCV is absent; its NumPy fallback is all the annotators here use.
warnings.filterwarnings("ignore", message=r"OpenCV \(`opencv-python`\) is not installed", category=UserWarning)

__all__ = ["ReferDinoPredictor", "VideoSegmentation", "ExpressionResult", "export", "render"]


def __getattr__(name: str):
    # Lazy: `import referdino_demo` stays cheap (no torch/transformers import) until something is used.
    if name == "ReferDinoPredictor":
        from .predictor import ReferDinoPredictor

        return ReferDinoPredictor
    if name in ("VideoSegmentation", "ExpressionResult"):
        from . import results

        return getattr(results, name)
    if name in ("export", "render"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'referdino_demo' has no attribute {name!r}")
