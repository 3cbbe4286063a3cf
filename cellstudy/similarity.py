"""Cosine similarity, the study's measure of how alike two profiles are, and negative Euclidean distance for
profiles of a single feature (where the cosine is only the product of the signs, ±1, and ties almost every pair).

An all-zero row has no direction: it is kept as zeros, so its cosine with every row is 0 (as scikit-learn's
``cosine_similarity``). Callers that must not score such a profile check for it first and name it
(:mod:`cellstudy.evaluation.retrieval`, :mod:`cellstudy.applications.query`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows (the last axis) scaled to norm 1; all-zero rows stay zero."""
    values = np.asarray(values, dtype=float)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (default: ``a`` itself)."""
    first = unit_rows(a)
    return first @ (first if b is None else unit_rows(b)).T


def negative_distance(a: np.ndarray, b: np.ndarray | None = None, sign_free: bool = False) -> np.ndarray:
    """Minus the Euclidean distance of every row of ``a`` to every row of ``b`` (default: ``a`` itself; SciPy's
    ``cdist``).

    ``sign_free``: minus ``min(|a - b|, |a + b|)``, so that a profile and its mirror image count as alike, as the
    absolute cosine lets anti-correlated profiles count as alike.
    """
    a = np.asarray(a, dtype=float)
    b = a if b is None else np.asarray(b, dtype=float)
    distance = cdist(a, b)
    if sign_free:
        distance = np.minimum(distance, cdist(a, -b))
    return -distance
