"""How stable is fraction retrieved under the study's test? Its spread over null seeds, and how far one more
control well moves it.

A fraction retrieved is only worth reading to the precision its Monte-Carlo nulls give it: :func:`seed_spread`
rescores the same queries (:func:`cellstudy.evaluation.retrieval.queries_on_every_perturbation`, so every seed
tests the same units) with :data:`N_SEEDS` seeds. A valid, stable test must not move by more than that spread
when the table changes in a way that should not matter: :func:`with_one_more_control` duplicates a control well,
or adds a control well of another plate to it, and :func:`control_well_shift` scores the tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd

from cellstudy.columns import (
    CELL_TYPE,
    MODALITY,
    NEGCON,
    PLATE,
    REPLICATE_RETRIEVAL,
    SUMMARY_COLUMNS,
    TASK,
    TIMEPOINT,
    WELL,
)
from cellstudy.evaluation import retrieval
from cellstudy.evaluation.retrieval import MapSettings, fraction_retrieved

N_SEEDS = 10
"""Null seeds per group in :func:`seed_spread`."""
CONTROL_CHANGES = ("duplicated control", "added control")
"""The table changes of :func:`with_one_more_control`."""


def _groups(results: pd.DataFrame) -> list[str]:
    return [column for column in SUMMARY_COLUMNS if column in results.columns]


def seed_spread(
    queries: Sequence[retrieval.TaskQueries], settings: MapSettings, n_seeds: int = N_SEEDS
) -> pd.DataFrame:
    """Fraction retrieved per group (:data:`cellstudy.columns.SUMMARY_COLUMNS`) for seeds ``0 .. n_seeds - 1``.

    Returns
    -------
    :func:`cellstudy.evaluation.retrieval.fraction_retrieved`'s columns and ``seed``; groups without units
    are left out.
    """
    tables = []
    for seed in range(n_seeds):
        results = retrieval.score_every(queries, replace(settings, seed=seed))
        tables.append(fraction_retrieved(results, _groups(results)).assign(seed=seed))
    spread = pd.concat(tables, ignore_index=True)
    return spread[spread["n"] > 0].reset_index(drop=True)


def spread_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per group of :func:`seed_spread`: ``n``, the mean, minimum, maximum and range of fraction retrieved over seeds."""
    keys = [column for column in per_seed.columns if column in SUMMARY_COLUMNS]
    return (
        per_seed.groupby(keys, dropna=False, sort=True)
        .agg(
            n=("n", "first"),
            seeds=("seed", "size"),
            mean=("fraction_retrieved", "mean"),
            low=("fraction_retrieved", "min"),
            high=("fraction_retrieved", "max"),
        )
        .assign(spread=lambda frame: frame["high"] - frame["low"])
        .reset_index()
    )


def with_one_more_control(profiles: pd.DataFrame, change: str) -> pd.DataFrame:
    """``profiles`` with one more control well on the first plate, named ``<well>+``: a copy of its first control
    well (``"duplicated control"``), or of the first control well of another plate of the same cell type,
    modality and time point (``"added control"``: a distinct real control profile).

    Not a well at the median of the controls: post-processed profiles are robustized to their plate's controls,
    so that well would sit at the origin, where cosine similarity is undefined.
    """
    if change not in CONTROL_CHANGES:
        raise ValueError(f"change must be one of {CONTROL_CHANGES}, got {change!r}")
    plate = profiles[PLATE].iloc[0]
    controls = profiles[(profiles[PLATE] == plate) & profiles[NEGCON]]
    if controls.empty:
        raise ValueError(f"plate {plate} has no control well to copy")
    source = controls
    if change == "added control":
        condition = [column for column in (CELL_TYPE, MODALITY, TIMEPOINT) if column in profiles]
        same = (profiles[condition] == controls.iloc[0][condition]).all(axis=1)
        source = profiles[(profiles[PLATE] != plate) & profiles[NEGCON] & same]
        if source.empty:
            raise ValueError(f"no other plate of the condition of plate {plate} has a control well to add to it")
    extra = source.iloc[[0]].assign(**{PLATE: plate})
    extra[WELL] = extra[WELL].astype(str) + "+"
    return pd.concat([profiles, extra], ignore_index=True)


def control_well_shift(profiles: pd.DataFrame, settings: MapSettings) -> pd.DataFrame:
    """Replicate retrieval's fraction retrieved per group on ``profiles`` and on each of
    :data:`CONTROL_CHANGES` (same seed): columns of :func:`cellstudy.evaluation.retrieval.fraction_retrieved`
    and ``table`` (``"as measured"`` or the change).
    """
    tables = {"as measured": profiles} | {change: with_one_more_control(profiles, change) for change in CONTROL_CHANGES}
    rows = []
    for name, table in tables.items():
        results = retrieval.score(retrieval.replicate_queries(table, settings), settings)
        rows.append(fraction_retrieved(results, _groups(results)).assign(table=name))
    shifted = pd.concat(rows, ignore_index=True)
    return shifted[(shifted[TASK] == REPLICATE_RETRIEVAL) & (shifted["n"] > 0)].reset_index(drop=True)


def within_spread(shift: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per group and change of :func:`control_well_shift`: the move of fraction retrieved from the table as
    measured, the seed spread of that group (:func:`spread_summary`) and whether the move is within it.
    """
    keys = [column for column in shift.columns if column in SUMMARY_COLUMNS]
    measured = shift.loc[shift["table"] == "as measured", [*keys, "fraction_retrieved"]]
    changed = shift[shift["table"] != "as measured"].merge(measured, on=keys, suffixes=("", "_as_measured"))
    changed["move"] = changed["fraction_retrieved"] - changed["fraction_retrieved_as_measured"]
    merged = changed.merge(summary[[*keys, "spread"]], on=keys, how="left")
    return merged.assign(within_spread=merged["move"].abs() <= merged["spread"])


def study_stability(
    profiles: Mapping[str, pd.DataFrame], settings: MapSettings, n_seeds: int = N_SEEDS
) -> dict[str, pd.DataFrame]:
    """The stability checks of each method's post-processed well ``profiles`` (keys name the methods).

    Returns
    -------
    Tables with a ``method`` column: ``seeds`` (:func:`seed_spread`), ``spread`` (:func:`spread_summary`),
    ``shifts`` (:func:`control_well_shift`) and ``moves`` (:func:`within_spread`).
    """
    parts: dict[str, list[pd.DataFrame]] = {"seeds": [], "spread": [], "shifts": [], "moves": []}
    for method, table in profiles.items():
        seeds = seed_spread(retrieval.queries_on_every_perturbation(table, settings), settings, n_seeds)
        spread = spread_summary(seeds)
        shifts = control_well_shift(table, settings)
        for name, part in zip(parts, (seeds, spread, shifts, within_spread(shifts, spread)), strict=True):
            parts[name].append(part.assign(method=method))
    return {name: pd.concat(tables, ignore_index=True) for name, tables in parts.items()}
