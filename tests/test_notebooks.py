"""Every notebook in notebooks/ runs top to bottom in smoke mode, and is stored without outputs."""

import base64
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def test_the_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "how_it_works.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"
    assert "widgets" not in notebook.metadata  # no saved widget state either


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    """Executed in a fresh python3 kernel whose working folder is a temporary one (outputs land there) and
    which imports this checkout."""
    monkeypatch.setenv("REFERDINO_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the cell and its traceback) on any error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "smoke mode" in text and "Traceback" not in text
    assert "referdino_demo" in text or "referdino-demo" in text
    mimes = [m for o in outputs for m in o.get("data", {})]
    assert "image/png" in mimes  # plots and frames render inline

    if path.name == "quickstart.ipynb":
        html = "".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
        assert html.count('<video') >= 3 and "data:video/mp4;base64," in html  # embedded, so Colab plays it
        encoded = html.split("data:video/mp4;base64,")[1].split('"')[0]
        mp4 = base64.b64decode(encoded)
        assert mp4[4:8] == b"ftyp" and b"avc1" in mp4  # an H.264 MP4
        assert "application/vnd.jupyter.widget-view+json" in mimes  # the panel displayed itself
        for name in ("overlay.mp4", "heatmap.mp4", "masks.zip", "palette.zip", "masks_rle.json", "scores.csv"):
            assert (tmp_path / "referdino_outputs" / name).stat().st_size > 0, name
    else:
        assert "speed-up x" in text and "kept after each layer (live): [150, 75, 38, 19, 10, 5]" in text
        assert "sampling locations (4, 5, 8, 16, 2)" in text
