"""The ceiling the planted biology sets on compound–gene matching.

A profile can at best recover the simulator's noise-free latent phenotypes
(:mod:`cellstudy.simulation.phenotypes`). Ranking every simulated gene for each compound
by the absolute cosine between those phenotypes (the compound's against the
mean of the gene's perturbations in one genetic modality) gives the matching
that a perfect, noise-free measurement would achieve: where compounds and
their targets' knockouts share little by design, no profile can match them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellstudy.columns import (
    CELL_TYPE,
    GENE,
    MODALITY,
    NAME,
    NEGCON,
    SAMPLE,
    TARGET_LIST,
)
from cellstudy.similarity import unit_rows
from cellstudy.simulation.phenotypes import latent_columns


def gene_phenotypes(ground_truth: pd.DataFrame, modality: str) -> pd.DataFrame:
    """Per (cell type, gene): the mean latent phenotype of the gene's ``modality`` perturbations (its guides or
    ORF); negative controls are left out.
    """
    rows = ground_truth[(ground_truth[MODALITY] == modality) & ~ground_truth[NEGCON].astype(bool)]
    if rows.empty:
        raise ValueError(f"ground truth has no {modality!r} perturbations")
    return rows.groupby([CELL_TYPE, GENE])[latent_columns()].mean()


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ranking by descending ``scores`` (ties broken by order), ``nan`` without positives."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def target_ranks(ground_truth: pd.DataFrame, modality: str = "crispr") -> pd.DataFrame:
    """For each treated compound and cell type: where its annotated simulated targets rank among all simulated genes.

    Genes are ranked by the absolute cosine between the compound's noise-free
    latent phenotype and the gene's (:func:`gene_phenotypes`). Returns one row
    per compound with ``n_genes``, ``best_rank`` (1 = top; tied genes share their mean rank) of its targets, the
    ``average_precision`` of that ranking and ``cosine`` (signed, of the best-ranked target).
    """
    genes = gene_phenotypes(ground_truth, modality)
    compounds = ground_truth[(ground_truth[MODALITY] == "compound") & ~ground_truth[NEGCON]]
    rows = []
    for record in compounds.to_dict("records"):
        panel = genes.loc[record[CELL_TYPE]]
        targets = set(str(record[TARGET_LIST]).split("|"))
        positive = panel.index.isin(targets)
        if not positive.any():
            continue
        compound = unit_rows(np.array([[record[column] for column in latent_columns()]]))[0]
        cosine = unit_rows(panel.to_numpy()) @ compound
        ranks = pd.Series(np.abs(cosine), index=panel.index).rank(ascending=False, method="average")
        best = ranks[positive].idxmin()
        rows.append(
            {
                CELL_TYPE: record[CELL_TYPE],
                SAMPLE: record[SAMPLE],
                NAME: record[NAME],
                "n_genes": len(panel),
                "best_rank": float(ranks[best]),
                "average_precision": average_precision(np.abs(cosine), positive),
                "cosine": float(cosine[panel.index.get_loc(best)]),
            }
        )
    return pd.DataFrame(rows)
