"""Tests for cellstudy.data.published: files written here in the published per-plate format, and the real paper table."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellstudy.data import cpjump1, gallery_mirror, published
from cellstudy.evaluation import retrieval
from cellstudy.profiling import profiles

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METADATA = DATA / "cpjump1" / "metadata"
pytestmark = pytest.mark.skipif(not (METADATA / "experiment-metadata.tsv").is_file(), reason="shared data absent")
COMPOUND_PLATES = ["BR00116991", "BR00116992"]  # A549, 24 h
CRISPR_PLATES = ["BR00118041", "BR00118042"]  # A549, 96 h
FEATURES = [
    "Cells_AreaShape_Area",
    "Cells_Intensity_MeanIntensity_Mito",
    "Cells_Correlation_Correlation_ER_RNA",
    "Cytoplasm_Texture_Contrast_AGP_3_00_256",
    "Cytoplasm_Granularity_2_RNA",
    "Nuclei_AreaShape_Eccentricity",
    "Nuclei_Intensity_IntegratedIntensity_DNA",
    "Nuclei_Texture_AngularSecondMoment_DNA_5_00_256",
]
FAST = retrieval.MapSettings(null_size=500)


def planted_features(wells: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Per gene a random direction; a compound carries the mean of its perturbed targets', a guide its gene's."""
    rng = np.random.default_rng(seed)
    genes = {gene: rng.normal(size=len(FEATURES)) for gene in cpjump1.genes(METADATA)}
    own = {}

    def effect(row) -> np.ndarray:
        if row.Metadata_negcon or row.Metadata_pert_type == cpjump1.EMPTY_WELL:
            return np.zeros(len(FEATURES))
        targets = [genes[t] for t in str(row.Metadata_target_list).split("|") if t in genes]
        if targets:
            return np.mean(targets, axis=0)
        return own.setdefault(row.Metadata_broad_sample, rng.normal(size=len(FEATURES)))

    signal = np.stack([effect(row) for row in wells.itertuples()])
    return signal + rng.normal(scale=0.3, size=signal.shape)


def write_plate(folder: Path, plate: str, table: pd.DataFrame) -> Path:
    path = folder / plate / f"{plate}{published.PROFILE_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, compression="gzip")
    return path


@pytest.fixture(scope="module")
def design() -> pd.DataFrame:
    return cpjump1.well_table(METADATA, plates=COMPOUND_PLATES + CRISPR_PLATES, profiled_only=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory, design) -> tuple[Path, pd.DataFrame]:
    """Published-format files of four plates; returns the folder and what was written."""
    folder = tmp_path_factory.mktemp("profiles") / cpjump1.PAPER_BATCH
    values = pd.DataFrame(planted_features(design), columns=FEATURES, index=design.index)
    table = pd.concat([gallery_mirror.published_metadata(design), values], axis=1)
    for plate, rows in table.groupby("Metadata_Plate"):
        write_plate(folder, plate, rows)
    return folder, table


def test_loads_every_well_with_design_metadata_and_the_written_features(written, design):
    folder, table = written
    loaded = published.load_published_profiles(folder, COMPOUND_PLATES + CRISPR_PLATES, METADATA)
    assert len(loaded) == len(table)
    assert list(loaded.columns[: len(cpjump1.WELL_COLUMNS)]) == cpjump1.WELL_COLUMNS
    assert profiles.feature_columns(loaded) == FEATURES
    assert {"Metadata_Assay_Plate_Barcode", "Metadata_target"} <= set(loaded.columns)
    keyed = loaded.set_index(["Metadata_Plate", "Metadata_Well"])
    expected = table.set_index(["Metadata_Plate", "Metadata_Well"])
    np.testing.assert_allclose(
        keyed.loc[expected.index, FEATURES].to_numpy(), expected[FEATURES].to_numpy(), rtol=1e-12
    )
    solvent = keyed.loc[
        expected.index[expected["Metadata_broad_sample"].isna() & expected["Metadata_control_type"].eq("negcon")]
    ]
    assert set(solvent["Metadata_broad_sample"]) == {"DMSO"} and solvent["Metadata_negcon"].all()
    assert set(keyed.loc[COMPOUND_PLATES[0], "Metadata_timepoint"]) == {24}


def test_the_batch_folder_above_also_works(written):
    folder, _ = written
    loaded = published.load_published_profiles(folder.parent, COMPOUND_PLATES[:1], METADATA)
    assert set(loaded["Metadata_Plate"]) == {COMPOUND_PLATES[0]}


def test_a_missing_plate_is_named(written):
    folder, _ = written
    with pytest.raises(FileNotFoundError, match="BR00117010"):
        published.load_published_profiles(folder, ["BR00117010"], METADATA)


def one_plate(written, tmp_path) -> tuple[Path, pd.DataFrame]:
    _, table = written
    return tmp_path, table[table["Metadata_Plate"] == COMPOUND_PLATES[0]].reset_index(drop=True)


def test_a_file_without_the_well_column_is_named(written, tmp_path):
    folder, plate = one_plate(written, tmp_path)
    path = write_plate(folder, COMPOUND_PLATES[0], plate.drop(columns="Metadata_Well"))
    with pytest.raises(ValueError, match=f"{path.name}.*Metadata_Well"):
        published.load_published_profiles(folder, COMPOUND_PLATES[:1], METADATA)


def test_a_well_outside_the_design_is_named(written, tmp_path):
    folder, plate = one_plate(written, tmp_path)
    plate.loc[0, "Metadata_Well"] = "Q01"
    write_plate(folder, COMPOUND_PLATES[0], plate)
    with pytest.raises(ValueError, match="Q01"):
        published.load_published_profiles(folder, COMPOUND_PLATES[:1], METADATA)


def test_a_sample_that_contradicts_the_design_is_named(written, tmp_path):
    folder, plate = one_plate(written, tmp_path)
    named = plate["Metadata_broad_sample"].notna().idxmax()
    plate.loc[named, "Metadata_broad_sample"] = "BRD-WRONG"
    write_plate(folder, COMPOUND_PLATES[0], plate)
    with pytest.raises(ValueError, match=plate.loc[named, "Metadata_Well"]):
        published.load_published_profiles(folder, COMPOUND_PLATES[:1], METADATA)


def test_features_that_differ_between_plates_are_named(written, tmp_path):
    _, table = written
    for plate in COMPOUND_PLATES:
        rows = table[table["Metadata_Plate"] == plate]
        write_plate(tmp_path, plate, rows.drop(columns=FEATURES[-1]) if plate == COMPOUND_PLATES[1] else rows)
    with pytest.raises(ValueError, match=f"{COMPOUND_PLATES[1]}.*{FEATURES[-1]}"):
        published.load_published_profiles(tmp_path, COMPOUND_PLATES, METADATA)


def test_the_evaluation_runs_end_to_end_and_lines_up_with_the_paper_table(written):
    folder, _ = written
    wells = published.load_published_profiles(folder, COMPOUND_PLATES + CRISPR_PLATES, METADATA)
    summaries = {
        method: retrieval.fraction_retrieved(retrieval.run_tasks(wells, replace(FAST, method=method)))
        for method in ("study", "paper")
    }
    assert (summaries["study"]["fraction_retrieved"] > 0.5).all()  # the planted signal is strong
    summary = summaries["paper"]  # set beside the paper: the paper's test
    assert (
        summary["task"].tolist()
        == [retrieval.COMPOUND_GENE_MATCHING] + [retrieval.REPLICATE_RETRIEVAL] * 2 + [retrieval.SISTER_MATCHING] * 2
    )
    paper = published.load_paper_results(DATA)
    keys = [c for c in retrieval.SUMMARY_COLUMNS if c in summary.columns]
    side_by_side = summary.merge(paper, on=keys, suffixes=("", "_paper"), validate="one_to_one")
    assert len(side_by_side) == len(summary)


def test_paper_results_match_the_csv_read_independently():
    with open(DATA / "cpjump1" / "paper_results" / published.PAPER_RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = published.load_paper_results(DATA)
    assert len(table) == len(rows) == 36
    assert table.groupby("task").size().to_dict() == {
        retrieval.COMPOUND_GENE_MATCHING: 16,
        retrieval.SISTER_MATCHING: 8,
        retrieval.REPLICATE_RETRIEVAL: 12,
    }
    tasks = {"replicability": retrieval.REPLICATE_RETRIEVAL, "matching": retrieval.SISTER_MATCHING}
    for row in (row for row in rows if row["timepoint"]):  # these rows state their hours: "short"/"long" must agree
        hit = table[
            (table["task"] == tasks[row["task"]])
            & (table["Metadata_cell_type"] == row["Cell"])
            & (table["Metadata_modality"] == row["Description"].split("_")[0])
            & (table["Metadata_timepoint"] == int(row["timepoint"]))
        ]
        assert hit["fraction_retrieved"].tolist() == [float(row["fr"])]
    pair = table[
        (table["Metadata_cell_type"] == "U2OS")
        & (table["Metadata_timepoint"] == 48)
        & (table["Metadata_genetic_modality"] == "orf")
        & (table["Metadata_genetic_timepoint"] == 48)
    ]
    assert pair["fraction_retrieved"].tolist() == [0.075]  # compound_U2OS_long-orf_U2OS_short


def test_a_paper_table_with_an_unknown_task_is_named(tmp_path):
    folder = tmp_path / "cpjump1" / "paper_results"
    folder.mkdir(parents=True)
    (folder / published.PAPER_RESULTS_FILE).write_text(
        "task,Description,Cell,timepoint,fr\nprofiling,orf_A549_long,A549,96,0.1\n"
    )
    with pytest.raises(ValueError, match=f"{published.PAPER_RESULTS_FILE}.*profiling"):
        published.load_paper_results(tmp_path)
