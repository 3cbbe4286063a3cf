"""Verdict rules: each rule against the cases its definition spells out, and the chance rank against enumeration."""

import itertools

import numpy as np
import pytest

from cellstudy.applications import claims
from cellstudy.applications.claims import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    NOT_TESTABLE,
    SUPPORTED,
)


@pytest.mark.parametrize(
    ("low", "high", "direction", "expected"),
    [
        (0.1, 0.3, 1, SUPPORTED),
        (-0.3, -0.1, 1, NOT_SUPPORTED),
        (-0.1, 0.3, 1, INCONCLUSIVE),
        (0.0, 0.3, 1, INCONCLUSIVE),  # touching zero does not exclude it
        (-0.3, -0.1, -1, SUPPORTED),
        (0.1, 0.3, -1, NOT_SUPPORTED),
        (-0.1, 0.3, -1, INCONCLUSIVE),
    ],
)
def test_interval_verdict_reads_which_side_of_zero_the_interval_lies(low, high, direction, expected):
    assert claims.interval_verdict((low + high) / 2, low, high, direction) == expected


def test_interval_verdict_without_estimate_or_room_is_not_testable_and_without_interval_inconclusive():
    assert claims.interval_verdict(np.nan, 0.1, 0.3) == NOT_TESTABLE
    assert claims.interval_verdict(None, None, None) == NOT_TESTABLE
    assert claims.interval_verdict(0.2, 0.1, 0.3, testable=False) == NOT_TESTABLE
    assert claims.interval_verdict(0.2, np.nan, np.nan) == INCONCLUSIVE


def test_interval_verdict_rejects_bad_direction_and_reversed_interval():
    with pytest.raises(ValueError, match="direction"):
        claims.interval_verdict(0.2, 0.1, 0.3, direction=0)
    with pytest.raises(ValueError, match="lower bound"):
        claims.interval_verdict(0.2, 0.3, 0.1)


@pytest.mark.parametrize(
    ("p_value", "expected"), [(0.01, SUPPORTED), (0.05, INCONCLUSIVE), (0.9, INCONCLUSIVE), (np.nan, NOT_TESTABLE)]
)
def test_p_value_verdict_is_one_sided(p_value, expected):
    assert claims.p_value_verdict(p_value) == expected


def test_p_value_verdict_checks_its_input_and_respects_testable():
    assert claims.p_value_verdict(0.001, testable=False) == NOT_TESTABLE
    assert claims.p_value_verdict(0.02, alpha=0.01) == INCONCLUSIVE
    with pytest.raises(ValueError, match="p-value"):
        claims.p_value_verdict(1.5)


def test_outcome_verdict():
    assert [claims.outcome_verdict(v) for v in (True, False, None)] == [SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE]


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([SUPPORTED, SUPPORTED, NOT_TESTABLE], SUPPORTED),
        ([NOT_SUPPORTED, NOT_TESTABLE], NOT_SUPPORTED),
        ([SUPPORTED, NOT_SUPPORTED], INCONCLUSIVE),
        ([SUPPORTED, INCONCLUSIVE], INCONCLUSIVE),
        ([NOT_TESTABLE, NOT_TESTABLE], NOT_TESTABLE),
        ([], NOT_TESTABLE),
    ],
)
def test_combined_verdict_needs_agreement_among_the_testable(verdicts, expected):
    assert claims.combine_verdicts(verdicts) == expected


def test_combined_verdict_rejects_unknown_words():
    with pytest.raises(ValueError, match="unknown verdict"):
        claims.combine_verdicts([SUPPORTED, "reproduced"])


def test_can_separate_needs_a_lower_bound_above_zero():
    assert claims.can_separate(0.01)
    assert not claims.can_separate(0.0)
    assert not claims.can_separate(np.nan)


@pytest.mark.parametrize(("n_items", "n_positives"), [(1, 1), (5, 1), (7, 2), (8, 3), (6, 6)])
def test_expected_best_rank_is_the_mean_over_all_placements(n_items, n_positives):
    placements = list(itertools.combinations(range(1, n_items + 1), n_positives))
    assert claims.expected_best_rank(n_items, n_positives) == pytest.approx(np.mean([min(p) for p in placements]))


def test_expected_best_rank_needs_positives_among_the_items():
    with pytest.raises(ValueError, match="positives"):
        claims.expected_best_rank(3, 4)
    with pytest.raises(ValueError, match="positives"):
        claims.expected_best_rank(3, 0)


def test_mean_interval_is_the_bootstrap_of_the_non_missing_values():
    values = [0.1, 0.3, np.nan, 0.2, 0.6, 0.3]
    mean, low, high = claims.mean_interval(values)
    assert mean == pytest.approx(0.3)
    assert 0.1 <= low < mean < high <= 0.6
    assert (mean, low, high) == claims.mean_interval([0.1, 0.3, 0.2, 0.6, 0.3])  # NaN dropped, same seed


def test_mean_interval_of_too_few_units_has_no_bounds():
    mean, low, high = claims.mean_interval([0.4, 0.6, 0.5, 0.5])  # four values: fewer than a handful
    assert mean == pytest.approx(0.5) and np.isnan(low) and np.isnan(high)
    assert all(np.isnan(claims.mean_interval([])))


def test_difference_interval_of_separated_groups_excludes_zero_and_of_identical_groups_contains_it():
    rng = np.random.default_rng(0)
    high_group, low_group = rng.normal(1.0, 0.1, 20), rng.normal(0.0, 0.1, 20)
    difference, low, high = claims.difference_interval(high_group, low_group)
    assert difference == pytest.approx(high_group.mean() - low_group.mean())
    assert 0 < low < difference < high
    _, low, high = claims.difference_interval(high_group, high_group)
    assert low < 0 < high


def test_difference_interval_needs_enough_units_in_each_group():
    difference, low, high = claims.difference_interval([1.0, 2.0, 3.0], [0.0, np.nan])
    assert difference == pytest.approx(2.0) and np.isnan(low) and np.isnan(high)
    assert all(np.isnan(claims.difference_interval([1.0, 2.0, 3.0], [])))
