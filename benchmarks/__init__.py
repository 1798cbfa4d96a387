"""The benchmark suite (`python -m benchmarks.run`); each module runs as `python -m benchmarks.NAME`."""

# Before any benchmark imports torch: the package sets OpenMP's defaults (see referdino_demo/threads.py).
import referdino_demo  # noqa: F401
