"""Every notebook in examples/ runs top to bottom, unedited, in a fresh kernel of this interpreter.

The notebooks read ``LUMINATE_NOTEBOOK_STEPS`` in their parameter cell (here 2) and pass it to every optimization
(there is no test switch in the library), so the whole set takes seconds of compute; most of the time is kernel
start-up. The kernel is this very interpreter (a kernelspec written into a temporary ``JUPYTER_PATH``), so a fresh
``bash scripts/test.sh`` venv needs no ``ipykernel install``.
"""

import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
KERNEL = "luminate-test"


def test_there_are_notebooks_and_each_has_a_parameter_cell():
    assert len(NOTEBOOKS) >= 5, [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        assert any("LUMINATE_NOTEBOOK_STEPS" in s for s in sources[:2]), f"{path.name}: no parameter cell"
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), \
            f"{path.name}: commit notebooks without outputs"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for the running interpreter, found through JUPYTER_PATH."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Luminate tests", "language": "python"}))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("LUMINATE_NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("LUMINATE_CACHE", str(tmp_path / "cache"))  # tiny renders never reach the user's cache
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    shown = [o for o in outputs if o.get("output_type") in ("execute_result", "display_data")]
    assert any("image/png" in o["data"] or "text/html" in o["data"] for o in shown), \
        f"{path.name} displays no image or page"
