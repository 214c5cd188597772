"""Make the tutorial's notebooks from its Markdown: tutorial.md -> tutorial.ipynb and
tutorial.zh.md -> tutorial.zh.ipynb, beside this file.

    python3 docs/make_notebooks.py            # rewrite both notebooks from the Markdown
    python3 docs/make_notebooks.py --check    # exit 1, naming each notebook that differs

The Markdown is the one source: edit it, then run this (tests/test_notebooks.py fails when a notebook
drifts from its Markdown). jupytext reads the Markdown: each ```python block becomes a code cell and
everything else Markdown cells. A fence whose language jupytext would run but that must not run carries
jupytext's ``.noeval`` attribute and stays Markdown: the notebook's Keras lines (```python keras
.noeval), the twins' quoted loops (```python twin .noeval) and shell commands (```bash .noeval);
```text blocks have no such language and stay Markdown anyway.

The notebooks are written without outputs, for the Python 3 kernel, and paired with their Markdown
(jupytext's formats "ipynb,md": in Jupyter with jupytext, saving the notebook writes the Markdown,
which reads back to the same cells). Cell ids come from each cell's content, so making a notebook twice
gives the same file.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import jupytext
import nbformat

DOCS = Path(__file__).resolve().parent
PAIRS = {"tutorial.md": "tutorial.ipynb", "tutorial.zh.md": "tutorial.zh.ipynb"}
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
JUPYTEXT = {"formats": "ipynb,md", "main_language": "python", "cell_metadata_filter": "-all",
            "notebook_metadata_filter": "-all"}


def notebook_from_markdown(text: str) -> nbformat.NotebookNode:
    """The notebook made from a tutorial's Markdown text: its cells, no outputs, stable ids."""
    notebook = jupytext.reads(text, fmt="md")
    notebook.metadata = nbformat.from_dict({"jupytext": JUPYTEXT, "kernelspec": KERNELSPEC,
                                            "language_info": {"name": "python"}})
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    seen: dict[str, int] = {}
    for cell in notebook.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode("utf-8")).hexdigest()[:8]
        seen[digest] = seen.get(digest, -1) + 1
        cell.id = digest if seen[digest] == 0 else f"{digest}-{seen[digest]}"
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(notebook)
    return notebook


def notebook_text(markdown_path: Path) -> str:
    """The .ipynb file's text for the Markdown at ``markdown_path``."""
    notebook = notebook_from_markdown(markdown_path.read_text(encoding="utf-8"))
    return nbformat.writes(notebook) + "\n"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook differs")
    args = parser.parse_args(argv)
    stale = []
    for markdown, notebook in PAIRS.items():
        text, path = notebook_text(DOCS / markdown), DOCS / notebook
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(notebook)
        if not args.check:
            write_atomically(path, text)
            print(f"wrote docs/{notebook} from docs/{markdown}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python3 docs/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
