"""The ceiling the planted biology sets on compound–gene matching.

A profile can at best recover the simulator's noise-free latent phenotypes
(:mod:`cellstudy.phenotypes`). Ranking every simulated gene for each compound
by the absolute cosine between those phenotypes (the compound's against the
mean of the gene's perturbations in one genetic modality) gives the matching
that a perfect, noise-free measurement would achieve: where compounds and
their targets' knockouts share little by design, no profile can match them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellstudy.phenotypes import latent_columns

GENE = "Metadata_gene"
"""Ground-truth column naming a genetic perturbation's gene."""


def gene_phenotypes(ground_truth: pd.DataFrame, modality: str) -> pd.DataFrame:
    """Per (cell type, gene): the mean latent phenotype of the gene's ``modality`` perturbations (its guides or
    ORF); negative controls are left out."""
    rows = ground_truth[(ground_truth["Metadata_modality"] == modality) & ~ground_truth["Metadata_negcon"].astype(bool)]
    if rows.empty:
        raise ValueError(f"ground truth has no {modality!r} perturbations")
    return rows.groupby(["Metadata_cell_type", GENE])[latent_columns()].mean()


def _unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1 (zero rows stay zero)."""
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)


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
    compounds = ground_truth[(ground_truth["Metadata_modality"] == "compound") & ~ground_truth["Metadata_negcon"]]
    rows = []
    for record in compounds.to_dict("records"):
        panel = genes.loc[record["Metadata_cell_type"]]
        targets = set(str(record["Metadata_target_list"]).split("|"))
        positive = panel.index.isin(targets)
        if not positive.any():
            continue
        compound = _unit_rows(np.array([[record[column] for column in latent_columns()]]))[0]
        cosine = _unit_rows(panel.to_numpy()) @ compound
        ranks = pd.Series(np.abs(cosine), index=panel.index).rank(ascending=False, method="average")
        best = ranks[positive].idxmin()
        rows.append({
            "Metadata_cell_type": record["Metadata_cell_type"],
            "Metadata_broad_sample": record["Metadata_broad_sample"],
            "Metadata_pert_iname": record["Metadata_pert_iname"],
            "n_genes": len(panel),
            "best_rank": float(ranks[best]),
            "average_precision": average_precision(np.abs(cosine), positive),
            "cosine": float(cosine[panel.index.get_loc(best)]),
        })
    return pd.DataFrame(rows)
