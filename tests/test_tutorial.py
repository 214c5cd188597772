"""The tutorials stay true: their ```python blocks run, top to bottom in one namespace per file, on the
first 1,000 training and 500 test digits of the real MNIST; they walk the notebook's seven steps;
every picture they show exists.

Blocks fenced ```python run; the Keras lines, fenced ```python keras, and shell commands do not.
"""
import re
from pathlib import Path

import pytest

import minialex.data
import minialex.data.mnist
from minialex import backend

DOCS = Path(__file__).resolve().parents[1] / "docs"
STEPS = {
    "tutorial.md": ["Step 1: Imports", "Step 2: Data", "Step 3: Preprocessing", "Step 4: Building the network",
                    "Step 5: Compiling", "Step 6: Training", "Step 7: Testing"],
    "tutorial.zh.md": ["第 1 步：导入", "第 2 步：数据", "第 3 步：预处理", "第 4 步：搭建网络",
                       "第 5 步：编译", "第 6 步：训练", "第 7 步：测试"],
}
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
TRAIN_DIGITS, TEST_DIGITS = 1000, 500


def python_blocks(text):
    """[(line number of the block's first line, code)] for each block fenced exactly ```python."""
    return [(text.count("\n", 0, match.start("code")) + 1, match["code"])
            for match in FENCE.finditer(text) if match["info"].strip() == "python"]


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


def test_both_tutorials_hold_the_same_code():
    english, chinese = ((DOCS / name).read_text(encoding="utf-8") for name in sorted(STEPS))
    assert [code for _, code in python_blocks(english)] == [code for _, code in python_blocks(chinese)]


def test_the_code_runs_top_to_bottom(tutorial, mnist_dir, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")   # the tutorial draws its pictures
    path, text = tutorial
    (x_train, y_train), (x_test, y_test) = minialex.data.load_mnist(mnist_dir)
    subset = (x_train[:TRAIN_DIGITS], y_train[:TRAIN_DIGITS]), (x_test[:TEST_DIGITS], y_test[:TEST_DIGITS])

    def load_subset(data_dir=None, **options):
        return subset

    monkeypatch.setenv("MINIALEX_DATA_DIR", str(mnist_dir))
    monkeypatch.setattr(minialex.data, "load_mnist", load_subset)
    monkeypatch.setattr(minialex.data.mnist, "load_mnist", load_subset)
    monkeypatch.chdir(tmp_path)   # the pictures the tutorial draws land here
    namespace = {"__name__": "__tutorial__"}
    with backend.set_backend("numpy"):
        for line, code in python_blocks(text):
            # Padding with newlines makes a traceback name the tutorial's own line numbers.
            exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)

    history = namespace["history"].history
    assert len(history["loss"]) == 5 and history["loss"][-1] < history["loss"][0]
    assert namespace["test_accuracy"] > 0.5
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == sorted(
        ["history.png", "filters_before.png", "filters_after.png", "feature_maps.png", "confusion_matrix.png",
         "misclassified.png"])
