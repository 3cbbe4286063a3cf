"""Statistics shared by the study: bootstrap intervals (over units or over clusters of units) and paired tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

MIN_INDEPENDENT_UNITS = 5
"""Fewest independent units (or clusters) an interval is drawn from: a bootstrap over fewer than a handful of
values describes those values, not the population, so it counts as no evidence."""


def _resampled(
    statistic: Callable[[np.ndarray], np.ndarray], n_items: int, n_boot: int, seed: int, chunk: int = 1000
) -> np.ndarray:
    """``statistic`` of ``n_boot`` resamples (with replacement) of ``n_items`` indices, drawn in chunks to bound
    memory; ``statistic`` maps a ``(resamples, n_items)`` index array to one value per resample.
    """
    rng = np.random.default_rng(seed)
    drawn = (rng.integers(0, n_items, size=(min(chunk, n_boot - start), n_items)) for start in range(0, n_boot, chunk))
    return np.concatenate([statistic(indices) for indices in drawn])


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _some_values(values: Sequence[float] | np.ndarray | pd.Series, caller: str) -> np.ndarray:
    """``values`` as floats, refused when empty."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError(f"{caller} needs at least one value")
    return values


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | pd.Series, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``values`` (per-perturbation mAPs, or retrieved booleans for a fraction) and its percentile bootstrap CI.

    Returns
    -------
    ``(mean, low, high)``.
    """
    values = _some_values(values, "bootstrap_ci")
    means = _resampled(lambda indices: values[indices].mean(axis=1), len(values), n_boot, seed)
    return float(values.mean()), *_percentile_interval(means, confidence)


def cluster_bootstrap_ci(
    values: Sequence[float] | np.ndarray | pd.Series,
    clusters: Sequence[object] | np.ndarray | pd.Series,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile bootstrap CI, resampling whole ``clusters`` (units that are not
    independent, e.g. target genes resting on the same compounds); NaN bounds from fewer than
    :data:`MIN_INDEPENDENT_UNITS` clusters.

    With one value per cluster it draws the same resamples as :func:`bootstrap_ci`.

    Returns
    -------
    ``(mean, low, high)``.
    """
    values = _some_values(values, "cluster_bootstrap_ci")
    codes, names = pd.factorize(pd.Series(clusters, dtype=object).to_numpy())
    if len(names) < MIN_INDEPENDENT_UNITS:
        return float(values.mean()), np.nan, np.nan
    sums, counts = np.bincount(codes, weights=values), np.bincount(codes)
    means = _resampled(
        lambda indices: sums[indices].sum(axis=1) / counts[indices].sum(axis=1), len(names), n_boot, seed
    )
    return float(values.mean()), *_percentile_interval(means, confidence)


def paired_test(
    a: pd.Series, b: pd.Series, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Compare two methods on the perturbations both scored (matched by index).

    Returns
    -------
    ``n`` (matched perturbations), ``mean_a``, ``mean_b``, ``mean_difference``
    (a - b) with its paired-bootstrap CI ``ci_low``, ``ci_high``, and the
    two-sided Wilcoxon signed-rank ``wilcoxon_statistic`` and ``wilcoxon_p_value``.

    Raises
    ------
    ValueError
        Fewer than two perturbations are in both ``a`` and ``b``.
    """
    common = a.index.intersection(b.index)
    if len(common) < 2:
        raise ValueError(f"paired_test needs at least two matched perturbations, found {len(common)}")
    first, second = a.loc[common].to_numpy(dtype=float), b.loc[common].to_numpy(dtype=float)
    difference, low, high = bootstrap_ci(first - second, n_boot, seed, confidence)
    statistic, p_value = wilcoxon(first, second)
    return {
        "n": len(common),
        "mean_a": float(first.mean()),
        "mean_b": float(second.mean()),
        "mean_difference": difference,
        "ci_low": low,
        "ci_high": high,
        "wilcoxon_statistic": float(statistic),
        "wilcoxon_p_value": float(p_value),
    }
