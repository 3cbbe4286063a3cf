"""Every numbered notebook runs headlessly in the quick profile and saves its figures with source data."""

import json
from pathlib import Path

import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_committed_notebook_has_parameters_and_no_outputs(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """One build folder shared by the notebooks, which run in order (later ones read earlier results)."""
    return tmp_path_factory.mktemp("build")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_in_quick_profile(notebook, quick_build, tmp_path):
    build = quick_build
    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), cwd=str(notebook.parent),
                               parameters={"profile": "quick", "build_dir": str(build)}, progress_bar=False)
    figures = sorted((build / "figures").glob(f"{notebook.stem}_*.png"))
    assert figures, "the notebook saved no figure"
    assert all(png.stat().st_size > 1000 for png in figures)
