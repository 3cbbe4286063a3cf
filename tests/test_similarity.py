"""Tests for cellstudy.similarity against scikit-learn, zero rows included."""

import numpy as np
from sklearn.metrics.pairwise import cosine_similarity as sklearn_cosine

from cellstudy.similarity import cosine_similarity, unit_rows


def test_cosine_similarity_equals_sklearn_including_zero_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(3, 4))
    a[2] = 0.0
    np.testing.assert_allclose(cosine_similarity(a, b), sklearn_cosine(a, b), atol=1e-12)
    np.testing.assert_allclose(cosine_similarity(a), sklearn_cosine(a), atol=1e-12)
    assert (cosine_similarity(a)[2] == 0).all()


def test_unit_rows_have_norm_one_and_keep_direction():
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
