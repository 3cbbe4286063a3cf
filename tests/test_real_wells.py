"""Tests for cellstudy.data.real_wells: the long table's checks and pivot on a table written in its exact layout,
and the real file against the counts measured independently when it was added (15,163 of the 15,275 analysed
wells; 53 of them without any phenotype value)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellstudy.data import cpjump1, real_wells

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (DATA / "cpjump1" / real_wells.REAL_WELLS_FILE).is_file(), reason="shared data absent"
)


def long_table(wells: list[tuple[str, str, int]], seed: int = 0) -> pd.DataFrame:
    """The published long layout: a row per (plate, well, model, phenotype), with the file's other columns."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "statistical_test": "median_aggregated",
            "comparison_metric": "median_aggregated",
            "comparison_metric_value": rng.uniform(),
            "p_value": np.nan,
            "Metadata_Plate": plate,
            "Metadata_Well": well,
            "Metadata_model_type": model,
            "Cell_type": "U2OS",
            "treatment": "DMSO",
            "treatment_type": "compound",
            "Time": 48,
            "control_type": "negcon",
            "cell_count": cells,
            "phenotype": phenotype,
        }
        for plate, well, cells in wells
        for model in real_wells.MODEL_TYPES
        for phenotype in real_wells.PHENOTYPES
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def written(tmp_path) -> tuple[Path, pd.DataFrame]:
    table = long_table([("P1", "A01", 300), ("P1", "A02", 120), ("P2", "B05", 80)])
    path = tmp_path / "wells.parquet"
    table.to_parquet(path)
    return path, table


def test_wide_puts_each_phenotype_of_each_well_in_its_column(written):
    path, table = written
    wide = real_wells.wide(real_wells.read_long(path), "shuffled")
    assert wide[["Metadata_Plate", "Metadata_Well"]].values.tolist() == [["P1", "A01"], ["P1", "A02"], ["P2", "B05"]]
    assert wide["Metadata_Count_Cells"].tolist() == [300, 120, 80]
    assert wide.columns[3:].tolist() == real_wells.feature_names()
    row = table[(table["Metadata_Well"] == "A02") & (table["Metadata_model_type"] == "shuffled")]
    expected = row.set_index("phenotype")["comparison_metric_value"].reindex(list(real_wells.PHENOTYPES))
    np.testing.assert_array_equal(wide.iloc[1][real_wells.feature_names()].to_numpy(dtype=float), expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: pd.concat([t, t.iloc[[4]]]), "repeat a .plate, well, model, phenotype"),
        (lambda t: t[t["Metadata_model_type"] == "final"], "Metadata_model_type has \\['final'\\]"),
        (lambda t: t.drop(columns="cell_count"), "lacks column.*cell_count"),
        (lambda t: t.assign(cell_count=np.arange(len(t))), "more than one cell count"),
        (lambda t: t[t["phenotype"] != "Hole"], "phenotype has"),
    ],
)
def test_a_malformed_table_is_refused_by_name(written, tmp_path, change, message):
    _, table = written
    path = tmp_path / "bad.parquet"
    change(table).to_parquet(path)
    with pytest.raises(ValueError, match=f"bad.parquet.*{message}"):
        real_wells.read_long(path)


def test_an_unknown_model_type_is_refused(written):
    with pytest.raises(ValueError, match="model_type"):
        real_wells.wide(real_wells.read_long(written[0]), "trained")


@needs_shared
def test_the_real_table_covers_the_design_as_measured_when_it_was_added():
    design = cpjump1.well_table(profiled_only=True)
    final = real_wells.load_real_wells("final", DATA)
    covered = real_wells.coverage(final, design)
    assert (covered["design_wells"], covered["found"], len(covered["missing"])) == (15_275, 15_163, 112)
    assert covered["all_phenotypes_missing"] == 53
    shuffled = real_wells.load_real_wells("shuffled", DATA)
    assert final[["Metadata_Plate", "Metadata_Well"]].equals(shuffled[["Metadata_Plate", "Metadata_Well"]])
    values = final[real_wells.feature_names()].to_numpy(dtype=float)
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1  # medians of probabilities
    assert final["Metadata_negcon"].dtype == bool and final["Metadata_negcon"].any()
