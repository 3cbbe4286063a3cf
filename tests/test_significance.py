"""Tests for cellstudy.evaluation.significance: the study test against exact enumeration of every joint
placement, its Monte-Carlo path against the same, the paper's test against a hand computation, the shared
null against copairs' sampler."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from copairs.compute import random_ap
from scipy.stats import ks_2samp

from cellstudy.evaluation import significance


def placement_aps(n_positives: int, n_candidates: int) -> np.ndarray:
    """AP of every placement of the positives among the candidates, by brute force."""
    placements = np.array(list(itertools.combinations(range(n_candidates), n_positives)))
    return (np.arange(1, n_positives + 1) / (placements + 1)).mean(axis=1)


def enumerated_p_value(configurations: list[tuple[int, int]], observed: float) -> float:
    """P(mean of independent null APs >= observed) over every joint placement, equally likely."""
    joint = [placement_aps(k, n) for k, n in configurations]
    means = np.array([np.mean(values) for values in itertools.product(*joint)])
    return float((means >= observed - 1e-9).mean())


CASES = [
    ([(1, 5)], 1 / 3),
    ([(1, 5), (1, 7)], 0.75),
    ([(2, 6), (1, 5)], 0.6),
    ([(2, 6), (2, 6)], 1.0),
    ([(3, 8), (1, 4), (2, 5)], 0.5),
]


@pytest.mark.parametrize(("configurations", "observed"), CASES)
def test_exact_p_value_equals_enumeration_of_every_joint_placement(configurations, observed):
    exact = significance.exact_p_value(np.array(configurations), observed)
    assert exact == pytest.approx(enumerated_p_value(configurations, observed), rel=1e-12)


@pytest.mark.parametrize(("configurations", "observed"), CASES)
def test_monte_carlo_p_value_agrees_with_enumeration(configurations, observed):
    exact = enumerated_p_value(configurations, observed)
    size = 100_000
    null = significance.monte_carlo_null(np.array(configurations), size, np.random.default_rng(1))
    p_value = (1 + (null >= observed - significance.TIE_TOLERANCE).sum()) / (1 + size)
    assert p_value == pytest.approx(exact, abs=5 * np.sqrt(exact * (1 - exact) / size) + 2 / size)


def test_monte_carlo_beyond_the_table_limit_agrees_with_enumeration(monkeypatch):
    """Configurations too large to tabulate are drawn by placing the positives at random."""
    monkeypatch.setattr(significance, "TABLE_LIMIT", 0)
    significance.null_table.cache_clear()
    significance.null_distribution.cache_clear()
    try:
        assert significance.exact_p_value(np.array([(2, 6)]), 0.5) is None
        p_value, exact = significance.study_p_value(np.array([(2, 6), (1, 5)]), 0.6, 50_000, np.random.default_rng(0))
    finally:
        significance.null_table.cache_clear()
        significance.null_distribution.cache_clear()
    expected = enumerated_p_value([(2, 6), (1, 5)], 0.6)
    assert not exact
    assert p_value == pytest.approx(expected, abs=5 * np.sqrt(expected * (1 - expected) / 50_000))


def test_exact_only_up_to_the_limit():
    assert significance.exact_p_value(np.array([(1, 61)] * 3), 1.0, limit=61**3) == pytest.approx(61.0**-3)
    assert significance.exact_p_value(np.array([(1, 61)] * 3), 1.0, limit=61**3 - 1) is None


def ap_table(units: list[str], aps: list[float], configurations: list[tuple[int, int]]) -> pd.DataFrame:
    k, n = zip(*configurations)
    return pd.DataFrame({"unit": units, "average_precision": aps, "n_pos_pairs": k, "n_total_pairs": n})


def test_a_units_study_p_value_does_not_depend_on_other_units():
    """Unit a's Monte-Carlo null is seeded by its identity, not by the configurations it shares with others."""
    first = ap_table(["a"] * 4 + ["b"], [0.12, 0.1, 0.15, 0.08, 0.3], [(3, 67)] * 5)
    second = ap_table(["a"] * 4 + ["b"] * 2, [0.12, 0.1, 0.15, 0.08, 0.3, 0.9], [(3, 67)] * 4 + [(3, 80), (2, 40)])
    one = significance.unit_p_values(first, "unit", size=20_000, group="g").set_index("unit")
    two = significance.unit_p_values(second, "unit", size=20_000, group="g").set_index("unit")
    assert not one.loc["a", "exact_null"]
    assert one.loc["a", "p_value"] == two.loc["a", "p_value"]
    again = significance.unit_p_values(first, "unit", size=20_000, group="g").set_index("unit")
    assert again.loc["a", "p_value"] == one.loc["a", "p_value"]  # same seed, same numbers
    elsewhere = significance.unit_p_values(first, "unit", size=20_000, group="h").set_index("unit")
    assert elsewhere.loc["a", "p_value"] != one.loc["a", "p_value"]  # another group, another draw


def test_paper_method_by_hand(monkeypatch):
    """A fixed null 0.1, 0.2, ..., 1.0 (B = 10): p = (1 + #{null > AP}) / 11 per query, strict; the unit's
    p-value is 10 ** -mean(-log10 p)."""
    monkeypatch.setattr(significance, "null_average_precisions", lambda k, n, size, seed: np.arange(1, 11) / 10)
    table = ap_table(["a", "a", "b"], [0.55, 0.95, 1.0], [(1, 10)] * 3)
    result = significance.unit_p_values(table, "unit", significance.PAPER, size=10).set_index("unit")
    assert result.loc["a", "p_value"] == pytest.approx(np.sqrt(6 / 11 * 2 / 11))
    assert result.loc["b", "p_value"] == pytest.approx(1 / 11)  # AP 1 ties the null's 1.0: not counted
    assert result.loc["a", "mean_average_precision"] == pytest.approx(0.75)


@pytest.mark.parametrize(("positives", "candidates"), [(3, 20), (20, 40)])  # Floyd's sampler; partial sort
def test_shared_null_has_copairs_distribution(positives, candidates):
    ours = significance.null_average_precisions(positives, candidates, 20_000, seed=1)
    theirs = random_ap(20_000, positives, candidates, seed=2)
    assert ks_2samp(ours, theirs).pvalue > 1e-3


def test_shared_null_is_seeded_per_configuration():
    first = significance.null_average_precisions(3, 30, 500, seed=4)
    np.testing.assert_array_equal(first, significance.null_average_precisions(3, 30, 500, seed=4))
    assert not np.array_equal(first, significance.null_average_precisions(3, 30, 500, seed=5))


def test_null_table_is_every_placement():
    np.testing.assert_allclose(significance.null_table(2, 7), np.sort(placement_aps(2, 7)))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="bogus"):
        significance.unit_p_values(ap_table(["a"], [0.5], [(1, 4)]), "unit", "bogus")


def test_a_unit_far_above_the_threshold_stops_after_the_first_draws():
    """p after 1,000 draws above the stop level: the unit keeps that p-value, valid and never retrieved."""
    configurations = np.array([(3, 67)] * 4)
    rng = np.random.default_rng(5)
    p_value, exact = significance.study_p_value(configurations, 0.1, 100_000, rng, stop_above=0.1)
    replay = significance.monte_carlo_null(configurations, significance.FIRST_DRAWS, np.random.default_rng(5))
    assert not exact
    assert p_value == (1 + (replay >= 0.1 - 1e-9).sum()) / (1 + significance.FIRST_DRAWS) > 0.1
    strong, _ = significance.study_p_value(configurations, 0.6, 100_000, np.random.default_rng(5), stop_above=0.1)
    assert strong == pytest.approx(1 / 100_001)  # below the stop level: the full null is drawn
