"""Tests for cellstudy.stats: the bootstrap interval against the normal approximation, the paired test
against SciPy's Wilcoxon test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from cellstudy import stats


def test_bootstrap_ci_width_matches_the_normal_approximation():
    values = np.random.default_rng(0).normal(loc=2.0, size=400)
    mean, low, high = stats.bootstrap_ci(values, n_boot=4000, seed=0)
    assert mean == pytest.approx(values.mean())
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert low < mean < high
    assert stats.bootstrap_ci(values, n_boot=4000, seed=0) == (mean, low, high)
    assert stats.bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3, 0.3)


def test_paired_test_matches_perturbations_by_index():
    rng = np.random.default_rng(1)
    a = pd.Series(rng.random(30) + 0.2, index=[f"p{i}" for i in range(30)])
    b = pd.Series(rng.random(30), index=[f"p{i}" for i in range(30)]).sample(frac=1, random_state=0)
    b["only_in_b"] = 5.0
    result = stats.paired_test(a, b, n_boot=2000)
    aligned = b.loc[a.index]
    assert result["n"] == 30
    assert result["mean_difference"] == pytest.approx((a - aligned).mean())
    assert result["wilcoxon_p_value"] == pytest.approx(wilcoxon(a.to_numpy(), aligned.to_numpy()).pvalue)
    assert result["ci_low"] < result["mean_difference"] < result["ci_high"]


def test_paired_test_needs_matched_perturbations():
    with pytest.raises(ValueError, match="at least two"):
        stats.paired_test(pd.Series([1.0], index=["a"]), pd.Series([1.0], index=["b"]))


def test_cluster_bootstrap_with_singletons_is_the_unit_bootstrap():
    values = np.random.default_rng(1).normal(size=40)
    ours = stats.cluster_bootstrap_ci(values, np.arange(40), n_boot=3000, seed=2)
    np.testing.assert_allclose(ours, stats.bootstrap_ci(values, n_boot=3000, seed=2))


def test_cluster_bootstrap_of_identical_copies_is_the_bootstrap_of_the_clusters():
    """Each of 12 clusters holds three copies of one value: resampling clusters is resampling the 12 values."""
    values = np.random.default_rng(3).normal(size=12)
    ours = stats.cluster_bootstrap_ci(np.repeat(values, 3), np.repeat(np.arange(12), 3), n_boot=3000, seed=4)
    np.testing.assert_allclose(ours, stats.bootstrap_ci(values, n_boot=3000, seed=4))
    assert np.isnan(stats.cluster_bootstrap_ci(values[:4], np.arange(4))[1])  # fewer than a handful
