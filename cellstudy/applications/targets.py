"""Where a compound's annotated target ranks among the genes its profile is compared with (claim C6).

For every compound and genetic modality, the genes are ranked by how much their profile looks like the
compound's (:func:`cellstudy.applications.query.true_target_ranks`); the rank of the best annotated target is
compared with chance (:func:`cellstudy.applications.claims.expected_best_rank`). On the simulated screen the
planted noise-free phenotypes give the ceiling (:func:`cellstudy.simulation.planted.target_ranks`) and the
polypharmacology driver of each compound is known; on a real screen neither is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from cellstudy.applications import query
from cellstudy.applications.claims import expected_best_rank
from cellstudy.columns import (
    CELL_TYPE,
    GENE,
    GENETIC_MODALITY,
    GENETIC_TIMEPOINT,
    MODALITY,
    NAME,
    SAMPLE,
    TARGET_LIST,
    TIMEPOINT,
)
from cellstudy.simulation import planted

PLANTED = "planted"
"""``method`` of the planted noise-free ceiling's rows."""
COMPOUND_KEY = [CELL_TYPE, SAMPLE]
"""A compound in one cell type."""


def n_targets_among(target_list: object, genes: set) -> int:
    """How many genes of a ``|``-separated target list are in ``genes`` (0 without a list)."""
    return len(set(str(target_list).split("|")) & genes) if isinstance(target_list, str) else 0


def compound_annotations(consensus: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Each compound's target list (index: cell type, broad sample), from every method's consensus profiles."""
    compounds = (
        pd.concat([query.compound_profiles(table) for table in consensus.values()])
        .drop_duplicates(COMPOUND_KEY)
        .set_index(COMPOUND_KEY)
    )
    return compounds[TARGET_LIST]


def polypharmacology_drivers(target_list: pd.Series, ground_truth: pd.DataFrame | None) -> pd.Series:
    """Each compound's unannotated driver gene as the simulation planted it; empty where none or on a real screen."""
    driver = pd.Series("", index=target_list.index)
    if ground_truth is not None:
        truth = ground_truth[ground_truth[MODALITY] == "compound"]
        driver.update(truth.drop_duplicates(COMPOUND_KEY).set_index(COMPOUND_KEY)["driver_gene"].fillna(""))
    return driver


def method_ranks(
    consensus: pd.DataFrame,
    method: str,
    target_list: pd.Series,
    driver: pd.Series,
    modalities: Sequence[str],
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`cellstudy.applications.query.true_target_ranks` of a method's consensus profiles, with the compound's
    annotated targets among the list's genes (``n_targets``) and its driver gene (``driver_gene``).
    """
    ranks = query.true_target_ranks(consensus, pairs, modalities)
    genes = (
        pd.concat([query.gene_profiles(consensus, m) for m in modalities])
        .groupby([CELL_TYPE, MODALITY, TIMEPOINT])[GENE]
        .agg(set)
    )
    keys = list(zip(ranks[CELL_TYPE], ranks[SAMPLE], strict=True))
    lists = zip(ranks[CELL_TYPE], ranks[GENETIC_MODALITY], ranks[GENETIC_TIMEPOINT], strict=True)
    return ranks.assign(
        method=method,
        driver_gene=[driver[k] for k in keys],
        n_targets=[n_targets_among(target_list[k], genes[g]) for k, g in zip(keys, lists, strict=True)],
    )


def ceiling_ranks(ground_truth: pd.DataFrame, modality: str, target_list: pd.Series, driver: pd.Series) -> pd.DataFrame:
    """:func:`cellstudy.simulation.planted.target_ranks` in the columns of :func:`method_ranks`."""
    ceiling = planted.target_ranks(ground_truth, modality)
    genes = planted.gene_phenotypes(ground_truth, modality).reset_index().groupby(CELL_TYPE)[GENE].agg(set)
    keys = list(zip(ceiling[CELL_TYPE], ceiling[SAMPLE], strict=True))
    return ceiling.rename(columns={"best_rank": "annotated_rank"}).assign(
        method=PLANTED,
        **{GENETIC_MODALITY: modality},
        n_targets=[n_targets_among(target_list[k], genes[k[0]]) for k in keys],
        driver_gene=[driver[k] for k in keys],
    )


def target_ranks(
    consensus: Mapping[str, pd.DataFrame],
    modalities: Sequence[str],
    ground_truth: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The annotated target's rank for every method's consensus profiles (and the planted ceiling where the
    simulation's ``ground_truth`` is given), with the ``chance_rank`` of each list and whether the compound is
    ``driven_by_unannotated_gene``.
    """
    target_list = compound_annotations(consensus)
    driver = polypharmacology_drivers(target_list, ground_truth)
    ceilings = [] if ground_truth is None else [ceiling_ranks(ground_truth, m, target_list, driver) for m in modalities]
    ranks = pd.concat(
        [
            *(
                method_ranks(table, method, target_list, driver, modalities, pairs)
                for method, table in consensus.items()
            ),
            *ceilings,
        ],
        ignore_index=True,
    )
    ranks["chance_rank"] = [expected_best_rank(n, k) for n, k in zip(ranks["n_genes"], ranks["n_targets"], strict=True)]
    ranks["driven_by_unannotated_gene"] = ranks["driver_gene"] != ""
    return ranks


def rank_summary(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per method and genetic modality: compounds, genes, median annotated (and true, where known) and chance
    rank, and the share of compounds whose annotated target ranks first and in the top five.
    """
    truth = {"median_true_rank": ("true_rank", "median")} if "true_rank" in ranks else {}
    return (
        ranks.groupby(["method", GENETIC_MODALITY], sort=False)
        .agg(
            compounds=("annotated_rank", "size"),
            genes=("n_genes", "median"),
            median_annotated_rank=("annotated_rank", "median"),
            median_chance_rank=("chance_rank", "median"),
            top1=("annotated_rank", lambda rank: (rank == 1).mean()),
            top5=("annotated_rank", lambda rank: (rank <= 5).mean()),
            **truth,
        )
        .reset_index()
    )


def showcase_method(ranks: pd.DataFrame, methods: Sequence[str], modality: str = "crispr") -> str:
    """The method among ``methods`` whose annotated ``modality`` targets rank best (lowest median)."""
    part = ranks[ranks[GENETIC_MODALITY] == modality]
    return min(methods, key=lambda m: part.loc[part["method"] == m, "annotated_rank"].median())


def top_genes(consensus: pd.DataFrame, compound: str, modalities: Sequence[str], top: int = 5) -> pd.DataFrame:
    """The top of a compound's ranked gene lists."""
    ranked = query.rank_genes(consensus, compound, modalities)
    return ranked[ranked["rank"] <= top][
        [GENETIC_MODALITY, "rank", GENE, "cosine", "p_value", "q_value", "is_annotated_target"]
    ]


def gene_ranks(consensus: pd.DataFrame, compound: str, genes: Sequence[str], modalities: Sequence[str]) -> pd.DataFrame:
    """Where ``genes`` rank in a compound's lists."""
    ranked = query.rank_genes(consensus, compound, modalities)
    return ranked[ranked[GENE].isin(genes)][[GENETIC_MODALITY, GENE, "rank", "cosine", "p_value"]]


def clean_hit(shown: pd.DataFrame, consensus: pd.DataFrame, modalities: Sequence[str]) -> pd.Series | None:
    """Among compounds not driven by an unannotated gene, one whose annotated target ranks best (ties: the smaller
    CRISPR pair p-value, then the broad sample); ``None`` if there is none.
    """
    clean = shown[~shown["driven_by_unannotated_gene"]]
    if clean.empty:
        return None
    best = clean[clean["annotated_rank"] == clean["annotated_rank"].min()]
    pair_p = [
        gene_ranks(consensus, s, [t], modalities).query(f"{GENETIC_MODALITY} == 'crispr'")["p_value"].min()
        for s, t in zip(best[SAMPLE], best["annotated_target"], strict=True)
    ]
    return best.assign(pair_p=pair_p).sort_values(["pair_p", SAMPLE]).iloc[0]


def polypharmacology_miss(shown: pd.DataFrame, consensus: pd.DataFrame) -> pd.Series | None:
    """Among compounds driven by an unannotated gene, one whose driver the screen perturbs (if any) and whose
    annotated target ranks worst; ``None`` if no compound is driven by an unannotated gene.
    """
    misses = shown[shown["driven_by_unannotated_gene"]]
    if misses.empty:
        return None
    perturbed = set(query.gene_profiles(consensus, "crispr")[GENE])
    return (
        misses.assign(driver_perturbed=misses["driver_gene"].isin(perturbed))
        .sort_values(["driver_perturbed", "annotated_rank", SAMPLE], ascending=[False, False, True])
        .iloc[0]
    )


def describe_hit(hit: pd.Series, method_label: str, data_label: str) -> str:
    """The clean hit in a sentence."""
    return (
        f"**Clean hit: {hit[NAME]}** ({hit[SAMPLE]}), annotated target {hit['annotated_target']} at rank "
        f"{hit['annotated_rank']:.0f} of {hit['n_genes']} CRISPR genes ({method_label} profile, {data_label} data)."
    )
