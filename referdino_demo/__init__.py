"""referdino-demo: ReferDINO referring video object segmentation for Python, the CLI, Gradio and Jupyter."""

__version__ = "0.1.0"
