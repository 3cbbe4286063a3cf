"""Verdict rules of the claims summary: from a measured effect to *supported*, *not supported*,
*inconclusive* or *not testable here*.

Every claim of the study (C1-C6, ``book/intro.md``) is tested as one or more directed effects,
each with an interval or a p-value. The rules are the same for every claim:

- :func:`interval_verdict`: *supported* when the interval excludes zero in the claimed direction,
  *not supported* when it excludes zero the other way, *inconclusive* otherwise; *not testable here*
  when there is no estimate or the data cannot answer (:func:`can_separate`).
- :func:`p_value_verdict`: a one-sided test in the claimed direction.
- :func:`outcome_verdict`: a yes/no observation without uncertainty (an ordering of values).
- :func:`combine_verdicts`: the verdict of a claim from those of its tests.

Intervals of a mean (:func:`mean_interval`) and of a difference of two means
(:func:`difference_interval`) are percentile bootstraps over units; with fewer than
:data:`cellstudy.stats.MIN_INDEPENDENT_UNITS` units they are missing, so the verdict is at best *inconclusive*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from cellstudy.stats import MIN_INDEPENDENT_UNITS, bootstrap_ci

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable here"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE)
"""Every verdict, from the strongest for the claim to none."""
ALPHA = 0.05
"""Significance level of :func:`p_value_verdict`."""
CONFIDENCE = 0.95
"""Coverage of the bootstrap intervals."""
N_BOOT = 10_000
"""Bootstrap resamples of an interval."""


def _missing(value: float | None) -> bool:
    """Whether a value is absent: ``None``, NaN or ``pd.NA``."""
    return bool(pd.isna(value))


def can_separate(ceiling_low: float) -> bool:
    """Whether a task leaves room to test a claim: the lower bound of the best achievable score's
    interval (the oracle's, or the planted noise-free ceiling's) is above zero.

    Where even the planted ground truth scores no better than chance, no profile can, and a difference
    between methods there says nothing about the claim.
    """
    return not _missing(ceiling_low) and ceiling_low > 0


def interval_verdict(
    estimate: float | None, low: float | None, high: float | None, direction: int = 1, testable: bool = True
) -> str:
    """Verdict of an effect claimed to have the sign of ``direction`` (+1 or -1), from its interval.

    Parameters
    ----------
    estimate
        The measured effect; missing (``None`` or NaN): *not testable here*.
    low, high
        Its confidence interval; missing: *inconclusive* (an effect without uncertainty proves nothing).
    direction
        +1: the claim says the effect is positive; -1: negative.
    testable
        ``False`` when the data cannot answer (:func:`can_separate`): *not testable here*.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not testable or _missing(estimate):
        return NOT_TESTABLE
    if _missing(low) or _missing(high):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"interval [{low}, {high}] has its lower bound above its upper bound")
    signed_low, signed_high = sorted((direction * low, direction * high))
    if signed_low > 0:
        return SUPPORTED
    if signed_high < 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def p_value_verdict(p_value: float | None, alpha: float = ALPHA, testable: bool = True) -> str:
    """Verdict of a one-sided test in the claimed direction: *supported* when ``p_value < alpha``.

    A one-sided test cannot show the opposite effect, so otherwise the verdict is *inconclusive*
    (*not testable here* without a p-value or when ``testable`` is ``False``).
    """
    if not testable or _missing(p_value):
        return NOT_TESTABLE
    if not 0.0 <= p_value <= 1.0:
        raise ValueError(f"p-value must be in [0, 1], got {p_value}")
    return SUPPORTED if p_value < alpha else INCONCLUSIVE


def outcome_verdict(holds: bool | None) -> str:
    """Verdict of an observation without uncertainty: ``True`` supported, ``False`` not supported,
    ``None`` (it could not be observed) not testable here.
    """
    if holds is None:
        return NOT_TESTABLE
    return SUPPORTED if holds else NOT_SUPPORTED


def combine_verdicts(verdicts: Iterable[str]) -> str:
    """The verdict of a claim from those of its tests.

    Tests that are not testable here are left out; of the rest, all supported: *supported*; all not
    supported: *not supported*; anything else (inconclusive tests, or tests that disagree):
    *inconclusive*. Nothing left: *not testable here*.
    """
    verdicts = list(verdicts)
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; expected some of {VERDICTS}")
    testable = {verdict for verdict in verdicts if verdict != NOT_TESTABLE}
    if not testable:
        return NOT_TESTABLE
    return testable.pop() if testable in ({SUPPORTED}, {NOT_SUPPORTED}) else INCONCLUSIVE


def expected_best_rank(n_items: int, n_positives: int) -> float:
    """Expected best (smallest) rank of ``n_positives`` items placed at random among ``n_items``:
    ``(n_items + 1) / (n_positives + 1)``; the chance level of a target's rank in a ranked list.
    """
    if not 1 <= n_positives <= n_items:
        raise ValueError(f"need 1 <= n_positives <= n_items, got {n_positives} positives among {n_items}")
    return (n_items + 1) / (n_positives + 1)


def mean_interval(
    values: Sequence[float], seed: int = 0, min_units: int = MIN_INDEPENDENT_UNITS
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile bootstrap interval
    (:func:`cellstudy.stats.bootstrap_ci`, :data:`N_BOOT` resamples, :data:`CONFIDENCE`).

    Missing values are dropped; with fewer than ``min_units`` left, the bounds are NaN (no values: all NaN).
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < min_units:
        return (float(values.mean()) if len(values) else np.nan), np.nan, np.nan
    return bootstrap_ci(values, N_BOOT, seed, CONFIDENCE)


def difference_interval(
    a: Sequence[float], b: Sequence[float], seed: int = 0, min_units: int = MIN_INDEPENDENT_UNITS
) -> tuple[float, float, float]:
    """``(difference, low, high)``: mean of ``a`` minus mean of ``b`` (independent groups) and its percentile
    bootstrap interval (each group resampled on its own, :func:`scipy.stats.bootstrap`).

    Missing values are dropped; with fewer than ``min_units`` in either group, the bounds are NaN.
    """
    a, b = (np.asarray(group, dtype=float) for group in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return np.nan, np.nan, np.nan
    difference = float(a.mean() - b.mean())
    if min(len(a), len(b)) < min_units:
        return difference, np.nan, np.nan
    result = bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        vectorized=True,
        paired=False,
        n_resamples=N_BOOT,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return difference, float(result.confidence_interval.low), float(result.confidence_interval.high)
