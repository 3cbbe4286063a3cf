"""Every numbered notebook runs headlessly at the quick run size, whatever matplotlib backend the caller set, and
saves its figures with source data; the evaluation notebooks also run the real screen's path (no planted truth) on a
stand-in screen."""

import json
from pathlib import Path

import pandas as pd
import papermill
import pytest

from cellstudy.evaluation.real_wells import DATA_LABEL
from cellstudy.study import Study

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_committed_notebook_has_parameters_and_no_outputs(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    assert "remove-cell" in code[0]["metadata"]["tags"], "the parameters cell must be left out of the book"
    assert all("hide-input" in cell["metadata"].get("tags", []) for cell in code[1:]), "code must collapse in the book"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_committed_notebook_narrates(notebook):
    """Each cell is a call or a picture: no function is defined in a notebook."""
    code = [
        "".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"
    ]
    assert not [line for source in code for line in source.splitlines() if line.lstrip().startswith("def ")]


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """One build folder shared by the notebooks, which run in order (later ones read earlier results)."""
    return tmp_path_factory.mktemp("build")


def shown_figures(executed: Path) -> int:
    """PNG outputs in an executed notebook (what the book shows)."""
    cells = json.loads(executed.read_text())["cells"]
    return sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_at_quick_size_and_shows_its_figures(notebook, quick_build, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as on headless servers: the notebooks must still embed their figures
    build = quick_build
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / notebook.name),
        cwd=str(notebook.parent),
        parameters={"run_size": "quick", "build_dir": str(build)},
        progress_bar=False,
    )
    figures = sorted((build / "figures").glob(f"{notebook.stem}_*.png"))
    assert figures, "the notebook saved no figure"
    assert all(png.stat().st_size > 1000 for png in figures)
    assert shown_figures(tmp_path / notebook.name) > 0, "the executed notebook carries no figure"


STAND_IN = """# test only: the real screen's path (no planted truth) at quick size, on the quick build's screen
import dataclasses
from cellstudy.study import runsize
run_size = dataclasses.replace(runsize.QUICK, planted_truth=False)
"""
REAL_PATH_NOTEBOOKS = [nb for nb in NOTEBOOKS if nb.stem[:2] in ("05", "06", "07", "08")]


def with_cell_after_parameters(notebook: Path, source: str, out: Path) -> Path:
    """A copy of ``notebook`` at ``out`` with a code cell of ``source`` right after its parameters cell."""
    content = json.loads(notebook.read_text())
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    first = next(i for i, c in enumerate(content["cells"]) if "parameters" in c["metadata"].get("tags", []))
    content["cells"].insert(first + 1, cell)
    out.write_text(json.dumps(content))
    return out


def test_notebooks_take_the_real_screens_path_without_planted_truth(quick_build, tmp_path):
    """Notebooks 5-8 as on the real plates (no oracle, no planted truth), on the quick build's simulated screen."""
    for notebook in REAL_PATH_NOTEBOOKS:
        patched = with_cell_after_parameters(notebook, STAND_IN, tmp_path / f"in_{notebook.name}")
        papermill.execute_notebook(
            str(patched),
            str(tmp_path / notebook.name),
            cwd=str(notebook.parent),
            parameters={"build_dir": str(quick_build)},
            progress_bar=False,
        )
    results = quick_build / "results"
    assert set(pd.read_csv(results / "06_evaluation" / "summary.csv")["method"]) == set(Study.create("full").methods())
    ranks = pd.read_csv(results / "07_applications" / "target_ranks.csv")
    assert set(ranks["method"]) == {"dino", "mae", "classical"}
    assert not ranks["driven_by_unannotated_gene"].any() and "true_rank" not in ranks
    claims_table = pd.read_csv(results / "08_summary" / "claims_summary.csv")
    assert set(claims_table["data"]) == {"simulated screen", DATA_LABEL}  # the stand-in is labelled as what it is
    assert claims_table.loc[claims_table["claim"].str.startswith("R1"), "data"].tolist() == [DATA_LABEL]
    real = pd.read_csv(results / "06_evaluation" / "real_wells_per_unit.csv")
    assert real.empty or set(real["test"]) == {"study", "paper"}
