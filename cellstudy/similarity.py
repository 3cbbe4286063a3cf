"""Cosine similarity, the study's one measure of how alike two profiles are.

An all-zero row has no direction: it is kept as zeros, so its cosine with every row is 0 (as scikit-learn's
``cosine_similarity``). Callers that must not score such a profile check for it first and name it
(:mod:`cellstudy.evaluation.retrieval`, :mod:`cellstudy.applications.query`).
"""

from __future__ import annotations

import numpy as np


def unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows (the last axis) scaled to norm 1; all-zero rows stay zero."""
    values = np.asarray(values, dtype=float)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (default: ``a`` itself)."""
    first = unit_rows(a)
    return first @ (first if b is None else unit_rows(b)).T
