"""Real CPJUMP1 wells through the evaluation: phenotype probabilities, their shuffled-label null and the cell count.

The real well table (:mod:`cellstudy.data.real_wells`: per well the median probability of 15 MitoCheck phenotype
classes, predicted from nuclear shape, and the cell count) gives three feature sets on the same wells
(:func:`feature_sets`):

- ``final``: the 15 probabilities of the trained model;
- ``shuffled``: those of the same model trained on shuffled labels, a real-data null (features of the same
  images that carry no learned phenotype);
- ``cell_count``: the cell count alone, a one-feature baseline.

Each is post-processed as the paper normalises its CellProfiler features (per plate, MAD-robustized to the
plate's negative controls; :data:`POSTPROCESSING`) and goes through the same tasks as every other profile
(:func:`cellstudy.evaluation.retrieval.run_tasks`) per cell type × modality × time point. The phenotype sets
are compared by cosine; the cell count by minus the Euclidean distance (:data:`SIMILARITY`), because the cosine
of two one-feature profiles is the product of their signs, ±1: nearly every pair would tie, and copairs breaks
ties optimistically (a positive before a negative). Every figure and table of these results names them with
:data:`DATA_LABEL`, never mixed with the simulated screen's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from cellstudy.columns import (
    CELL_COUNT,
    CELL_COUNT_FEATURE,
    CELL_TYPE,
    GENETIC_TIMEPOINT,
    PLATE,
    REPLICATE_RETRIEVAL,
    TIMEPOINT,
    WELL,
)
from cellstudy.data import real_wells
from cellstudy.evaluation import compare, retrieval, significance
from cellstudy.evaluation.retrieval import SUMMARY_COLUMNS, MapSettings
from cellstudy.profiling.profiles import PostProcessing, metadata_columns, postprocess, require_columns
from cellstudy.stats import bootstrap_ci

DATA_LABEL = "real CPJUMP1 wells (phenotype-probability features)"
"""How every figure, table and claim row of these results names its data."""
FINAL, SHUFFLED, CELL_COUNT_ONLY = "final", "shuffled", "cell_count"
FEATURE_SETS = {
    FINAL: "phenotype probabilities",
    SHUFFLED: "shuffled-label model (null)",
    CELL_COUNT_ONLY: "cell count alone",
}
"""The feature sets scored, with their labels in figures and tables."""
SIMILARITY = {FINAL: "cosine", SHUFFLED: "cosine", CELL_COUNT_ONLY: "euclidean"}
"""How each feature set's profiles are compared (:data:`cellstudy.evaluation.retrieval.SIMILARITIES`)."""
POSTPROCESSING = PostProcessing(variance_filter=False, sphering=False, robustize_per_plate=True)
"""The paper's normalisation of CellProfiler features: per plate, MAD-robustized to the negative controls. No
sphering (15 features, several near-collinear probabilities) and no feature selection (too few features to select)."""
BY_CONDITION = [compare.METHOD, *SUMMARY_COLUMNS]
"""One summary row per feature set, task and condition (cell type, modality, time points)."""


def feature_sets(final: pd.DataFrame, shuffled: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The post-processed well profiles of every feature set of :data:`FEATURE_SETS`, on the same wells.

    Parameters
    ----------
    final, shuffled
        :func:`cellstudy.data.real_wells.load_real_wells` of each model type: the design's metadata, the cell
        count and one column per phenotype.

    Returns
    -------
    Per feature set, its profiles post-processed with :data:`POSTPROCESSING`: the wells where both models have
    every phenotype (a well without any is a well whose cells were not classified; the others are named in a
    warning), the metadata of ``final``
    and the set's features (the cell count as :data:`cellstudy.columns.CELL_COUNT_FEATURE`).

    Raises
    ------
    ValueError
        A table lacks a needed column, or the two hold different wells (the message names them).
    """
    features = real_wells.feature_names()
    for table, name in ((final, "final real wells"), (shuffled, "shuffled real wells")):
        require_columns(table, [PLATE, WELL, CELL_COUNT, *features], name)
    keys = [PLATE, WELL]
    if not final[keys].reset_index(drop=True).equals(shuffled[keys].reset_index(drop=True)):
        raise ValueError("the final and shuffled real wells list different (plate, well) pairs")
    complete = (final[features].notna().all(axis=1) & shuffled[features].notna().all(axis=1)).to_numpy()
    if not complete.all():
        named = final.loc[~complete, keys].head(5).to_dict("records")
        warnings.warn(
            f"left out {(~complete).sum()} well(s) without every phenotype of both models, e.g. {named}", stacklevel=2
        )
    metadata = final.loc[complete, metadata_columns(final)].reset_index(drop=True)
    raw = {
        FINAL: final.loc[complete, features].reset_index(drop=True),
        SHUFFLED: shuffled.loc[complete, features].reset_index(drop=True),
        CELL_COUNT_ONLY: final.loc[complete, [CELL_COUNT]]
        .set_axis([CELL_COUNT_FEATURE], axis=1)
        .reset_index(drop=True),
    }
    return {name: postprocess(pd.concat([metadata, values], axis=1), POSTPROCESSING) for name, values in raw.items()}


def settings_for(feature_set: str, settings: MapSettings) -> MapSettings:
    """``settings`` with the feature set's similarity (:data:`SIMILARITY`)."""
    if feature_set not in SIMILARITY:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {list(SIMILARITY)}")
    return replace(settings, similarity=SIMILARITY[feature_set])


def evaluate(sets: Mapping[str, pd.DataFrame], settings: Sequence[MapSettings]) -> list[pd.DataFrame]:
    """The three tasks on every feature set, chained as the paper chains them
    (:func:`cellstudy.evaluation.retrieval.run_tasks_each`), each set with its similarity (:func:`settings_for`);
    one per-unit table per entry of ``settings`` (e.g. the study's test, then the paper's), with a ``method``
    column naming the feature set and a ``test`` column naming the significance test.
    """
    tables: list[list[pd.DataFrame]] = [[] for _ in settings]
    for name, table in sets.items():
        scored = retrieval.run_tasks_each(table, [settings_for(name, entry) for entry in settings])
        for collected, results, entry in zip(tables, scored, settings, strict=True):
            collected.append(results.assign(method=name, test=entry.method))
    return [pd.concat(collected, ignore_index=True) for collected in tables]


def condition_label(frame: pd.DataFrame) -> pd.Series:
    """``"replicate_retrieval / compound · U2OS · 48 h"``; compound–gene rows add the genetic time point
    (``"... · U2OS · 48 h vs 144 h"``).
    """
    hours = pd.to_numeric(frame[TIMEPOINT]).astype("Int64").astype(str) + " h"
    genetic = pd.to_numeric(frame[GENETIC_TIMEPOINT]).astype("Int64")
    hours = hours.where(genetic.isna(), hours + " vs " + genetic.astype(str) + " h")
    return compare.task_label(frame) + " · " + frame[CELL_TYPE].astype(str) + " · " + hours


def summary(results: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Fraction retrieved and mAP with their 95% cluster-bootstrap intervals
    (:func:`cellstudy.evaluation.compare.summary_with_ci`) per feature set, task and condition, with a ``row``
    label (:func:`condition_label`); conditions without a unit to test keep a row with ``n`` 0.
    """
    every = retrieval.fraction_retrieved(results, by=BY_CONDITION)[BY_CONDITION]
    intervals = compare.summary_with_ci(results, n_boot, seed, by=BY_CONDITION)
    keys = _comparable(every)
    merged = keys.merge(_comparable(intervals), on=BY_CONDITION, how="left")
    merged[["n", "n_sets", "n_retrieved", "retrieved_sets"]] = merged[
        ["n", "n_sets", "n_retrieved", "retrieved_sets"]
    ].fillna(0)
    return merged.assign(row=condition_label(merged))


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its time points as ``Int64`` and missing labels as ``None``, so that tables merge on them."""
    frame = frame.copy()
    for column in (TIMEPOINT, GENETIC_TIMEPOINT):
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    labels = [column for column in BY_CONDITION if column not in (TIMEPOINT, GENETIC_TIMEPOINT)]
    frame[labels] = frame[labels].astype(object).where(frame[labels].notna(), None)
    return frame


def metric_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The fraction retrieved and the mAP of :func:`summary` as text with their intervals, one column per feature
    set (:data:`FEATURE_SETS` labels), one row per task and condition.
    """
    sets = [name for name in FEATURE_SETS if name in set(table[compare.METHOD])]
    return {
        metric: compare.metric_table(table, metric, f"{prefix}_low", f"{prefix}_high", sets, FEATURE_SETS)
        for metric, prefix in (("fraction_retrieved", "fraction"), ("mAP", "mAP"))
    }


def beside_the_paper(paper_test: pd.DataFrame, study_test: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Fraction retrieved per task and condition of the paper's table: every feature set under the paper's test
    and under the study's, and the paper's CellProfiler number (the paper's test); each column names its test.

    Parameters
    ----------
    paper_test, study_test
        :func:`evaluate` under each test.
    paper
        :func:`cellstudy.data.published.load_paper_results`.
    """
    reference = _comparable(paper.assign(method=pd.NA)).drop(columns=compare.METHOD)
    columns = {}
    for results, test in ((paper_test, significance.PAPER), (study_test, significance.STUDY)):
        fractions = _comparable(retrieval.fraction_retrieved(results, by=BY_CONDITION))
        for name, label in FEATURE_SETS.items():
            part = fractions[fractions[compare.METHOD] == name].drop(columns=compare.METHOD)
            columns[f"{label} ({test} test)"] = reference[SUMMARY_COLUMNS].merge(part, on=SUMMARY_COLUMNS, how="left")[
                "fraction_retrieved"
            ]
    table = pd.DataFrame(columns).assign(**{"CellProfiler, paper (paper test)": reference["fraction_retrieved"]})
    return table.set_axis(condition_label(reference.assign(method=None)), axis=0).rename_axis("row").sort_index()


def replicate_difference(
    results: pd.DataFrame, a: str = FINAL, b: str = SHUFFLED, n_boot: int = 10_000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Replicate retrieval pooled over every condition: fraction retrieved and mAP of feature set ``a`` minus
    ``b``, each ``(difference, low, high)`` with a paired 95% bootstrap interval over the perturbations both
    scored (:func:`cellstudy.stats.bootstrap_ci` of the per-perturbation differences); all NaN without any.
    """
    replicates = retrieval.tested(results[results["task"] == REPLICATE_RETRIEVAL])
    keyed = replicates.assign(_unit=compare.unit_ids(replicates)).set_index("_unit")
    first, second = (keyed[keyed[compare.METHOD] == name] for name in (a, b))
    shared = first.index.intersection(second.index)
    out = {}
    for metric, column in (("fraction_retrieved", "retrieved"), ("mAP", "mean_average_precision")):
        if len(shared) == 0:
            out[metric] = (np.nan, np.nan, np.nan)
            continue
        differences = first.loc[shared, column].astype(float) - second.loc[shared, column].astype(float)
        out[metric] = bootstrap_ci(differences, n_boot, seed)
    return out


def _signed(estimate: float, low: float, high: float) -> str:
    """``+0.012 [-0.003, +0.027]``."""
    return f"{estimate:+.3f} [{low:+.3f}, {high:+.3f}]"


def describe_differences(results: pd.DataFrame) -> str:
    """Replicate retrieval pooled over every condition (:func:`replicate_difference`): phenotype probabilities and
    the cell count, each minus the shuffled-label null, in fraction retrieved and mAP, as a sentence naming the data.
    """
    parts = []
    for name in (FINAL, CELL_COUNT_ONLY):
        difference = replicate_difference(results, name, SHUFFLED)
        parts.append(
            f"{FEATURE_SETS[name]} minus the null: fraction retrieved {_signed(*difference['fraction_retrieved'])}, "
            f"mAP {_signed(*difference['mAP'])}"
        )
    return (
        f"Replicate retrieval over all conditions ({DATA_LABEL}; study test; differences paired over perturbations, "
        "95% bootstrap intervals): " + "; ".join(parts) + "."
    )
