"""Is a unit's mean average precision (mAP) better than chance? Three named tests on the same AP tables.

A unit (a perturbation in replicate retrieval, a target gene in the matching tasks) has queries; query ``i``
ranks ``k_i`` positives among ``n_i`` candidates (``n_pos_pairs``, ``n_total_pairs``) and scores an average
precision ``AP_i``. Under the null, the positives sit at uniformly random ranks.

``study`` (:data:`STUDY`, the default: every result of the study)
    The unit's statistic is its mAP; its null is the mean of *independent* per-query null APs.
    ``p = P(null mAP >= observed mAP)``: ties count, which matters because AP is discrete (two wells that
    each rank their one replicate first among 61 candidates have p = 1/61 per query, not 1e-5).
    The p-value is exact (:func:`exact_p_value`) when the unit's null has at most :data:`EXACT_LIMIT`
    outcomes; otherwise it is ``(1 + #{null >= observed}) / (1 + B)`` over ``B`` Monte-Carlo draws from a
    generator seeded by the unit's identity (:func:`unit_generator`), so that no unit's p-value depends on
    another unit's configuration and the same seed gives the same numbers. A unit whose p-value after
    :data:`FIRST_DRAWS` draws is already above :data:`STOP_FACTOR` times the retrieval threshold keeps that
    p-value (``B`` = :data:`FIRST_DRAWS`): it cannot be retrieved, and the rule keeps the p-value valid.
``paper`` (:data:`PAPER`: the CPJUMP1 paper's notebooks, for every comparison with the paper's numbers)
    Per query ``p_i = (1 + #{null > AP_i}) / (1 + B)`` (strict: ties do not count), with one null per
    configuration ``(k, n)`` shared by the queries that have it; the unit's p-value is
    ``10 ** -mean(-log10 p_i)``; Benjamini-Hochberg per group (copairs 0.3's ``aggregate``).
``copairs`` (:data:`COPAIRS`: copairs 0.5's ``mean_average_precision``)
    The null of the mAP is the mean of per-configuration null rows shared across queries;
    ``p = (1 + #{null > mAP}) / (1 + B)``.

Every method returns one p-value per unit; :mod:`cellstudy.evaluation.retrieval` corrects them with
Benjamini-Hochberg within each group.
"""

from __future__ import annotations

import hashlib
import itertools
from functools import lru_cache
from math import comb

import numpy as np
import pandas as pd

STUDY = "study"
PAPER = "paper"
COPAIRS = "copairs"
METHODS = (STUDY, PAPER, COPAIRS)
"""The significance tests, by name (:class:`cellstudy.evaluation.retrieval.MapSettings` ``method``)."""
TIE_TOLERANCE = 1e-9
"""Null values closer than this to the observed value are ties (floating-point noise); AP is a ratio of small integers."""
TABLE_LIMIT = 2**18
"""Placements ``C(n, k)`` up to which a query's null AP is tabulated exactly (every placement once); beyond it,
the null is drawn by placing the ``k`` positives at random (:func:`random_ranks`)."""
EXACT_LIMIT = 2**20
"""Outcomes of a unit's null (the product of its queries' numbers of distinct AP values) up to which
:func:`exact_p_value` enumerates them; beyond it, the study test draws Monte-Carlo nulls."""
_ROUND = 12
"""Decimals kept when merging equal AP values of the exact null (far finer than :data:`TIE_TOLERANCE`)."""
FIRST_DRAWS = 1_000
"""Monte-Carlo draws of the study test's first stage; a unit whose p-value is already far above the retrieval
threshold (:data:`STOP_FACTOR` times it) stops there."""
STOP_FACTOR = 2.0
"""A unit stops after :data:`FIRST_DRAWS` when its p-value exceeds this multiple of the retrieval threshold:
it can then never be retrieved, and the full null would cost a hundred times more."""
SCORE_COLUMNS = ["n_profiles", "mean_average_precision", "p_value", "exact_null"]
"""Per-unit columns of :func:`unit_p_values`, after the unit column."""


def random_ranks(n_positives: int, n_candidates: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` sorted draws of ``n_positives`` distinct 0-based ranks among ``n_candidates``.

    Floyd's algorithm, vectorised over draws, costs ``size * n_positives**2``;
    for many positives a partial sort of random keys (``size * n_candidates``) is cheaper.
    """
    if n_positives**2 <= 8 * n_candidates:
        ranks = np.empty((size, n_positives), dtype=np.int64)
        for i, last in enumerate(range(n_candidates - n_positives, n_candidates)):
            draw = rng.integers(0, last + 1, size=size)
            taken = (ranks[:, :i] == draw[:, None]).any(axis=1)
            ranks[:, i] = np.where(taken, last, draw)
    else:
        keys = rng.random((size, n_candidates))
        ranks = np.argpartition(keys, n_positives - 1, axis=1)[:, :n_positives]
    return np.sort(ranks, axis=1)


def average_precision_of_ranks(ranks: np.ndarray) -> np.ndarray:
    """AP of rankings given the sorted 0-based ranks of their positives (one ranking per row)."""
    return (np.arange(1, ranks.shape[1] + 1) / (ranks + 1)).mean(axis=1)


def null_average_precisions(n_positives: int, n_candidates: int, size: int, seed: int) -> np.ndarray:
    """AP of ``size`` uniformly random rankings of ``n_candidates`` items with ``n_positives`` positives.

    One configuration's shared null (the ``paper`` and ``copairs`` tests, as copairs' ``random_ap``);
    seeded by ``(seed, n_positives, n_candidates)``.
    """
    rng = np.random.default_rng([seed, n_positives, n_candidates])
    return average_precision_of_ranks(random_ranks(n_positives, n_candidates, size, rng))


@lru_cache(maxsize=64)
def null_table(n_positives: int, n_candidates: int) -> np.ndarray | None:
    """The AP of every placement of ``n_positives`` among ``n_candidates``, sorted; ``None`` above :data:`TABLE_LIMIT`.

    Each entry has probability ``1 / C(n, k)`` under the null, so an index drawn uniformly draws the null exactly.
    """
    count = comb(n_candidates, n_positives)
    if count > TABLE_LIMIT:
        return None
    flat = itertools.chain.from_iterable(itertools.combinations(range(n_candidates), n_positives))
    ranks = np.fromiter(flat, dtype=np.int64, count=count * n_positives).reshape(count, n_positives)
    table = np.sort(average_precision_of_ranks(ranks))
    table.flags.writeable = False
    return table


@lru_cache(maxsize=256)
def null_distribution(n_positives: int, n_candidates: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact null of one query's AP: distinct values and their probabilities; ``None`` when not tabulated."""
    table = null_table(n_positives, n_candidates)
    if table is None:
        return None
    values, counts = np.unique(table.round(_ROUND), return_counts=True)
    return values, counts / len(table)


def exact_p_value(configurations: np.ndarray, observed: float, limit: int = EXACT_LIMIT) -> float | None:
    """``P(mean of independent null APs >= observed)`` by enumeration; ``None`` when the null has more than ``limit`` outcomes.

    Parameters
    ----------
    configurations
        ``(k, n)`` per query of the unit.
    observed
        The unit's mAP; null means within :data:`TIE_TOLERANCE` below it count as ties (>=).
    """
    distributions = [null_distribution(int(k), int(n)) for k, n in configurations]
    if any(d is None for d in distributions) or np.prod([len(d[0]) for d in distributions], dtype=float) > limit:
        return None
    sums, probabilities = np.zeros(1), np.ones(1)
    for values, chances in distributions:
        merged, which = np.unique((sums[:, None] + values).round(_ROUND), return_inverse=True)
        probabilities = np.bincount(which.ravel(), weights=np.outer(probabilities, chances).ravel())
        sums = merged
    tail = sums / len(configurations) >= observed - TIE_TOLERANCE
    return float(min(1.0, probabilities[tail].sum()))


def unit_generator(seed: int, identity: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and a unit's identity (its group and name), independent of every other unit."""
    digest = hashlib.blake2b(identity.encode(), digest_size=16).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest, dtype=np.uint32).tolist()])


def monte_carlo_null(configurations: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of the mean of independent null APs, one per ``(k, n)`` in ``configurations``."""
    total = np.zeros(size)
    for k, n in configurations:
        table = null_table(int(k), int(n))
        if table is None:
            total += average_precision_of_ranks(random_ranks(int(k), int(n), size, rng))
        else:
            total += table[rng.integers(0, len(table), size=size)]
    return total / len(configurations)


def study_p_value(
    configurations: np.ndarray, observed: float, size: int, rng: np.random.Generator, stop_above: float = 1.0
) -> tuple[float, bool]:
    """The study test of one unit: ``(p, exact)``; exact where cheap, else Monte Carlo with ties counted.

    The Monte-Carlo null is drawn in two stages: the first :data:`FIRST_DRAWS`, then the rest of ``size``
    only if ``(1 + #{null >= observed}) / (1 + FIRST_DRAWS)`` is at most ``stop_above``. A unit that stops
    has a p-value above ``stop_above``; the p-value is valid either way (it is below any level only if the
    first stage's is).
    """
    exact = exact_p_value(configurations, observed)
    if exact is not None:
        return exact, True
    drawn = min(size, FIRST_DRAWS)
    above = _at_least(monte_carlo_null(configurations, drawn, rng), observed)
    if drawn < size and (1 + above) / (1 + drawn) <= stop_above:
        above += _at_least(monte_carlo_null(configurations, size - drawn, rng), observed)
        drawn = size
    return (1 + above) / (1 + drawn), False


def _at_least(null: np.ndarray, observed: float) -> int:
    """``#{null >= observed}``, ties within :data:`TIE_TOLERANCE` counted."""
    return int((null >= observed - TIE_TOLERANCE).sum())


def _configurations(scored: pd.DataFrame) -> np.ndarray:
    return scored[["n_pos_pairs", "n_total_pairs"]].to_numpy(dtype=np.int64)


def _strictly_above(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``#{null > observed + tolerance}`` for each observed value (null sorted)."""
    return len(null) - np.searchsorted(null, observed + TIE_TOLERANCE, side="right")


def _study(scored: pd.DataFrame, unit: str, size: int, seed: int, group: str, stop_above: float) -> list[tuple]:
    rows = []
    configurations, observed = _configurations(scored), scored["average_precision"].to_numpy()
    for value, members in scored.groupby(unit, sort=True).indices.items():
        mean = observed[members].mean()
        rng = unit_generator(seed, f"{group}\x1f{value}")
        p_value, exact = study_p_value(configurations[members], mean, size, rng, stop_above)
        rows.append((value, len(members), mean, p_value, exact))
    return rows


def _paper(scored: pd.DataFrame, unit: str, size: int, seed: int) -> list[tuple]:
    configurations, which = np.unique(_configurations(scored), axis=0, return_inverse=True)
    which = which.ravel()
    observed = scored["average_precision"].to_numpy()
    query_p = np.empty(len(scored))
    for i, (k, n) in enumerate(configurations):
        null = np.sort(null_average_precisions(int(k), int(n), size, seed))
        queries = which == i
        query_p[queries] = (1 + _strictly_above(null, observed[queries])) / (1 + size)
    rows = []
    for value, members in scored.groupby(unit, sort=True).indices.items():
        p_value = 10 ** -np.mean(-np.log10(query_p[members]))
        rows.append((value, len(members), observed[members].mean(), p_value, False))
    return rows


def _copairs(scored: pd.DataFrame, unit: str, size: int, seed: int) -> list[tuple]:
    configurations, which = np.unique(_configurations(scored), axis=0, return_inverse=True)
    nulls = np.stack([null_average_precisions(int(k), int(n), size, seed) for k, n in configurations])
    observed = scored["average_precision"].to_numpy()
    rows = []
    for value, members in scored.groupby(unit, sort=True).indices.items():
        mean = observed[members].mean()
        null = nulls[which.ravel()[members]].mean(axis=0)
        rows.append((value, len(members), mean, ((null > mean + TIE_TOLERANCE).sum() + 1) / (size + 1), False))
    return rows


def unit_p_values(
    scored: pd.DataFrame,
    unit: str,
    method: str = STUDY,
    size: int = 100_000,
    seed: int = 0,
    group: str = "",
    threshold: float = 0.05,
) -> pd.DataFrame:
    """One row per ``unit`` value of an AP table: ``n_profiles`` (its queries), ``mean_average_precision``,
    ``p_value`` by ``method`` and ``exact_null`` (whether the p-value is exact).

    Parameters
    ----------
    scored
        Queries with ``average_precision``, ``n_pos_pairs`` (> 0) and ``n_total_pairs``.
    unit
        The column whose values are averaged over.
    method
        One of :data:`METHODS`.
    size
        Monte-Carlo draws per null (the paper: 100,000).
    seed
        Seed of the nulls.
    group
        The identity of the group the units belong to; with the unit's name it seeds the unit's study null.
    threshold
        The retrieval threshold; the study test stops drawing for a unit whose p-value exceeds
        :data:`STOP_FACTOR` times it after :data:`FIRST_DRAWS` draws.
    """
    if method not in METHODS:
        raise ValueError(f"unknown significance method {method!r}; choose one of {METHODS}")
    if method == STUDY:
        rows = _study(scored, unit, size, seed, group, STOP_FACTOR * threshold)
    else:
        rows = (_paper if method == PAPER else _copairs)(scored, unit, size, seed)
    return pd.DataFrame(rows, columns=[unit, *SCORE_COLUMNS])
