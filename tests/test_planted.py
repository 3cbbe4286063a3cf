"""Tests for cellstudy.simulation.planted: the noise-free compound–gene matching ceiling."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from cellstudy.simulation import planted
from cellstudy.simulation.phenotypes import N_AXES, latent_columns


def perturbation(sample, modality, gene, targets, vector):
    row = {
        "Metadata_broad_sample": sample,
        "Metadata_modality": modality,
        "Metadata_pert_iname": sample,
        "Metadata_gene": gene,
        "Metadata_target_list": targets,
        "Metadata_negcon": False,
        "Metadata_cell_type": "U2OS",
    }
    return {**row, **dict(zip(latent_columns(), np.pad(vector, (0, N_AXES - len(vector)))))}


@pytest.fixture
def ground_truth():
    return pd.DataFrame(
        [
            perturbation("gA-1", "crispr", "A", "A", [1.0, 0.0, 0.0]),
            perturbation("gA-2", "crispr", "A", "A", [1.0, 0.2, 0.0]),  # gene A's mean: (1, 0.1, 0)
            perturbation("gB-1", "crispr", "B", "B", [0.0, 1.0, 0.0]),
            perturbation("gC-1", "crispr", "C", "C", [0.0, 0.0, 2.0]),
            perturbation("orf-A", "orf", "A", "A", [0.0, 0.0, 1.0]),
            {**perturbation("gLacZ", "crispr", "LacZ", None, [0.0, 0.0, 0.0]), "Metadata_negcon": True},
            perturbation("cpd-hit", "compound", None, "A", [-2.0, 0.0, 0.1]),  # opposite of A: |cosine| ranks it first
            perturbation("cpd-miss", "compound", None, "A|B", [0.0, 0.1, 1.0]),  # looks like C
            perturbation("cpd-none", "compound", None, "Z", [1.0, 0.0, 0.0]),  # no simulated target: skipped
        ]
    )


def test_gene_phenotypes_average_a_genes_guides(ground_truth):
    genes = planted.gene_phenotypes(ground_truth, "crispr")
    np.testing.assert_allclose(genes.loc[("U2OS", "A")].to_numpy()[:3], [1.0, 0.1, 0.0])
    assert sorted(genes.loc["U2OS"].index) == ["A", "B", "C"]  # the negative control is not a gene
    with pytest.raises(ValueError, match="'compound2'"):
        planted.gene_phenotypes(ground_truth, "compound2")


def test_target_ranks_by_absolute_cosine_with_sign_kept(ground_truth):
    ranks = planted.target_ranks(ground_truth, "crispr").set_index("Metadata_broad_sample")
    assert list(ranks.index) == ["cpd-hit", "cpd-miss"] and (ranks["n_genes"] == 3).all()
    assert ranks.loc["cpd-hit", "best_rank"] == 1 and ranks.loc["cpd-hit", "cosine"] < -0.9
    assert ranks.loc["cpd-miss", "best_rank"] == 2  # B (cosine 0.1) after C
    genes = planted.gene_phenotypes(ground_truth, "crispr").to_numpy()
    compound = ground_truth.set_index("Metadata_broad_sample").loc["cpd-miss", latent_columns()].to_numpy(float)
    cosine = genes @ compound / np.linalg.norm(genes, axis=1) / np.linalg.norm(compound)
    expected = average_precision_score([1, 1, 0], np.abs(cosine))
    assert ranks.loc["cpd-miss", "average_precision"] == pytest.approx(expected)


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores, positive = rng.random(12), rng.random(12) < 0.3
        if positive.any():
            assert planted.average_precision(scores, positive) == pytest.approx(
                average_precision_score(positive, scores)
            )
    assert np.isnan(planted.average_precision(np.ones(3), np.zeros(3, bool)))


def test_tied_genes_share_their_mean_rank(ground_truth):
    tied = ground_truth.copy()
    tied.loc[tied["Metadata_broad_sample"] == "cpd-miss", "Latent_nuclear_size"] = 1.0  # cosine 0 with B and C
    tied.loc[tied["Metadata_broad_sample"] == "cpd-miss", ["Latent_nuclear_intensity", "Latent_chromatin_texture"]] = (
        0.0
    )
    tied.loc[tied["Metadata_broad_sample"] == "cpd-miss", "Metadata_target_list"] = "B"
    ranks = planted.target_ranks(tied, "crispr").set_index("Metadata_broad_sample")
    assert ranks.loc["cpd-miss", "best_rank"] == 2.5  # B ties with C for ranks 2 and 3
