"""Tests for cellstudy.profiling.profiles: each step against a formula computed by hand with numpy/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import eigh

from cellstudy.profiling import profiles
from cellstudy.profiling.profiles import NEGCON, PLATE, PostProcessing


def make_profiles(n_per_plate: int = 120, n_features: int = 6, seed: int = 0) -> pd.DataFrame:
    """Two plates of correlated features with a plate shift; a third of the wells are negative controls."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_plate
    mixing = rng.normal(size=(n_features, n_features))
    values = rng.normal(size=(n, n_features)) @ mixing + np.repeat([[0.0], [3.0]], n_per_plate, axis=0)
    table = pd.DataFrame(
        {
            PLATE: np.repeat(["P1", "P2"], n_per_plate),
            "Metadata_Well": [f"W{i:03d}" for i in range(n)],
            NEGCON: np.arange(n) % 3 == 0,
            "Metadata_broad_sample": [f"s{i % 7}" for i in range(n)],
        }
    )
    return pd.concat([table, pd.DataFrame(values, columns=[f"f{i}" for i in range(n_features)])], axis=1)


def hand_robustize(table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """(x - median_negcon) / (1.4826 * MAD_negcon) per plate, with numpy."""
    out = table[features].to_numpy(dtype=float).copy()
    for plate in table[PLATE].unique():
        rows = (table[PLATE] == plate).to_numpy()
        negcon = table.loc[rows & table[NEGCON].to_numpy(), features].to_numpy()
        median = np.median(negcon, axis=0)
        mad = 1.4826 * np.median(np.abs(negcon - median), axis=0)
        out[rows] = (out[rows] - median) / mad
    return pd.DataFrame(out, columns=features, index=table.index)


def test_robustize_matches_hand_formula_per_plate():
    table = make_profiles()
    result = profiles.robustize_per_plate(table)
    features = profiles.feature_columns(table)
    expected = hand_robustize(table, features)
    np.testing.assert_allclose(result[features].to_numpy(), expected.to_numpy(), rtol=1e-4)
    pd.testing.assert_frame_equal(result[profiles.metadata_columns(table)], table[profiles.metadata_columns(table)])


def test_robustize_drops_features_with_zero_negcon_mad():
    table = make_profiles()
    on_p2_negcon = (table[PLATE] == "P2") & table[NEGCON]
    table["flat_on_p2"] = np.where(on_p2_negcon, 1.0, table["f0"])
    table["missing_on_p1"] = np.where(table[PLATE] == "P1", np.nan, table["f1"])
    with pytest.warns(
        UserWarning, match=r"2 feature.*flat_on_p2 \(plates \['P2'\]\).*missing_on_p1 \(plates \['P1'\]\)"
    ):
        result = profiles.robustize_per_plate(table)
    assert {"flat_on_p2", "missing_on_p1"}.isdisjoint(result.columns)
    assert np.isfinite(result[profiles.feature_columns(result)].to_numpy()).all()


def test_robustize_names_a_plate_without_negative_controls():
    table = make_profiles()
    table.loc[table[PLATE] == "P2", NEGCON] = False
    with pytest.raises(ValueError, match="P2"):
        profiles.robustize_per_plate(table)


def test_zca_sphering_whitens_negative_controls_and_equals_the_inverse_square_root():
    table = make_profiles(n_per_plate=400)
    features = profiles.feature_columns(table)
    result = profiles.sphere(table, fit_on="negcon", method="ZCA")
    negcon = result.loc[result[NEGCON], features].to_numpy()
    np.testing.assert_allclose(np.cov(negcon, rowvar=False), np.eye(len(features)), atol=1e-5)
    # ZCA = (x - mean) @ C^(-1/2), C the negative controls' covariance
    control = table.loc[table[NEGCON], features].to_numpy()
    eigenvalues, eigenvectors = eigh(np.cov(control, rowvar=False))
    inverse_root = eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T
    expected = (table[features].to_numpy() - control.mean(axis=0)) @ inverse_root
    np.testing.assert_allclose(result[features].to_numpy(), expected, atol=1e-4)


def test_variance_filter_drops_planted_constant_and_near_constant_columns():
    table = make_profiles()
    rng = np.random.default_rng(1)
    table["constant"] = 5.0
    table["near_constant"] = 5.0 + rng.normal(scale=1e-5, size=len(table))
    table["constant_in_negcon"] = np.where(table[NEGCON], 2.0, rng.normal(size=len(table)))
    result = profiles.variance_filter(table, min_variance=1e-6, fit_on="negcon")
    assert profiles.feature_columns(result) == [f"f{i}" for i in range(6)]
    on_all = profiles.variance_filter(table, min_variance=1e-6, fit_on="all")
    assert "constant_in_negcon" in on_all.columns and "near_constant" not in on_all.columns


def test_feature_selection_drops_correlated_and_missing_columns():
    table = make_profiles()
    table["f0_copy"] = 2 * table["f0"] + 1
    noise = np.random.default_rng(2).normal(size=len(table))
    table["mostly_missing"] = np.where(np.arange(len(table)) % 2 == 0, np.nan, noise)
    result = profiles.select_features(table, ["correlation_threshold", "drop_na_columns"], PostProcessing())
    kept = profiles.feature_columns(result)
    assert "mostly_missing" not in kept
    assert ("f0" in kept) != ("f0_copy" in kept)  # exactly one of the perfectly correlated pair
    assert {f"f{i}" for i in range(1, 6)} <= set(kept)


def test_postprocess_steps_are_independent_options():
    table = make_profiles()
    only_robustize = PostProcessing(variance_filter=False, sphering=False, robustize_per_plate=True)
    pd.testing.assert_frame_equal(profiles.postprocess(table, only_robustize), profiles.robustize_per_plate(table))
    nothing = PostProcessing(variance_filter=False, sphering=False, robustize_per_plate=False)
    pd.testing.assert_frame_equal(profiles.postprocess(table, nothing), table)


def test_embedding_postprocessing_ends_with_robustized_negative_controls():
    table = make_profiles(n_per_plate=300)
    result = profiles.postprocess(table, profiles.EMBEDDING_POSTPROCESSING)
    features = profiles.feature_columns(result)
    for _, plate in result[result[NEGCON]].groupby(PLATE):
        values = plate[features].to_numpy()
        np.testing.assert_allclose(np.median(values, axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(1.4826 * np.median(np.abs(values), axis=0), 1, rtol=1e-6)


def test_classical_preset_robustizes_and_selects_without_sphering():
    table = make_profiles(n_per_plate=300)
    table["f0_copy"] = 2 * table["f0"] + 1
    result = profiles.postprocess(table, profiles.CLASSICAL_POSTPROCESSING)
    features = profiles.feature_columns(result)
    assert ("f0" in features) != ("f0_copy" in features)
    expected = hand_robustize(table, features)  # robustized, not whitened: features stay correlated
    np.testing.assert_allclose(result[features].to_numpy(), expected.to_numpy(), rtol=1e-4)
    assert np.abs(np.corrcoef(result.loc[result[NEGCON], features], rowvar=False) - np.eye(len(features))).max() > 0.3


def test_consensus_is_the_median_per_perturbation_with_constant_metadata():
    table = make_profiles()
    table["Metadata_cell_type"] = "U2OS"
    table["Metadata_modality"] = "compound"
    table["Metadata_timepoint"] = 24
    table["Metadata_target_list"] = table["Metadata_broad_sample"].str.upper()
    result = profiles.consensus(table)
    features = profiles.feature_columns(table)
    assert len(result) == table["Metadata_broad_sample"].nunique()
    for row in result.itertuples(index=False):
        wells = table[table["Metadata_broad_sample"] == row.Metadata_broad_sample]
        np.testing.assert_allclose([getattr(row, f) for f in features], np.median(wells[features], axis=0))
        assert row.Metadata_target_list == row.Metadata_broad_sample.upper()
    assert "Metadata_Well" not in result.columns and PLATE not in result.columns


def test_consensus_names_a_key_with_missing_values():
    table = make_profiles()
    table["Metadata_cell_type"], table["Metadata_modality"], table["Metadata_timepoint"] = "U2OS", "orf", 48
    table.loc[3, "Metadata_broad_sample"] = None
    with pytest.raises(ValueError, match="Metadata_broad_sample"):
        profiles.consensus(table)


def test_feature_columns_names_a_non_numeric_column():
    table = make_profiles().assign(label="x")
    with pytest.raises(ValueError, match="label"):
        profiles.feature_columns(table)


def test_postprocess_drops_wells_without_cells_and_names_them():
    rng = np.random.default_rng(0)
    wells = pd.DataFrame(
        {
            "Metadata_Plate": "P1",
            "Metadata_Well": [f"A{i:02d}" for i in range(1, 13)],
            "Metadata_negcon": [True] * 6 + [False] * 6,
        }
    )
    features = pd.DataFrame(rng.normal(size=(12, 3)), columns=["f1", "f2", "f3"])
    features.iloc[7] = np.nan  # a well without cells
    table = pd.concat([wells, features], axis=1)
    config = PostProcessing(variance_filter=False, sphering=False)
    with pytest.warns(UserWarning, match="A08"):
        processed = profiles.postprocess(table, config)
    assert "A08" not in set(processed["Metadata_Well"]) and len(processed) == 11
    assert np.isfinite(processed[["f1", "f2", "f3"]].to_numpy()).all()


def test_standardise_and_cosine_matrix_agree_with_sklearn():
    from sklearn.metrics.pairwise import cosine_similarity
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 4))
    values[:, 3] = 2.0  # constant: dropped
    table = pd.concat(
        [pd.DataFrame({"Metadata_Well": list("ABCDEF")}), pd.DataFrame(values, columns=["a", "b", "c", "d"])], axis=1
    )
    standard = profiles.standardise(table)
    assert profiles.feature_columns(standard) == ["a", "b", "c"]
    expected = StandardScaler().fit_transform(values[:, :3]) * np.sqrt(5 / 6)  # pandas std uses n - 1
    np.testing.assert_allclose(standard[["a", "b", "c"]].to_numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(profiles.cosine_similarity_matrix(standard), cosine_similarity(expected), atol=1e-12)


def test_each_method_gets_the_study_postprocessing():
    assert profiles.postprocessing_for("classical") == profiles.CLASSICAL_POSTPROCESSING
    assert profiles.postprocessing_for("oracle") == profiles.ORACLE_POSTPROCESSING
    for method in ("dino", "mae", "random_vit", "pixel_stats"):
        assert profiles.postprocessing_for(method) == profiles.EMBEDDING_POSTPROCESSING


def test_describe_steps_lists_the_switched_on_steps_in_order_with_their_settings():
    embedding = profiles.describe_steps(PostProcessing(min_variance=0.5, sphering_method="PCA", sphering_fit_on="all"))
    assert [step.split()[0] for step in embedding] == ["variance", "PCA", "per-plate"]
    assert "0.5" in embedding[0] and "all wells" in embedding[1]
    classical = profiles.describe_steps(profiles.CLASSICAL_POSTPROCESSING)
    assert len(classical) == 2 and classical[1].startswith("feature selection (frequency_threshold")
    assert (
        profiles.describe_steps(PostProcessing(variance_filter=False, sphering=False, robustize_per_plate=False)) == []
    )
