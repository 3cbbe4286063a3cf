"""Tests for cellstudy.simulation.phenotypes: the planted phenotype model against its defining formulas."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cellstudy.simulation import phenotypes as ph

CONFIG = ph.PhenotypeConfig()
GENES = [f"G{i:03d}" for i in range(200)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def table(rows: list[tuple]) -> pd.DataFrame:
    """A perturbation table from (broad_sample, modality, gene, target_list, negcon) tuples."""
    columns = ["Metadata_broad_sample", "Metadata_modality", "Metadata_gene", "Metadata_target_list", "Metadata_negcon"]
    return pd.DataFrame(rows, columns=columns)


def test_keyed_rng_depends_on_seed_and_keys_only():
    draw = ph.keyed_rng(3, "gene", "PLK1").random(4)
    assert np.array_equal(draw, ph.keyed_rng(3, "gene", "PLK1").random(4))
    assert not np.array_equal(draw, ph.keyed_rng(3, "gene", "PLK2").random(4))
    assert not np.array_equal(draw, ph.keyed_rng(4, "gene", "PLK1").random(4))


def test_axes_are_named_and_have_positive_gains():
    assert len(set(ph.AXIS_NAMES)) == ph.N_AXES == len(ph.AXIS_GAINS)
    assert (ph.AXIS_GAINS > 0).all()
    assert ph.latent_columns()[0] == "Latent_" + ph.AXIS_NAMES[0]


def test_visible_share_of_genes_matches_config():
    visible = sum(ph.gene_phenotype(gene, "U2OS", CONFIG, seed=0).any() for gene in GENES)
    # two-sided binomial test at the 0.1% level
    assert stats.binomtest(visible, len(GENES), CONFIG.visible_fraction).pvalue > 1e-3


def test_gene_norm_is_log_normal_around_config():
    norms = [np.linalg.norm(ph.gene_phenotype(g, "U2OS", CONFIG, 0, force_visible=True)) for g in GENES]
    logs = np.log(norms)
    assert abs(np.median(logs) - np.log(CONFIG.gene_norm)) < 0.15
    assert abs(np.std(logs) - CONFIG.gene_norm_sd) < 0.1


def test_cell_types_see_correlated_phenotypes_of_equal_norm():
    for gene in GENES[:30]:
        u2os = ph.gene_phenotype(gene, "U2OS", CONFIG, 0, force_visible=True)
        a549 = ph.gene_phenotype(gene, "A549", CONFIG, 0, force_visible=True)
        assert np.linalg.norm(u2os) == pytest.approx(np.linalg.norm(a549))
        assert set(np.flatnonzero(u2os)) == set(np.flatnonzero(a549))
        # a variant sits at cosine rho to the shared base, so two variants are at least 2 rho^2 - 1 apart
        assert cosine(u2os, a549) >= 2 * CONFIG.cell_type_correlation**2 - 1 - 1e-9


def test_correlated_variant_has_exact_cosine_and_norm():
    rng = np.random.default_rng(0)
    vector = np.zeros(ph.N_AXES)
    vector[[1, 4, 7]] = [1.0, -2.0, 0.5]
    variant = ph.correlated_variant(rng, vector, 0.6)
    assert cosine(variant, vector) == pytest.approx(0.6)
    assert np.linalg.norm(variant) == pytest.approx(np.linalg.norm(vector))
    single = np.zeros(ph.N_AXES)
    single[3] = 2.0
    assert np.array_equal(ph.correlated_variant(rng, single, 0.6), single)


def test_sparse_direction_is_unit_and_sparse():
    rng = np.random.default_rng(1)
    supports = []
    for _ in range(300):
        direction = ph.sparse_direction(rng, 3.0)
        assert np.linalg.norm(direction) == pytest.approx(1.0)
        supports.append(np.count_nonzero(direction))
    assert min(supports) >= 1
    assert np.mean(supports) == pytest.approx(3.0, abs=0.3)


def test_guide_failure_share_and_efficiency_range():
    efficiencies = np.array([ph.guide_efficiency(f"sg{i}", CONFIG, 0) for i in range(2000)])
    assert ((efficiencies >= 0) & (efficiencies <= 1)).all()
    assert stats.binomtest(int((efficiencies == 0).sum()), 2000, CONFIG.guide_failure_fraction).pvalue > 1e-3
    a, b = CONFIG.guide_efficiency_beta
    assert efficiencies[efficiencies > 0].mean() == pytest.approx(a / (a + b), abs=0.02)


def test_orf_is_weak_and_correlated_with_the_knockout_by_config():
    config = replace(CONFIG, orf_visible_fraction=1.0)
    for gene in GENES[:40]:
        orf = ph.orf_phenotype(f"orf_{gene}", gene, "U2OS", config, 0)
        knockout = ph.gene_phenotype(gene, "U2OS", config, 0)
        assert np.linalg.norm(orf) == pytest.approx(config.orf_norm)
        if knockout.any():
            assert cosine(orf, knockout) == pytest.approx(config.orf_knockout_correlation)


def test_inhibition_has_the_knockout_norm_at_the_configured_cosine():
    for gene in GENES[:40]:
        knockout = ph.gene_phenotype(gene, "U2OS", CONFIG, 0)
        inhibition = ph.inhibition_phenotype(gene, "U2OS", CONFIG, 0)
        assert np.linalg.norm(inhibition) == pytest.approx(np.linalg.norm(knockout))
        if knockout.any() and not np.allclose(inhibition, knockout):  # else the variant had no other direction
            assert cosine(inhibition, knockout) == pytest.approx(CONFIG.inhibition_knockout_correlation)
    identical = replace(CONFIG, inhibition_knockout_correlation=1.0)
    assert np.allclose(
        ph.inhibition_phenotype("G007", "U2OS", identical, 0, force_visible=True),
        ph.gene_phenotype("G007", "U2OS", identical, 0, force_visible=True),
    )


def test_guides_carry_their_own_off_target_of_configured_norm():
    for i in range(30):
        off_target = ph.guide_off_target(f"sg{i}", "U2OS", CONFIG, 0)
        assert np.linalg.norm(off_target) == pytest.approx(CONFIG.guide_off_target_norm)
    first, second = (ph.guide_off_target(guide, "U2OS", CONFIG, 0) for guide in ("sgA", "sgB"))
    assert not np.allclose(first, second)
    assert not ph.guide_off_target("sgA", "U2OS", replace(CONFIG, guide_off_target_norm=0.0), 0).any()


def test_compound_is_its_targets_mix_without_off_target_or_polypharmacology():
    config = replace(CONFIG, off_target_norm=0.0, polypharmacology_fraction=0.0, visible_fraction=1.0)
    targets = ["G001", "G002", "G003"]
    compound = ph.compound_phenotype("BRD-X", [*targets, "NOT_SIMULATED"], targets[:2], "U2OS", config, 0, GENES)
    assert set(compound.target_weights) == {"G001", "G002"}
    assert sum(compound.target_weights.values()) == pytest.approx(1.0)
    basis = np.stack([ph.inhibition_phenotype(g, "U2OS", config, 0) for g in targets[:2]], axis=1)
    coefficients = np.linalg.lstsq(basis, compound.vector, rcond=None)[0]
    assert np.allclose(basis @ coefficients, compound.vector)
    weights = np.array([compound.target_weights[g] for g in targets[:2]])
    assert np.allclose(coefficients / coefficients.sum(), weights)
    assert compound.driver is None


def test_polypharmacology_driver_is_unannotated_and_drives_the_phenotype():
    config = replace(CONFIG, off_target_norm=0.0, polypharmacology_fraction=1.0)
    annotated = ["G001", "G002"]
    compound = ph.compound_phenotype("BRD-Y", annotated, GENES, "U2OS", config, 0, GENES)
    assert compound.driver is not None and compound.driver not in annotated
    driver = ph.inhibition_phenotype(compound.driver, "U2OS", config, 0, force_visible=True)
    assert cosine(compound.vector, driver) == pytest.approx(1.0)
    assert all(weight == 0 for weight in compound.target_weights.values())


def test_perturbation_phenotypes_follow_the_modality_rules():
    perturbations = table(
        [
            ("sgA", "crispr", "G001", "G001", False),
            ("sgB", "crispr", "G001", "G001", False),
            ("neg", "crispr", None, None, True),
            ("orfA", "orf", "G001", "G001", False),
            ("BRD-1", "compound", None, "G001|OTHER", False),
            ("DMSO", "compound", None, None, True),
        ]
    )
    out = ph.perturbation_phenotypes(perturbations, ["G001"], ["U2OS", "A549"], CONFIG, 5, GENES)
    assert len(out) == 12
    latent = out.set_index(["Metadata_broad_sample", "Metadata_cell_type"])[ph.latent_columns()]
    for cell_type in ("U2OS", "A549"):
        gene = ph.gene_phenotype("G001", cell_type, CONFIG, 5)
        for guide in ("sgA", "sgB"):
            off_target = ph.guide_off_target(guide, cell_type, CONFIG, 5)
            expected = ph.guide_efficiency(guide, CONFIG, 5) * (CONFIG.crispr_scale * gene + off_target)
            assert np.allclose(latent.loc[(guide, cell_type)], expected)
        assert np.allclose(latent.loc[("neg", cell_type)], 0)
        assert np.allclose(latent.loc[("DMSO", cell_type)], 0)
    compound = out[out["Metadata_broad_sample"] == "BRD-1"]
    assert (compound["targets_simulated"] == "G001").all()
    assert np.allclose(out["phenotype_norm"], np.linalg.norm(out[ph.latent_columns()], axis=1))


def test_unknown_modality_and_missing_gene_are_named():
    with pytest.raises(ValueError, match="'x1'.*'imaging'"):
        ph.perturbation_phenotypes(table([("x1", "imaging", "G001", "G001", False)]), GENES, ["U2OS"], CONFIG, 0, GENES)
    with pytest.raises(ValueError, match="'sgZ' has no Metadata_gene"):
        ph.perturbation_phenotypes(table([("sgZ", "crispr", None, None, False)]), GENES, ["U2OS"], CONFIG, 0, GENES)


def test_compound_gene_truth_marks_visible_annotated_targets_and_drivers():
    config = replace(CONFIG, polypharmacology_fraction=0.3)
    genes = GENES[:40]
    rng = np.random.default_rng(0)
    rows = [(f"BRD-{i}", "compound", None, "|".join(rng.choice(genes, 2, replace=False)), False) for i in range(60)]
    perturbations = table(rows)
    truth = ph.compound_gene_truth(perturbations, genes, ["U2OS"], config, 0, GENES)
    annotations = dict(
        zip(perturbations["Metadata_broad_sample"], perturbations["Metadata_target_list"].str.split("|"))
    )
    drivers = ph.perturbation_phenotypes(perturbations, genes, ["U2OS"], config, 0, GENES).set_index(
        "Metadata_broad_sample"
    )["driver_gene"]
    for row in truth.itertuples():
        visible = ph.gene_phenotype(row.Metadata_gene, "U2OS", config, 0).any()
        assert row.annotated == (row.Metadata_gene in annotations[row.Metadata_broad_sample])
        if drivers[row.Metadata_broad_sample]:
            assert row.shares_phenotype == (row.Metadata_gene == drivers[row.Metadata_broad_sample] and visible)
        else:
            assert row.shares_phenotype == visible
    # every annotated simulated pair is listed once
    assert truth["annotated"].sum() == sum(len(set(t) & set(genes)) for t in annotations.values())
    assert truth.loc[~truth["annotated"], "weight"].eq(1.0).all()
    assert (
        truth.loc[truth["shares_phenotype"], "cosine"].mean()
        > truth.loc[~truth["shares_phenotype"], "cosine"].abs().mean()
    )
