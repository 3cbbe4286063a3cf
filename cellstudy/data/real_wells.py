"""Real CPJUMP1 well profiles: 15 phenotype probabilities per well, checked against the CPJUMP1 design.

The table (``<data root>/cpjump1/`` :data:`REAL_WELLS_FILE`, fetched from its manifest URL with its sha256
checked when absent; WayScience/JUMP-single-cell, BSD-3-Clause) covers all 51 plates of batch
2020_11_04_CPJUMP1. For every cell a logistic regression on CellProfiler AreaShape features predicts
the probability of 15 MitoCheck phenotype classes; a well's value is the median over its cells. It
comes in long format, one row per (plate, well, model type, phenotype), for two models: ``final``, and
``shuffled``, the same model trained on shuffled labels, a real-data negative control.

:func:`load_real_wells` turns it into the study's profile layout: one row per well of the analysed
design (:func:`cellstudy.data.cpjump1.well_table`), the design's metadata columns, one feature column per
phenotype (:data:`FEATURE_PREFIX`) and the well's cell count (:data:`cellstudy.columns.CELL_COUNT`).
:func:`coverage` says which design wells it lacks and which have no phenotype value at all. These are
real profiles, but 15 model outputs, not the paper's ~900 CellProfiler features.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cellstudy.columns import CELL_COUNT, PLATE, WELL
from cellstudy.data import cpjump1, sources

REAL_WELLS_FILE = "real_wells/class_balanced_well_log_reg_areashape_aggregate_probabilities.parquet"
"""The table's path under ``<data root>/cpjump1/``, as in the manifest."""
MODEL_TYPE = "Metadata_model_type"
"""Column of the model that predicted the probabilities (:data:`MODEL_TYPES`)."""
MODEL_TYPES = ("final", "shuffled")
"""The trained model, and the same model trained on shuffled labels (the null)."""
PHENOTYPES = (
    "ADCCM",
    "Anaphase",
    "Apoptosis",
    "Binuclear",
    "Elongated",
    "Grape",
    "Hole",
    "Interphase",
    "Large",
    "Metaphase",
    "MetaphaseAlignment",
    "OutOfFocus",
    "Polylobed",
    "Prometaphase",
    "SmallIrregular",
)
"""The MitoCheck phenotype classes, one feature each."""
FEATURE_PREFIX = "Phenotype_"
"""Prefix of the feature columns (``Phenotype_Apoptosis``, ...)."""
_PHENOTYPE, _VALUE, _COUNT = "phenotype", "comparison_metric_value", "cell_count"
LONG_COLUMNS = [PLATE, WELL, MODEL_TYPE, _PHENOTYPE, _VALUE, _COUNT]
"""Columns the long table must have."""


def read_long(path: str | os.PathLike) -> pd.DataFrame:
    """The long table at ``path``, checked: its columns, one row per (plate, well, model, phenotype), both model
    types, the 15 phenotypes, and one cell count per well.

    Raises
    ------
    ValueError
        Any check fails; the message names the file and the offending rows or values.
    """
    path = Path(path)
    table = pd.read_parquet(path)
    missing = [column for column in LONG_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}")
    key = [PLATE, WELL, MODEL_TYPE, _PHENOTYPE]
    duplicated = table.duplicated(key, keep=False)
    if duplicated.any():
        raise ValueError(
            f"{path}: {duplicated.sum()} rows repeat a (plate, well, model, phenotype), e.g. "
            f"{table.loc[duplicated, key].head(3).to_dict('records')}"
        )
    for column, expected in ((MODEL_TYPE, MODEL_TYPES), (_PHENOTYPE, PHENOTYPES)):
        found = set(table[column].dropna())
        if found != set(expected):
            raise ValueError(f"{path}: {column} has {sorted(found)}, expected {sorted(expected)}")
    counts = table.groupby([PLATE, WELL])[_COUNT].nunique()
    if (counts > 1).any():
        raise ValueError(f"{path}: wells with more than one cell count, e.g. {counts[counts > 1].index[:3].tolist()}")
    return table


def wide(long: pd.DataFrame, model_type: str) -> pd.DataFrame:
    """One row per (plate, well) of ``model_type``: the cell count and one column per phenotype."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    rows = long[long[MODEL_TYPE] == model_type]
    features = rows.pivot(index=[PLATE, WELL], columns=_PHENOTYPE, values=_VALUE)
    features = features.reindex(columns=list(PHENOTYPES)).add_prefix(FEATURE_PREFIX)
    counts = rows.groupby([PLATE, WELL])[_COUNT].first().rename(CELL_COUNT)
    return pd.concat([counts, features], axis=1).reset_index()


def load_real_wells(
    model_type: str = "final",
    root: str | os.PathLike | None = None,
    metadata_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> pd.DataFrame:
    """The real wells of ``model_type`` in the study's profile layout, on the analysed design.

    The table is fetched (:func:`cellstudy.data.sources.fetch`: downloaded from its manifest URL when absent
    and ``download`` allows, its sha256 checked either way) and validated
    (:func:`read_long`); only the analysed design's profiled wells
    (``cpjump1.well_table(profiled_only=True)``) are kept, with their design metadata.
    """
    long = read_long(sources.fetch(REAL_WELLS_FILE, root, download=download, verify=True))
    design = cpjump1.well_table(metadata_dir, profiled_only=True)
    return design.merge(wide(long, model_type), on=[PLATE, WELL], how="inner", validate="one_to_one")


def feature_names() -> list[str]:
    """The feature columns of :func:`load_real_wells`."""
    return [FEATURE_PREFIX + phenotype for phenotype in PHENOTYPES]


def coverage(wells: pd.DataFrame, design: pd.DataFrame) -> dict[str, object]:
    """How well the real ``wells`` cover the ``design``: counts, and the (plate, well) pairs it lacks.

    Returns
    -------
    ``design_wells``, ``found``, ``missing`` (a list of ``{plate, well}``), ``all_phenotypes_missing``
    (wells found without any phenotype value) and ``cells_of_those`` (their cell counts, min and max).
    """
    keys = [PLATE, WELL]
    found = design[keys].merge(wells[keys], on=keys, how="left", indicator=True)
    missing = found.loc[found["_merge"] == "left_only", keys]
    empty = wells[wells[feature_names()].isna().all(axis=1)]
    return {
        "design_wells": len(design),
        "found": int((found["_merge"] == "both").sum()),
        "missing": missing.to_dict("records"),
        "all_phenotypes_missing": len(empty),
        "cells_of_those": (int(empty[CELL_COUNT].min()), int(empty[CELL_COUNT].max())) if len(empty) else None,
    }
