"""The CPJUMP1 paper's published CellProfiler profiles and fraction-retrieved table.

The Cell Painting Gallery (:mod:`cellstudy.data.gallery`) publishes one well-level profile file per plate,
``cpg0000-jump-pilot/source_4/workspace/profiles/2020_11_04_CPJUMP1/<plate>/<plate>_normalized_feature_select_negcon_batch.csv.gz``:
MAD-robustized to each plate's negative controls, feature-selected over the
batch. :func:`load_published_profiles` reads them into the study's profile
layout, so the same :mod:`cellstudy.evaluation.retrieval` tasks reproduce the paper's table,
which :func:`load_paper_results` reads into the layout of
:func:`cellstudy.evaluation.retrieval.fraction_retrieved` for a side-by-side comparison.
The files are already post-processed, so they go to the tasks as they are, scored with the paper's
significance test wherever the result is set beside the paper's::

    wells = load_published_profiles("profiles/2020_11_04_CPJUMP1")
    results = retrieval.run_tasks(wells, retrieval.MapSettings(method="paper"))
    ours = retrieval.fraction_retrieved(results)
    ours.merge(load_paper_results(), on=columns.SUMMARY_COLUMNS, suffixes=("", "_paper"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cellstudy.columns import (
    COMPOUND_GENE_MATCHING,
    GENETIC_MODALITY,
    GENETIC_TIMEPOINT,
    METADATA_PREFIX,
    PLATE,
    REPLICATE_RETRIEVAL,
    SAMPLE,
    SISTER_MATCHING,
    SUMMARY_COLUMNS,
    WELL,
)
from cellstudy.data import cpjump1
from cellstudy.data.sources import DATASET, data_root

PROFILE_SUFFIX = "_normalized_feature_select_negcon_batch.csv.gz"
"""Published file name after the plate barcode."""
DESIGN_COLUMNS = [column for column in cpjump1.WELL_COLUMNS if column not in (PLATE, WELL)]
"""Metadata taken from the design (:func:`cellstudy.data.cpjump1.well_table`), replacing the file's own."""
PAPER_RESULTS_FILE = "cellprofiler_fraction_retrieved.csv"
"""The paper's fraction-retrieved table, in ``<data root>/cpjump1/paper_results``."""
PAPER_TASKS = {
    "replicability": REPLICATE_RETRIEVAL,
    "matching": SISTER_MATCHING,
    "gene_compound_matching": COMPOUND_GENE_MATCHING,
}
"""The paper's task names -> the study's."""
TIME_POINTS = {
    "compound": {"short": 24, "long": 48},
    "crispr": {"short": 96, "long": 144},
    "orf": {"short": 48, "long": 96},
}
"""Hours of the paper's "short" and "long" time points per modality."""


def profile_path(folder: str | os.PathLike, plate: str, batch: str = cpjump1.PAPER_BATCH) -> Path:
    """The published file of ``plate``: ``<folder>/<plate>/...``, or ``<folder>/<batch>/<plate>/...`` if that exists.

    Raises
    ------
    FileNotFoundError
        Neither exists (the message names the plate and both paths).
    """
    name = f"{plate}{PROFILE_SUFFIX}"
    candidates = [Path(folder) / plate / name, Path(folder) / batch / plate / name]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"published profiles of plate {plate} not found; looked for {[str(p) for p in candidates]}")


def _read_plate(path: Path, plate: str) -> pd.DataFrame:
    """One published file, checked to hold ``plate``'s wells, each once."""
    table = pd.read_csv(path, low_memory=False)
    missing = [column for column in (PLATE, WELL) if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    other = sorted(set(table[PLATE].astype(str)) - {plate})
    if other:
        raise ValueError(f"{path}: rows of plate(s) {other}, expected only plate {plate}")
    repeated = table.loc[table[WELL].duplicated(), WELL].tolist()
    if repeated:
        raise ValueError(f"{path}: well(s) {repeated} listed more than once")
    return table.assign(**{PLATE: plate})


def _feature_names(table: pd.DataFrame) -> list[str]:
    return [column for column in table.columns if not column.startswith(METADATA_PREFIX)]


def _join_design(table: pd.DataFrame, design: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The file's rows with the design's metadata, after checking the two agree on wells and samples."""
    joined = table.merge(design, on=[PLATE, WELL], how="left", suffixes=("_file", ""), indicator=True)
    unknown = joined.loc[joined["_merge"] == "left_only", WELL].tolist()
    if unknown:
        raise ValueError(f"{path}: well(s) {unknown} are not in the CPJUMP1 design of this plate")
    sample = SAMPLE
    if f"{sample}_file" in joined.columns:
        named = joined[f"{sample}_file"].notna()
        disagree = joined.loc[named & (joined[f"{sample}_file"] != joined[sample]), WELL].tolist()
        if disagree:
            raise ValueError(f"{path}: well(s) {disagree} hold a broad_sample that differs from the design")
    return joined.drop(
        columns=["_merge", *[f"{column}_file" for column in DESIGN_COLUMNS if f"{column}_file" in joined]]
    )


def load_published_profiles(
    folder: str | os.PathLike,
    plates: Sequence[str] | None = None,
    metadata_folder: str | os.PathLike | None = None,
    batch: str = cpjump1.PAPER_BATCH,
) -> pd.DataFrame:
    """Well-level profiles of ``plates`` from the published files, in the study's profile layout.

    Parameters
    ----------
    folder
        The batch folder (``.../profiles/2020_11_04_CPJUMP1``) or the folder above it.
    plates
        Plate barcodes; default the 40 plates the paper analyses.
    metadata_folder
        The CPJUMP1 design files; default :func:`cellstudy.data.cpjump1.metadata_folder`.
    batch
        The experiment batch (sub-folder name and design conditions).

    Returns
    -------
    One row per published well: the design's :data:`cellstudy.data.cpjump1.WELL_COLUMNS`
    (which replace the file's columns of the same name, e.g. the missing
    ``broad_sample`` of DMSO and empty wells), the file's other ``Metadata_*``
    columns, then the feature columns, shared by every plate.

    Raises
    ------
    FileNotFoundError
        A plate's file is missing (the message names the plate and paths).
    ValueError
        A file lacks ``Metadata_Plate``/``Metadata_Well``, holds another plate's
        rows, a well twice, a well outside the design or a sample that disagrees
        with the design, or its features differ from the first plate's (the
        message names the file and the wells or columns).
    """
    plates = cpjump1.analysed_plates(metadata_folder) if plates is None else list(plates)
    paths = {plate: profile_path(folder, plate, batch) for plate in plates}
    design = cpjump1.well_table(metadata_folder, plates=plates, batch=batch)
    tables, features = [], None
    for plate, path in tqdm(paths.items(), desc="published profiles", leave=False):
        table = _join_design(_read_plate(path, plate), design, path)
        if features is None:
            features = _feature_names(table)
        elif _feature_names(table) != features:
            different = sorted(set(_feature_names(table)) ^ set(features))
            raise ValueError(f"{path}: feature columns differ from plate {plates[0]}'s, e.g. {different[:5]}")
        tables.append(table)
    profiles = pd.concat(tables, ignore_index=True)
    extra = [c for c in profiles.columns if c.startswith(METADATA_PREFIX) and c not in cpjump1.WELL_COLUMNS]
    return profiles[[*cpjump1.WELL_COLUMNS, *extra, *features]]


def _parse_condition(description: str, path: Path) -> tuple[str, str, int]:
    """``"compound_A549_short"`` -> ``("compound", "A549", 24)``."""
    parts = description.split("_")
    if len(parts) != 3 or parts[0] not in TIME_POINTS or parts[2] not in TIME_POINTS[parts[0]]:
        raise ValueError(f"{path}: cannot read condition {description!r} (expected e.g. 'compound_A549_short')")
    modality, cell_type, time = parts
    return modality, cell_type, TIME_POINTS[modality][time]


def load_paper_results(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's CellProfiler fraction retrieved, in the layout of :func:`cellstudy.evaluation.retrieval.fraction_retrieved`.

    Parameters
    ----------
    root
        Data root holding ``cpjump1/paper_results``; default :func:`cellstudy.data.sources.data_root`.

    Returns
    -------
    :data:`cellstudy.columns.SUMMARY_COLUMNS` and ``fraction_retrieved``; time
    points in hours; the genetic columns are filled for compound-gene matching
    only (the compound's condition is in the other columns).

    Raises
    ------
    FileNotFoundError
        The file is missing.
    ValueError
        A column, task name or condition cannot be read (the message names the file).
    """
    path = data_root(root) / DATASET / "paper_results" / PAPER_RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"paper results not found: {path}")
    table = pd.read_csv(path)
    missing = [column for column in ("task", "Description", "fr") if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    unknown = sorted(set(table["task"]) - set(PAPER_TASKS))
    if unknown:
        raise ValueError(f"{path}: unknown task(s) {unknown}; expected {list(PAPER_TASKS)}")
    rows = []
    for task, description, fraction in table[["task", "Description", "fr"]].itertuples(index=False):
        compound, *genetic = description.split("-")
        modality, cell_type, timepoint = _parse_condition(compound, path)
        genetic_modality, genetic_timepoint = (None, None)
        if genetic:
            genetic_modality, _, genetic_timepoint = _parse_condition(genetic[0], path)
        rows.append((PAPER_TASKS[task], cell_type, modality, timepoint, genetic_modality, genetic_timepoint, fraction))
    results = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "fraction_retrieved"])
    results[GENETIC_TIMEPOINT] = results[GENETIC_TIMEPOINT].astype("Int64")
    results[GENETIC_MODALITY] = results[GENETIC_MODALITY].astype(object)
    return results.sort_values(SUMMARY_COLUMNS, ignore_index=True)
