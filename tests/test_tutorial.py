"""The tutorials stay true: their ```python blocks run, top to bottom in one namespace, on the first
1,000 training and 500 test digits of the real MNIST (the English file's; the Chinese one holds the same
code, and tests/test_notebooks.py runs both as notebooks); they walk the notebook's seven steps;
every picture they show exists; the twins' loops they quote stand as quoted in minialex/naive.py; the
functions and files they name exist.

Blocks fenced ```python run; the Keras lines (```python keras .noeval), the quoted loops
(```python twin .noeval) and shell commands do not.
"""
import importlib
import re
import textwrap
from pathlib import Path

import pytest

import minialex.data
import minialex.data.mnist
from minialex import backend

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
STEPS = {
    "tutorial.md": ["Step 1: Imports", "Step 2: Data", "Step 3: Preprocessing", "Step 4: Building the network",
                    "Step 5: Compiling", "Step 6: Training", "Step 7: Testing"],
    "tutorial.zh.md": ["第 1 步：导入", "第 2 步：数据", "第 3 步：预处理", "第 4 步：搭建网络",
                       "第 5 步：编译", "第 6 步：训练", "第 7 步：测试"],
}
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
DOTTED_NAME = re.compile(r"`(minialex(?:\.\w+)+)`")
REPO_PATH = re.compile(r"`((?:minialex|tests|benchmarks|docs|examples)/[\w./-]*\w)`")
#: functions the text names, without their module, as the path a fast layer runs
FAST_PATHS = {"im2col": "minialex.layers.conv", "col2im": "minialex.layers.conv",
              "col2im_by_taps": "minialex.layers.conv", "max_over_taps": "minialex.layers.pool",
              "route_to_first_max": "minialex.layers.pool", "band_matrix": "minialex.layers.lrn",
              "power": "minialex.layers.lrn"}
TRAIN_DIGITS, TEST_DIGITS = 1000, 500


def python_blocks(text):
    """[(line number of the block's first line, code)] for each block fenced exactly ```python."""
    return [(text.count("\n", 0, match.start("code")) + 1, match["code"])
            for match in FENCE.finditer(text) if match["info"].strip() == "python"]


def blocks(text, info):
    """The code of each block whose info string starts with ``info`` (e.g. 'python twin')."""
    return [match["code"] for match in FENCE.finditer(text) if match["info"].strip().startswith(info)]


@pytest.fixture(params=sorted(STEPS))
def tutorial(request):
    path = DOCS / request.param
    return path, path.read_text(encoding="utf-8")


def test_the_seven_steps_are_there_in_order(tutorial):
    path, text = tutorial
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    steps = [heading for heading in headings if heading in STEPS[path.name]]
    assert steps == STEPS[path.name]


def test_every_picture_shown_exists(tutorial):
    path, text = tutorial
    links = IMAGE.findall(text)
    assert links, f"{path.name} shows no pictures"
    for link in links:
        assert (path.parent / link).is_file(), f"{path.name} links to {link}, which does not exist"


def test_every_file_linked_exists(tutorial):
    """Links to files beside the tutorial (the other language, the notebooks, launches.md) lead somewhere."""
    path, text = tutorial
    links = [link for link in re.findall(r"\]\(([^)\s#]+)\)", text) if "://" not in link]
    assert any(link.endswith(".ipynb") for link in links), f"{path.name} does not link its notebook"
    for link in links:
        assert (path.parent / link).exists(), f"{path.name} links to {link}, which does not exist"


def test_the_twins_loops_stand_as_quoted(tutorial):
    """Each ```python twin block is a run of consecutive lines of minialex/naive.py, indentation aside."""
    path, text = tutorial
    source = (ROOT / "minialex" / "naive.py").read_text(encoding="utf-8").splitlines()
    quotes = blocks(text, "python twin")
    assert len(quotes) >= 6, f"{path.name} quotes {len(quotes)} twins"
    for quote in quotes:
        lines = textwrap.dedent(quote).rstrip("\n").split("\n")
        found = any(textwrap.dedent("\n".join(source[i:i + len(lines)])).split("\n") == lines
                    for i in range(len(source) - len(lines) + 1))
        assert found, f"{path.name} quotes lines that minialex/naive.py does not hold:\n{quote}"


def test_the_functions_and_files_named_exist(tutorial):
    path, text = tutorial
    for name in set(DOTTED_NAME.findall(text)):
        module, _, attribute = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ImportError:
            assert hasattr(importlib.import_module(module), attribute), f"{path.name} names {name}, which does not exist"
    for link in set(REPO_PATH.findall(text)):
        assert (ROOT / link).exists(), f"{path.name} names {link}, which does not exist"
    for function, module in FAST_PATHS.items():
        if f"`{function}" in text:
            assert callable(getattr(importlib.import_module(module), function, None)), \
                f"{path.name} names {function} in {module}, which does not exist"


def test_both_tutorials_hold_the_same_code():
    english, chinese = ((DOCS / name).read_text(encoding="utf-8") for name in sorted(STEPS))
    assert [code for _, code in python_blocks(english)] == [code for _, code in python_blocks(chinese)]


def test_the_code_runs_top_to_bottom(mnist_dir, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")   # the tutorial draws its pictures
    pytest.importorskip("h5py")         # and reads the Keras notebook's weights
    path = DOCS / "tutorial.md"
    text = path.read_text(encoding="utf-8")
    (x_train, y_train), (x_test, y_test) = minialex.data.load_mnist(mnist_dir)
    subset = (x_train[:TRAIN_DIGITS], y_train[:TRAIN_DIGITS]), (x_test[:TEST_DIGITS], y_test[:TEST_DIGITS])

    def load_subset(data_dir=None, **options):
        return subset

    monkeypatch.setenv("MINIALEX_DATA_DIR", str(mnist_dir))
    monkeypatch.setattr(minialex.data, "load_mnist", load_subset)
    monkeypatch.setattr(minialex.data.mnist, "load_mnist", load_subset)
    monkeypatch.chdir(tmp_path)   # the pictures the tutorial draws land here
    namespace = {"__name__": "__tutorial__"}
    try:
        with backend.set_backend("numpy"):
            for line, code in python_blocks(text):
                # Padding with newlines makes a traceback name the tutorial's own line numbers.
                exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
    finally:
        if "plt" in namespace:
            namespace["plt"].close("all")       # the figures that show the pictures in a notebook

    history = namespace["history"].history
    assert len(history["loss"]) == 5 and history["loss"][-1] < history["loss"][0]
    assert namespace["test_accuracy"] > 0.5
    assert namespace["difference"].max() <= 1e-5      # minialex and Keras, the same weights: float32 rounding
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == sorted(
        ["history.png", "filters_before.png", "filters_after.png", "feature_maps.png", "confusion_matrix.png",
         "misclassified.png"])
