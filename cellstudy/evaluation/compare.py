"""Comparing profiling methods on the same tasks: confidence intervals, paired tests, CRISPR–ORF agreement.

Inputs are the per-unit results of :func:`cellstudy.evaluation.retrieval.run_tasks` for several methods stacked with
a ``method`` column. A *unit* is what a task scores: a perturbation in replicate retrieval, a target
gene in the matching tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from cellstudy.columns import (
    CELL_TYPE,
    GENE,
    GENETIC_MODALITY,
    GENETIC_TIMEPOINT,
    MODALITY,
    REPLICATE_RETRIEVAL,
    SAMPLE,
    TARGETS,
    TASK,
    TASKS,
    TIMEPOINT,
)
from cellstudy.evaluation import retrieval, significance
from cellstudy.evaluation.retrieval import SUMMARY_COLUMNS, MapSettings, fraction_retrieved, run_tasks, tested
from cellstudy.profiling.profiles import (
    PAPER_FEATURE_SELECTION,
    PostProcessing,
    feature_columns,
    gene_profiles,
    postprocess,
    postprocessing_for,
)
from cellstudy.similarity import unit_rows
from cellstudy.stats import MIN_INDEPENDENT_UNITS, cluster_bootstrap_ci, paired_test

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
        Per-unit results (:func:`cellstudy.evaluation.retrieval.run_tasks`, any number of methods), with :data:`SUMMARY_COLUMNS`.
    paper
        The paper's table (:func:`cellstudy.data.published.load_paper_results`).

    Returns
    -------
    :data:`TASK_COLUMNS` of every row of ``results``, ``paper_same_condition`` (the paper's value under the
    row's conditions: cell type and time points; the mean if ``results`` holds several; NaN if the paper has
    none), ``paper_min`` and ``paper_max`` (its range over all the paper's conditions of that row).
    """
    study = _conditions(results).drop_duplicates()
    published = _conditions(paper).assign(fraction_retrieved=paper["fraction_retrieved"].to_numpy())
    same = study.merge(published, on=SUMMARY_COLUMNS, how="left")
    rows = (
        same.groupby(TASK_COLUMNS, dropna=False, sort=True)["fraction_retrieved"].mean().rename("paper_same_condition")
    )
    spread = published.groupby(TASK_COLUMNS, dropna=False)["fraction_retrieved"].agg(paper_min="min", paper_max="max")
    return rows.to_frame().join(spread).reset_index()


def unit_ids(results: pd.DataFrame) -> pd.Series:
    """A key naming each unit across methods: its group labels and its perturbation or target gene."""
    sample = results[SAMPLE] if SAMPLE in results else pd.Series(pd.NA, index=results.index, dtype=object)
    unit = sample.fillna(results[TARGETS]) if TARGETS in results else sample
    labels = results[[c for c in UNIT_COLUMNS if c in results]].map(str).agg("|".join, axis=1)
    return labels + "|" + unit.map(str)


INTERVAL_COLUMNS = ["fraction_retrieved", "fraction_low", "fraction_high", "mAP", "mAP_low", "mAP_high"]
"""The estimates and 95% bounds of :func:`summary_with_ci`."""


def summary_with_ci(
    results: pd.DataFrame, n_boot: int = 2000, seed: int = 0, by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Fraction retrieved and mean mAP per method × task × modality (or per ``by``), each with a 95% bootstrap CI.

    The bootstrap resamples distinct perturbation sets (``perturbations``), not units: in the matching tasks
    several target genes can rest on the same compounds. ``n`` counts the units tested, ``n_sets`` the
    independent sets behind them; fewer than :data:`cellstudy.stats.MIN_INDEPENDENT_UNITS` sets give no interval.
    ``by``: the grouping columns, default ``method`` and :data:`TASK_COLUMNS` (pass :data:`SUMMARY_COLUMNS` with
    ``method`` for one row per condition: cell type and time points too).
    """
    by = [METHOD, *TASK_COLUMNS] if by is None else list(by)
    units = tested(results)
    counts = fraction_retrieved(units, by)[[*by, "n", "n_sets", "n_retrieved", "retrieved_sets"]]
    intervals = []
    for _, group in units.groupby(by, dropna=False, sort=True):
        sets = group["perturbations"]
        fraction = cluster_bootstrap_ci(group["retrieved"].astype(float), sets, n_boot, seed)
        average = cluster_bootstrap_ci(group["mean_average_precision"], sets, n_boot, seed)
        intervals.append(dict(zip(INTERVAL_COLUMNS, (*fraction, *average))))
    return pd.concat([counts, pd.DataFrame(intervals, columns=INTERVAL_COLUMNS)], axis=1)


def _set_means(units: pd.DataFrame, sets: pd.Series) -> pd.Series:
    """One method's mAP averaged over its units (index of ``sets``) that rest on the same perturbation set."""
    shared = units[units["_unit"].isin(sets.index)]
    return shared.groupby(shared["_unit"].map(sets))["mean_average_precision"].mean()


def paired_comparisons(
    results: pd.DataFrame, pairs: Sequence[tuple[str, str]], n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """For each (a, b) in ``pairs`` and each task × modality: a paired test of mAP over the units both scored.

    Units that rest on the same perturbation set are averaged first, so the test counts independent units:
    ``n`` in the output is the number of shared sets, ``n_units`` that of shared units. Give ``results`` in
    which every method has the same units (:func:`on_the_same_units`); otherwise each method's replicable
    perturbations decide which units are shared. Columns: ``a``, ``b``, the task columns, ``n_units`` and
    :func:`cellstudy.stats.paired_test`'s output; a comparison resting on fewer than
    :data:`cellstudy.stats.MIN_INDEPENDENT_UNITS` sets has no interval and no p-value; rows with fewer than
    two shared sets are left out.
    """
    keyed = tested(results).assign(_unit=lambda frame: unit_ids(frame))
    rows = []
    for a, b in pairs:
        for keys, units in keyed[keyed[METHOD].isin([a, b])].groupby(TASK_COLUMNS, dropna=False, sort=True):
            by_method = {m: u for m, u in units.groupby(METHOD)}
            if a not in by_method or b not in by_method:
                continue
            shared = set(by_method[a]["_unit"]) & set(by_method[b]["_unit"])
            sets = by_method[a].set_index("_unit").loc[sorted(shared), "perturbations"]
            first, second = (_set_means(by_method[m], sets) for m in (a, b))
            if len(first) < 2:
                continue
            test = paired_test(first, second, n_boot=n_boot, seed=seed)
            if test["n"] < MIN_INDEPENDENT_UNITS:
                test |= {"ci_low": np.nan, "ci_high": np.nan, "wilcoxon_p_value": np.nan}
            rows.append({"a": a, "b": b, **dict(zip(TASK_COLUMNS, keys)), "n_units": len(shared), **test})
    return pd.DataFrame(rows)


def by_significance_test(
    profiles: Mapping[str, pd.DataFrame], results: pd.DataFrame, settings: MapSettings
) -> pd.DataFrame:
    """Fraction retrieved per method × task × modality under each significance test
    (:data:`cellstudy.evaluation.significance.METHODS`), each chaining the tasks as the paper does (its own
    replicable perturbations go on to matching). The study test's numbers are ``results``'; the others are scored
    here on the same profiles and pairs. Columns: ``test``, ``method``, :data:`TASK_COLUMNS`, ``n``, ``n_sets``,
    ``fraction_retrieved``.
    """
    tables = []
    for method, table in profiles.items():
        for test in significance.METHODS:
            scored = (
                results[results[METHOD] == method]
                if test == settings.method
                else run_tasks(table, replace(settings, method=test))
            )
            summary = fraction_retrieved(scored, by=TASK_COLUMNS)
            tables.append(summary[summary["n"] > 0].assign(test=test, method=method))
    columns = ["test", METHOD, *TASK_COLUMNS, "n", "n_sets", "fraction_retrieved"]
    return pd.concat(tables, ignore_index=True)[columns]


def significance_table(by_test: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """:func:`by_significance_test` as a table: one row per method and task × modality, one column per test
    with its fraction retrieved and, in brackets, the units it rests on (``n / n_sets``).
    """
    cells = by_test.assign(
        row=task_label(by_test),
        method=by_test[METHOD].map(labels),
        cell=[
            f"{fraction:.2f} ({int(n)}/{int(sets)})"
            for fraction, n, sets in by_test[["fraction_retrieved", "n", "n_sets"]].to_numpy()
        ],
    )
    return cells.pivot(index=[METHOD, "row"], columns="test", values="cell").reindex(columns=list(significance.METHODS))


def on_the_same_units(
    profiles: Mapping[str, pd.DataFrame], results: pd.DataFrame, settings: MapSettings
) -> pd.DataFrame:
    """Results in which every method has the same units: replicate retrieval as in ``results``, the matching
    tasks on every perturbation (no replicate filter, so one method's replicability does not decide the other's
    units). ``profiles``: each method's post-processed well profiles.
    """
    tables = []
    for method, table in profiles.items():
        replicates = results[(results[METHOD] == method) & (results[TASK] == REPLICATE_RETRIEVAL)]
        matching = retrieval.matching_on_every_perturbation(table, settings)
        tables.append(pd.concat([replicates, retrieval.score_every(matching, settings).assign(method=method)]))
    return pd.concat(tables, ignore_index=True)


def crispr_orf_similarity(
    consensus: pd.DataFrame, n_permutations: int = 10_000, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Cosine similarity of each gene's CRISPR and ORF profiles, against unmatched CRISPR–ORF pairs.

    Gene profiles are the mean of the gene's guides (CRISPR) or its ORF (:func:`cellstudy.profiling.profiles.gene_profiles`),
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
    for (cell_type, crispr_time), crispr_rows in crispr.groupby([CELL_TYPE, TIMEPOINT]):
        for orf_time, orf_rows in orf[orf[CELL_TYPE] == cell_type].groupby(TIMEPOINT):
            genes = sorted(set(crispr_rows[GENE]) & set(orf_rows[GENE]))
            if len(genes) < 2:
                continue
            left = unit_rows(crispr_rows.set_index(GENE).loc[genes, features].to_numpy(dtype=float))
            right = unit_rows(orf_rows.set_index(GENE).loc[genes, features].to_numpy(dtype=float))
            cosines = left @ right.T
            matched = np.eye(len(genes), dtype=bool)
            tables.append(
                pd.DataFrame(
                    {
                        CELL_TYPE: cell_type,
                        "crispr_timepoint": crispr_time,
                        "orf_timepoint": orf_time,
                        "crispr_gene": np.repeat(genes, len(genes)),
                        "orf_gene": np.tile(genes, len(genes)),
                        "pair": np.where(matched.ravel(), "matched", "unmatched"),
                        "cosine": cosines.ravel(),
                    }
                )
            )
            observed.append(np.diag(cosines))
            null.append(
                np.stack([cosines[np.arange(len(genes)), rng.permutation(len(genes))] for _ in range(n_permutations)])
            )
    if not tables:
        raise ValueError("no cell type has both CRISPR and ORF profiles of at least two shared genes")
    table = pd.concat(tables, ignore_index=True)
    matched_mean = float(np.concatenate(observed).mean())
    null_means = np.concatenate(null, axis=1).mean(axis=1)
    summary = {
        "n_genes": int(sum(len(o) for o in observed)),
        "mean_matched": matched_mean,
        "mean_unmatched": float(table.loc[table["pair"] == "unmatched", "cosine"].mean()),
        "p_value": float((1 + (null_means >= matched_mean).sum()) / (1 + n_permutations)),
    }
    return table, summary


SIGNIFICANCE = 0.05
"""Threshold of the paired tests' Benjamini-Hochberg-corrected p-values."""
VERDICTS = ("a better", "b better", "no significant difference", "too few independent units")
"""Verdicts of a paired comparison of methods a and b."""


def with_verdicts(paired: pd.DataFrame, significance: float = SIGNIFICANCE) -> pd.DataFrame:
    """:func:`paired_comparisons` with ``corrected_p_value`` (Benjamini-Hochberg over every row; a comparison
    without a Wilcoxon p-value counts as p = 1) and ``verdict``: ``a better`` or ``b better`` where the corrected
    p-value is below ``significance``, by the sign of the mean difference; ``too few independent units`` under
    :data:`cellstudy.stats.MIN_INDEPENDENT_UNITS` shared sets; else ``no significant difference``.
    """
    corrected = multipletests(paired["wilcoxon_p_value"].fillna(1.0), method="fdr_bh")[1]
    significant = corrected < significance
    verdict = np.select(
        [
            paired["n"] < MIN_INDEPENDENT_UNITS,
            significant & (paired["mean_difference"] > 0),
            significant & (paired["mean_difference"] < 0),
        ],
        [VERDICTS[3], *VERDICTS[:2]],
        VERDICTS[2],
    )
    return paired.assign(corrected_p_value=corrected, verdict=verdict)


def ordered(values: pd.Series) -> bool | str:
    """Whether ``values`` never increase and the first exceeds the last (all equal, e.g. all 0, does not count);
    ``"not testable"`` if one is missing (a task without units).
    """
    if values.isna().any():
        return "not testable"
    values = values.to_numpy()
    return bool((np.diff(values) <= 0).all() and values[0] > values[-1])


TASK_ORDER = list(TASKS)
MODALITY_ORDER = ["compound", "crispr", "orf"]
ORDERS = {"tasks harder along the chain": TASK_ORDER, "compound ≥ CRISPR ≥ ORF": MODALITY_ORDER}
"""Claim C4's two chains: the tasks from replicates to compound-gene pairs, the modalities in replicate retrieval."""


def task_and_modality_order(results: pd.DataFrame) -> pd.DataFrame:
    """Per method, the fraction retrieved of each task and of each modality in replicate retrieval, and whether
    each chain of :data:`ORDERS` falls along it (:func:`ordered`).
    """
    by_task = fraction_retrieved(results, by=["method", TASK]).pivot(
        index="method", columns=TASK, values="fraction_retrieved"
    )
    by_modality = fraction_retrieved(results[results[TASK] == REPLICATE_RETRIEVAL], by=["method", MODALITY]).pivot(
        index="method", columns=MODALITY, values="fraction_retrieved"
    )
    order = pd.concat([by_task.reindex(columns=TASK_ORDER), by_modality.reindex(columns=MODALITY_ORDER)], axis=1)
    for name, columns in ORDERS.items():
        order[name] = order[columns].apply(ordered, axis=1)
    return order


def _interval_text(value: float, lower: float, upper: float) -> str:
    """``0.81 [0.75, 0.86]``, or ``1.00 [no interval]`` when the interval is missing (too few independent units),
    or ``no units`` without a value (a group with nothing to test).
    """
    if pd.isna(value):
        return "no units"
    if pd.isna(lower) or pd.isna(upper):
        return f"{value:.2f} [no interval]"
    return f"{value:.2f} [{lower:.2f}, {upper:.2f}]"


def metric_table(
    summary: pd.DataFrame, metric: str, low: str, high: str, methods: Sequence[str], labels: Mapping[str, str]
) -> pd.DataFrame:
    """``metric`` with its interval as text (``0.81 [0.75, 0.86] (n 123/123)``: the units and the perturbation
    sets behind them), one column per method (in ``methods`` order, named by ``labels``), one row per task and
    modality (``row``).
    """
    cells = summary.assign(
        cell=[
            f"{_interval_text(value, lower, upper)} (n {n:.0f}/{sets:.0f})"
            for value, lower, upper, n, sets in summary[[metric, low, high, "n", "n_sets"]].to_numpy(dtype=float)
        ]
    )
    return cells.pivot(index="row", columns="method", values="cell").reindex(columns=methods).rename(columns=labels)


def beside_the_paper(
    by_test: pd.DataFrame, reference: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str]
) -> pd.DataFrame:
    """The fraction retrieved of every method under the paper's test (:func:`by_significance_test`), one column
    per method, with the paper's CellProfiler numbers beside it (:func:`with_paper_columns`; ``reference`` from
    :func:`paper_reference`, indexed by ``row``).
    """
    paper_test = by_test[by_test["test"] == significance.PAPER]
    table = (
        paper_test.assign(row=task_label(paper_test), cell=paper_test["fraction_retrieved"].map("{:.2f}".format))
        .pivot(index="row", columns=METHOD, values="cell")
        .reindex(columns=[m for m in methods if m in set(paper_test[METHOD])])
        .rename(columns=labels)
    )
    return with_paper_columns(table, reference.reindex(table.index))


def with_paper_columns(fraction_table: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """:func:`metric_table` of the fraction retrieved with the paper's CellProfiler numbers beside it: the same
    condition's, and the range over all conditions (:func:`paper_reference`, indexed by ``row``).
    """
    return fraction_table.assign(
        **{
            "paper, same condition (real)": reference["paper_same_condition"].map("{:.2f}".format),
            "paper, all conditions (real)": reference["paper_min"].map("{:.2f}".format)
            + "–"
            + reference["paper_max"].map("{:.2f}".format),
        }
    )


def describe_orders(order: pd.DataFrame, data_label: str) -> str:
    """For each chain of :data:`ORDERS`, the methods (index of :func:`task_and_modality_order`) for which it holds,
    fails, or cannot be tested.
    """

    def methods_where(column: str, value: object) -> str:
        return ", ".join(name for name, v in order[column].items() if v == value) or "none"

    return f"On the {data_label} screen:\n\n" + "\n".join(
        f"- {name}: holds for {methods_where(name, True)}; fails for {methods_where(name, False)}; "
        f"not testable (a task without units) for {methods_where(name, 'not testable')}."
        for name in ORDERS
    )


def describe_pair(paired: pd.DataFrame, a: str, b: str, labels: Mapping[str, str]) -> str:
    """How often method ``a`` beat ``b``, and the reverse, over the task × modality rows of :func:`with_verdicts`."""
    part = paired[(paired["a"] == a) & (paired["b"] == b)]
    if part.empty:
        return f"- {labels[a]} vs {labels[b]}: no task with at least two shared units."
    counts = part["verdict"].value_counts()
    return (
        f"- {labels[a]} vs {labels[b]}: {labels[a]} significantly better in {counts.get('a better', 0)}, "
        f"{labels[b]} in {counts.get('b better', 0)}, no significant difference in "
        f"{counts.get('no significant difference', 0)}, too few independent units in "
        f"{counts.get('too few independent units', 0)} of {len(part)} task × modality rows."
    )


ABLATION_VARIANTS = {
    "none": PostProcessing(variance_filter=False, sphering=False, robustize_per_plate=False),
    "MAD": PostProcessing(variance_filter=False, sphering=False),
    "sphering": PostProcessing(robustize_per_plate=False),
    "sphering + MAD": PostProcessing(),
    "MAD + feature selection": PostProcessing(
        variance_filter=False, sphering=False, feature_selection=PAPER_FEATURE_SELECTION
    ),
}
"""The post-processing variants of the ablation: each step alone, together, and the paper's feature selection."""


def postprocessing_ablation(
    raw: Mapping[str, pd.DataFrame],
    results: pd.DataFrame,
    map_settings: MapSettings,
    labels: Mapping[str, str],
    variants: Mapping[str, PostProcessing] = ABLATION_VARIANTS,
) -> pd.DataFrame:
    """Fraction retrieved and mAP per task of each method's ``raw`` well profiles under every variant; the variant
    a method gets in the main table (:func:`cellstudy.profiling.profiles.postprocessing_for`) reuses its
    ``results`` and is marked ``in_main_table``.
    """
    rows = []
    for method, table in raw.items():
        for variant, config in variants.items():
            used = config == postprocessing_for(method)
            scores = (
                results[results["method"] == method] if used else run_tasks(postprocess(table, config), map_settings)
            )
            rows.append(
                fraction_retrieved(scores, by=[TASK]).assign(
                    method=labels[method], post_processing=variant, in_main_table=used
                )
            )
    return pd.concat(rows, ignore_index=True)
