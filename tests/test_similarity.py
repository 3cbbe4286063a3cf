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


def test_negative_distance_equals_scipy_and_its_sign_free_form_the_nearer_of_b_and_minus_b():
    from scipy.spatial.distance import cdist

    from cellstudy.similarity import negative_distance

    rng = np.random.default_rng(1)
    for n_features in (1, 4):
        a, b = rng.normal(size=(6, n_features)), rng.normal(size=(3, n_features))
        np.testing.assert_allclose(negative_distance(a, b), -cdist(a, b), atol=1e-9)
        np.testing.assert_allclose(negative_distance(a), -cdist(a, a), atol=1e-6)
        sign_free = -np.minimum(cdist(a, b), cdist(a, -b))
        np.testing.assert_allclose(negative_distance(a, b, sign_free=True), sign_free, atol=1e-9)
    assert negative_distance(np.array([[2.0]]), np.array([[-2.0]]), sign_free=True)[0, 0] == 0.0
