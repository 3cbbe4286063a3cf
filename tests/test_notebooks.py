"""Every numbered notebook runs headlessly in the quick profile and saves its figures with source data; the
evaluation notebooks also run in the full profile on a stand-in screen."""

import json
from pathlib import Path

import pandas as pd
import papermill
import pytest

from cellstudy import settings

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


STAND_IN_FULL_SCREEN = '''# test only: the "full" profile at quick size, on the quick build's simulated screen (no Gallery, no GPU)
from cellstudy import settings
_screen_fields, _classical_wells_path = settings.screen_fields, settings.classical_wells_path
settings.screen_fields = lambda profile, build_dir, **options: _screen_fields("quick", build_dir, **options)
settings.classical_wells_path = lambda profile, build_dir: _classical_wells_path("quick", build_dir)
settings.TRAINING_PROFILE["full"] = settings.TRAINING_PROFILE["quick"]
settings.TRAINING_OVERRIDES.update({("full", m): settings.TRAINING_OVERRIDES[("quick", m)] for m in ("mae", "dino")})
for sizes in (settings.MASK_SWEEP_OVERRIDES, settings.LABEL_EFFICIENCY_OVERRIDES, settings.MAP_NULL_SIZE,
              settings.MASK_SWEEP_TILES_PER_FIELD):
    sizes["full"] = sizes["quick"]
'''
FULL_PROFILE_NOTEBOOKS = [nb for nb in NOTEBOOKS if nb.stem[:2] in ("05", "06", "07", "08")]


def with_cell_after_parameters(notebook: Path, source: str, out: Path) -> Path:
    """A copy of ``notebook`` at ``out`` with a code cell of ``source`` right after its parameters cell."""
    content = json.loads(notebook.read_text())
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    first = next(i for i, c in enumerate(content["cells"]) if "parameters" in c["metadata"].get("tags", []))
    content["cells"].insert(first + 1, cell)
    out.write_text(json.dumps(content))
    return out


def test_full_profile_notebooks_run_on_a_stand_in_screen(quick_build, tmp_path):
    """Notebooks 5-8 with ``profile = "full"``: no oracle, no planted truth, every result labelled CPJUMP1."""
    for notebook in FULL_PROFILE_NOTEBOOKS:
        patched = with_cell_after_parameters(notebook, STAND_IN_FULL_SCREEN, tmp_path / f"in_{notebook.name}")
        papermill.execute_notebook(str(patched), str(tmp_path / notebook.name), cwd=str(notebook.parent),
                                   parameters={"profile": "full", "build_dir": str(quick_build)}, progress_bar=False)
    results = quick_build / "results"
    assert set(pd.read_csv(results / "06_evaluation" / "summary.csv")["method"]) == set(settings.profile_methods("full"))
    ranks = pd.read_csv(results / "07_applications" / "target_ranks.csv")
    assert set(ranks["method"]) == {"dino", "mae", "classical"}
    assert not ranks["driven_by_unannotated_gene"].any() and "true_rank" not in ranks
    claims_table = pd.read_csv(results / "08_summary" / "claims_summary.csv")
    assert set(claims_table["data"]) == {"CPJUMP1 screen"}
