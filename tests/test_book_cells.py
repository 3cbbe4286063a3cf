"""Tests for tools/book_cells.py: parameters leave the page, other code collapses, markdown is untouched."""

import json

import book_cells


def test_parameters_are_removed_and_code_collapsed(tmp_path):
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "run_size = 'default'"},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "run_size = 'quick'"},
        {"cell_type": "code", "metadata": {}, "source": "study = Study.create(run_size)"},
        {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": "plt.show()"},
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    book_cells.tag_notebook(path)
    tags = [cell["metadata"].get("tags", []) for cell in json.loads(path.read_text())["cells"]]
    assert tags == [
        [],
        ["parameters", "remove-cell"],
        ["injected-parameters", "remove-cell"],
        ["hide-input"],
        ["hide-input"],
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]
