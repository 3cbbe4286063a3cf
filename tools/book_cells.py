"""Tag an executed notebook's cells for the book: the parameters, as given and as papermill injected them, are
removed from the page, and every other code cell is collapsed behind a toggle (its output shown).

Run as ``python tools/book_cells.py NOTEBOOK.ipynb`` (``make reproduce`` does, after papermill). The committed
notebooks carry the same tags, so JupyterLab users see them too; papermill's injected cell is the one this adds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PARAMETER_TAGS = {"parameters", "injected-parameters"}
"""Cells that hold a notebook's parameters."""
REMOVE, HIDE_INPUT = "remove-cell", "hide-input"
"""Jupyter Book's tags: leave a cell out of the page; show its output with the code behind a toggle."""


def book_tags(cell: dict) -> list[str]:
    """The cell's tags with the book's tag added: remove parameters, collapse other code."""
    tags = list(cell.get("metadata", {}).get("tags", []))
    if cell["cell_type"] != "code":
        return tags
    wanted = REMOVE if PARAMETER_TAGS & set(tags) else HIDE_INPUT
    return tags if wanted in tags else [*tags, wanted]


def tag_notebook(path: Path) -> None:
    """Add :func:`book_tags` to every cell of the notebook at ``path``, in place (written whole, then renamed)."""
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        tags = book_tags(cell)
        if tags:
            cell.setdefault("metadata", {})["tags"] = tags
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        tag_notebook(Path(argument))
