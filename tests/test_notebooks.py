"""Execute every notebook in notebooks/ top to bottom; a raised error or a failed assertion in
any cell fails its test. The runtime of each notebook is recorded as the ``runtime_s`` property
(shown in the JUnit XML report: ``pytest --junitxml=report.xml``)."""

import os
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_notebooks_exist_and_are_stored_with_their_outputs():
    """Stored as rendered by ``python notebooks/render.py``: every code cell executed once, in
    order, without an error, so readers see the results (figures included) without running them."""
    assert len(NOTEBOOKS) >= 13
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert code and [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
            f"{path.name} is not stored executed in order: run python notebooks/render.py {path.name}"
        )
        assert not any(out.get("output_type") == "error" for cell in code for out in cell.outputs), path.name
        assert "assert" in code[-1].source, f"{path.name} must end with a cell asserting its conclusion"
    listed = (ROOT / "notebooks" / "README.md").read_text()
    assert all(path.name in listed for path in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, record_property):
    # the kernel is a separate process: let it import this checkout of fastnn, draw with Agg
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        record_property("runtime_s", round(time.perf_counter() - start, 1))
