"""The tutorial's notebooks (docs/tutorial.ipynb, docs/tutorial.zh.ipynb) are made from its Markdown by
docs/make_notebooks.py (jupytext): each holds its Markdown's cells, no outputs, exactly the
Markdown's ```python blocks as code cells (no Keras or shell line becomes one), and runs top to bottom
in a Jupyter kernel (nbclient) on the first 1,000 training and 500 test digits, as
tests/test_tutorial.py runs the Markdown; there the progress bar draws as a widget and the pictures
show inline.

The subset comes from a setup cell that this test puts before the notebook's first cell; the
committed notebooks have no such cell.
"""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from .test_tutorial import TEST_DIGITS, TRAIN_DIGITS, python_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAIRS = {"tutorial.md": "tutorial.ipynb", "tutorial.zh.md": "tutorial.zh.ipynb"}
CELL_TIMEOUT = 300          # seconds for one cell; the whole run takes well under a minute here
WIDGET = "application/vnd.jupyter.widget-view+json"

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")


def make_notebooks():
    spec = importlib.util.spec_from_file_location("make_notebooks", DOCS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    markdown = DOCS / request.param
    return markdown, DOCS / PAIRS[request.param]


def committed(path):
    return nbformat.read(path, as_version=4)


def test_each_notebook_is_made_from_its_markdown(pair):
    markdown, notebook = pair
    made = make_notebooks().notebook_from_markdown(markdown.read_text(encoding="utf-8"))
    found = committed(notebook)
    assert [(c.cell_type, c.source) for c in found.cells] == [(c.cell_type, c.source) for c in made.cells], (
        f"docs/{notebook.name} has drifted from docs/{markdown.name}: run python3 docs/make_notebooks.py")
    assert found.metadata == made.metadata, f"docs/{notebook.name}'s metadata: run python3 docs/make_notebooks.py"


def test_the_markdown_reads_back_as_itself(pair):
    """Pairing is safe: jupytext writes the notebook's cells back as the very same Markdown."""
    markdown, _ = pair
    text = markdown.read_text(encoding="utf-8")
    assert jupytext.writes(jupytext.reads(text, fmt="md"), fmt="md") == text


def test_the_code_cells_are_the_python_blocks_and_hold_no_outputs(pair):
    markdown, notebook = pair
    cells = committed(notebook).cells
    code = [cell for cell in cells if cell.cell_type == "code"]
    assert [cell.source for cell in code] == [block.rstrip("\n") for _, block in
                                              python_blocks(markdown.read_text(encoding="utf-8"))]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    raw = json.loads(notebook.read_text(encoding="utf-8"))
    assert raw["metadata"]["kernelspec"]["name"] == "python3"


def setup_cell(mnist_dir, workdir):
    """Code run before the notebook's own: import minialex from this checkout, work in ``workdir``, and
    serve the first digits of MNIST wherever the notebook calls load_mnist."""
    return "\n".join([
        "import os, sys",
        f"assert os.path.realpath(sys.executable) == {os.path.realpath(sys.executable)!r}, sys.executable",
        f"sys.path.insert(0, {str(ROOT)!r})",
        f"os.chdir({str(workdir)!r})",
        "import minialex.data, minialex.data.mnist",
        "from minialex import backend",
        "backend.set_backend('numpy')",
        f"(_x, _y), (_xt, _yt) = minialex.data.load_mnist({str(mnist_dir)!r})",
        f"_subset = (_x[:{TRAIN_DIGITS}], _y[:{TRAIN_DIGITS}]), (_xt[:{TEST_DIGITS}], _yt[:{TEST_DIGITS}])",
        "minialex.data.load_mnist = minialex.data.mnist.load_mnist = lambda data_dir=None, **options: _subset",
    ])


def outputs(notebook, kind):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
            if output.output_type == kind]


def this_interpreters_kernel(folder, monkeypatch):
    """Make the notebooks' kernel, "python3", this interpreter, whatever kernels the machine has:
    a kernel spec written under ``folder``, which goes first on JUPYTER_PATH."""
    kernelspec = pytest.importorskip("ipykernel.kernelspec")
    kernelspec.write_kernel_spec(str(folder / "kernels" / "python3"))     # argv: sys.executable -m ipykernel_launcher
    monkeypatch.setenv("JUPYTER_PATH", str(folder))


def test_the_notebook_runs_top_to_bottom(pair, mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")   # the tutorial draws its pictures
    pytest.importorskip("h5py")         # and reads the Keras notebook's weights
    nbclient = pytest.importorskip("nbclient")
    this_interpreters_kernel(tmp_path / "jupyter", monkeypatch)
    workdir = tmp_path / "work"
    workdir.mkdir()
    _, path = pair
    notebook = committed(path)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(setup_cell(mnist_dir, workdir)))
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()

    streams = "".join(output.text for output in outputs(notebook, "stream"))
    assert "Test accuracy:" in streams and "Epoch 5/5" in streams
    assert "the same digit for all 50: True" in streams        # minialex against Keras, the same weights
    warnings = [output.text for output in outputs(notebook, "stream") if output.name == "stderr"
                and ("minialex" in output.text or "tqdm" in output.text)]
    assert not warnings, f"the notebook warns:\n{''.join(warnings)}"
    assert not outputs(notebook, "execute_result"), "a cell ends in a value that Jupyter would show as its repr"
    shown = outputs(notebook, "display_data")
    assert sum("image/png" in output.data for output in shown) >= 6, "the pictures do not show inline"
    if importlib.util.find_spec("ipywidgets"):
        assert any(WIDGET in output.data for output in shown), "the progress bar does not draw as a widget"
    assert sorted(p.name for p in (workdir / "pictures").iterdir()) == sorted(
        ["history.png", "filters_before.png", "filters_after.png", "feature_maps.png", "confusion_matrix.png",
         "misclassified.png"])
