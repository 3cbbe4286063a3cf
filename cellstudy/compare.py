"""Comparing profiling methods on the same tasks: confidence intervals, paired tests, CRISPR–ORF agreement.

Inputs are the per-unit results of :func:`cellstudy.evaluate.run_tasks` for several methods stacked with
a ``method`` column. A *unit* is what a task scores: a perturbation in replicate retrieval, a target
gene in the matching tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellstudy.evaluate import (
    GENETIC_MODALITY,
    GENETIC_TIMEPOINT,
    MODALITY,
    SAMPLE,
    SUMMARY_COLUMNS,
    TARGETS,
    TIMEPOINT,
    bootstrap_ci,
    paired_test,
)
from cellstudy.profiles import feature_columns
from cellstudy.query import gene_profiles

METHOD = "method"
TASK_COLUMNS = ["task", MODALITY, GENETIC_MODALITY]
"""What a row of the method comparison is about: the task, the (compound) modality, the genetic modality."""
UNIT_COLUMNS = [column for column in SUMMARY_COLUMNS if column != "task"]


def task_label(frame: pd.DataFrame) -> pd.Series:
    """One label per task and modalities: ``"replicate_retrieval / compound"``, ``"compound_gene_matching / compound–orf"``."""
    label = frame["task"] + " / " + frame[MODALITY]
    if GENETIC_MODALITY not in frame:
        return label
    genetic = frame[GENETIC_MODALITY]
    return label.where(genetic.isna(), label + "–" + genetic.astype(object).where(genetic.notna(), "").astype(str))


def _conditions(frame: pd.DataFrame) -> pd.DataFrame:
    """The :data:`SUMMARY_COLUMNS` of ``frame`` with comparable types: time points as ``Int64``, missing as ``None``."""
    conditions = frame[SUMMARY_COLUMNS].astype(object)
    for column in (TIMEPOINT, GENETIC_TIMEPOINT):
        conditions[column] = pd.to_numeric(conditions[column]).astype("Int64")
    return conditions.where(conditions.notna(), None)


def paper_reference(results: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's fraction retrieved beside the task × modality rows (:data:`TASK_COLUMNS`) that ``results`` holds.

    Parameters
    ----------
    results
        Per-unit results (:func:`cellstudy.evaluate.run_tasks`, any number of methods), with :data:`SUMMARY_COLUMNS`.
    paper
        The paper's table (:func:`cellstudy.published.load_paper_results`).

    Returns
    -------
    :data:`TASK_COLUMNS` of every row of ``results``, ``paper_same_condition`` (the paper's value under the
    row's conditions: cell type and time points; the mean if ``results`` holds several; NaN if the paper has
    none), ``paper_min`` and ``paper_max`` (its range over all the paper's conditions of that row).
    """
    study = _conditions(results).drop_duplicates()
    published = _conditions(paper).assign(fraction_retrieved=paper["fraction_retrieved"].to_numpy())
    same = study.merge(published, on=SUMMARY_COLUMNS, how="left")
    rows = same.groupby(TASK_COLUMNS, dropna=False, sort=True)["fraction_retrieved"].mean().rename("paper_same_condition")
    spread = published.groupby(TASK_COLUMNS, dropna=False)["fraction_retrieved"].agg(paper_min="min", paper_max="max")
    return rows.to_frame().join(spread).reset_index()


def unit_ids(results: pd.DataFrame) -> pd.Series:
    """A key naming each unit across methods: its group labels and its perturbation or target gene."""
    sample = results[SAMPLE] if SAMPLE in results else pd.Series(pd.NA, index=results.index, dtype=object)
    unit = sample.fillna(results[TARGETS]) if TARGETS in results else sample
    labels = results[[c for c in UNIT_COLUMNS if c in results]].map(str).agg("|".join, axis=1)
    return labels + "|" + unit.map(str)


def summary_with_ci(results: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Fraction retrieved and mean mAP per method × task × modality, each with a bootstrap 95% CI over units."""
    rows = []
    for keys, units in results.groupby([METHOD, *TASK_COLUMNS], dropna=False, sort=True):
        fraction = bootstrap_ci(units["retrieved"].astype(float), n_boot, seed)
        average = bootstrap_ci(units["mean_average_precision"], n_boot, seed)
        rows.append({**dict(zip([METHOD, *TASK_COLUMNS], keys)), "n": len(units),
                     "fraction_retrieved": fraction[0], "fraction_low": fraction[1], "fraction_high": fraction[2],
                     "mAP": average[0], "mAP_low": average[1], "mAP_high": average[2]})
    return pd.DataFrame(rows)


def paired_comparisons(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], n_boot: int = 2000,
                       seed: int = 0) -> pd.DataFrame:
    """For each (a, b) in ``pairs`` and each task × modality: a paired test of mAP over the units both scored.

    Columns: ``a``, ``b``, the task columns, and :func:`cellstudy.evaluate.paired_test`'s output; rows
    with fewer than two shared units are left out.
    """
    keyed = results.assign(_unit=unit_ids(results))
    rows = []
    for a, b in pairs:
        for keys, units in keyed[keyed[METHOD].isin([a, b])].groupby(TASK_COLUMNS, dropna=False, sort=True):
            by_method = {m: u.set_index("_unit")["mean_average_precision"] for m, u in units.groupby(METHOD)}
            if a not in by_method or b not in by_method or len(by_method[a].index.intersection(by_method[b].index)) < 2:
                continue
            test = paired_test(by_method[a], by_method[b], n_boot=n_boot, seed=seed)
            rows.append({"a": a, "b": b, **dict(zip(TASK_COLUMNS, keys)), **test})
    return pd.DataFrame(rows)


def crispr_orf_similarity(consensus: pd.DataFrame, n_permutations: int = 10_000,
                          seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """Cosine similarity of each gene's CRISPR and ORF profiles, against unmatched CRISPR–ORF pairs.

    Gene profiles are the mean of the gene's guides (CRISPR) or its ORF (:func:`cellstudy.query.gene_profiles`),
    paired within a cell type (each CRISPR time point with each ORF time point). The test statistic is
    the mean matched cosine; its null permutes which ORF gene goes with which CRISPR gene.

    Returns
    -------
    A long table (``pair``: matched or unmatched, ``cosine``, genes, time points) and a summary dict:
    ``n_genes``, ``mean_matched``, ``mean_unmatched``, ``p_value`` (one-sided, matched > permuted).
    """
    crispr, orf = gene_profiles(consensus, "crispr"), gene_profiles(consensus, "orf")
    features = feature_columns(consensus)
    rng = np.random.default_rng(seed)
    tables, observed, null = [], [], []
    for (cell_type, crispr_time), crispr_rows in crispr.groupby(["Metadata_cell_type", "Metadata_timepoint"]):
        for orf_time, orf_rows in orf[orf["Metadata_cell_type"] == cell_type].groupby("Metadata_timepoint"):
            genes = sorted(set(crispr_rows["Metadata_gene"]) & set(orf_rows["Metadata_gene"]))
            if len(genes) < 2:
                continue
            left = _unit_rows(crispr_rows.set_index("Metadata_gene").loc[genes, features])
            right = _unit_rows(orf_rows.set_index("Metadata_gene").loc[genes, features])
            cosines = left @ right.T
            matched = np.eye(len(genes), dtype=bool)
            tables.append(pd.DataFrame({
                "Metadata_cell_type": cell_type, "crispr_timepoint": crispr_time, "orf_timepoint": orf_time,
                "crispr_gene": np.repeat(genes, len(genes)), "orf_gene": np.tile(genes, len(genes)),
                "pair": np.where(matched.ravel(), "matched", "unmatched"), "cosine": cosines.ravel()}))
            observed.append(np.diag(cosines))
            null.append(np.stack([cosines[np.arange(len(genes)), rng.permutation(len(genes))]
                                  for _ in range(n_permutations)]))
    if not tables:
        raise ValueError("no cell type has both CRISPR and ORF profiles of at least two shared genes")
    table = pd.concat(tables, ignore_index=True)
    matched_mean = float(np.concatenate(observed).mean())
    null_means = np.concatenate(null, axis=1).mean(axis=1)
    summary = {"n_genes": int(sum(len(o) for o in observed)), "mean_matched": matched_mean,
               "mean_unmatched": float(table.loc[table["pair"] == "unmatched", "cosine"].mean()),
               "p_value": float((1 + (null_means >= matched_mean).sum()) / (1 + n_permutations))}
    return table, summary


def _unit_rows(frame: pd.DataFrame) -> np.ndarray:
    values = frame.to_numpy(dtype=float)
    return values / np.linalg.norm(values, axis=1, keepdims=True)
