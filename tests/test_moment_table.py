"""The distinct products behind the Gaussian mixture's pair kernels, and the pairs they leave out.

Every entry of f f^T, for the Normal-Wishart statistics f = (x, 1,
upper(x x^T), 1), is a product of up to four coordinates of x. The moment
table lists these products in graded order and builds them by runs of one
multiplication each. These tests check the runs and the coefficients that
turn a quadratic or linear form in f into one in the products. They also
check the bound on what V loses when pairs with r_k r_l at most RESP_TOL
are left out.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fg_influence.influence import linear_response as lr
from fg_influence.kernels import linear_response as lr_kernels
from fg_influence.models import GaussianMixture
from tests.helpers import clustered_data, fit_quietly

seeds = st.integers(0, 2**32 - 1)


def normal_wishart_monomials(d):
    """Return the monomials of the statistics (x, 1, upper(x x^T), 1) and of the Dirichlet block's 1."""
    rows, cols = np.triu_indices(d)
    return (tuple((a,) for a in range(d)) + ((),) + tuple(zip(rows.tolist(), cols.tolist())) + ((),)
            + ((),))


def statistics(x):
    """Return f for each row of x, in the order of normal_wishart_monomials, shape (n, Q)."""
    rows, cols = np.triu_indices(x.shape[1])
    ones = np.ones((x.shape[0], 1))
    return np.concatenate([x, ones, x[:, rows] * x[:, cols], ones, ones], axis=1)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=st.integers(1, 5))
def test_runs_build_every_product(seed, d):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, d))
    table = lr._MomentTable(normal_wishart_monomials(d))
    assert table.fast
    # Every product of up to four of the d columns, each once: C(d + 4, 4).
    assert table.n_moments == math.comb(d + 4, 4)
    keys = [tuple(row[row >= 0]) for row in table.slots]
    assert len(set(keys)) == table.n_moments
    # Graded order: by degree, then by the last column, then by the rest.
    assert keys == sorted(keys, key=lambda key: (len(key), key[::-1]))
    for i in range(base.shape[0]):
        built = np.empty(table.n_moments)
        lr_kernels._fill_products(built, base, i, table.runs)
        expected = np.array([np.prod(base[i, row[row >= 0]]) for row in table.slots])
        # One multiplication per product from exact inputs: the products differ
        # from np.prod only in the order of up to four roundings.
        np.testing.assert_allclose(built, expected, rtol=1e-14, atol=0.0)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=st.integers(1, 4))
def test_coefficients_match_forms_in_f(seed, d):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, d))
    table = lr._MomentTable(normal_wishart_monomials(d))
    f = statistics(x)
    matrix = rng.normal(size=(table.size, table.size))
    vector = rng.normal(size=table.size)
    products = table.products(x)
    quadratic = np.einsum("np,pq,nq->n", f, matrix, f)
    linear = f @ vector
    # Both sum the same terms, grouped differently, so they differ by the
    # rounding of a few hundred terms of size up to max |f|^2 |matrix|.
    scale = np.abs(f).max() ** 2 * np.abs(matrix).sum()
    np.testing.assert_allclose(products @ table.coefficients(matrix), quadratic, rtol=0.0, atol=1e-12 * scale)
    n_linear = table.linear_map.shape[1]
    np.testing.assert_allclose(products[:, :n_linear] @ (vector @ table.linear_map), linear, rtol=0.0,
                               atol=1e-13 * np.abs(f).max() * np.abs(vector).sum())


@pytest.mark.parametrize("tol", [1e-6, 1e-3])
def test_left_out_pairs_within_bound(monkeypatch, tol):
    # Overlapping clusters, so that many pairs fall on either side of tol.
    rng = np.random.default_rng(7)
    X = clustered_data(rng, 300, 2, 3, 1.0)
    posterior = fit_quietly(GaussianMixture(3, random_state=0, tol=1e-10), X).posterior_
    _, blocks = lr.response_blocks(posterior)
    resp = posterior.locals["assignment"]

    def features(sites):
        return np.concatenate([b.features(sites) for b in blocks], axis=1)

    monkeypatch.setattr(lr, "RESP_TOL", 0.0)
    every_pair = lr.assemble_missing_information(resp, features)
    monkeypatch.setattr(lr, "RESP_TOL", tol)
    truncated = lr.assemble_missing_information(resp, features)
    # A left-out pair (k, l) at site j changes the blocks (k, l), (l, k), (k, k)
    # and (l, l) by r_jk r_jl f_j f_j^T, with r_jk r_jl at most tol. So
    # |f_j f_j^T| summed over the sites with such a pair, times K (K - 1) / 2
    # pairs and tol, bounds every entry. The 1e-12 term covers rounding.
    k_count, q = resp.shape[1], every_pair.shape[0] // resp.shape[1]
    products = resp[:, :, None] * resp[:, None, :]
    left_out = np.any((products <= tol) & (products > 0.0) & ~np.eye(k_count, dtype=bool), axis=(1, 2))
    assert left_out.any()
    f = features(np.flatnonzero(left_out))
    bound = tol * k_count * (k_count - 1) / 2 * np.einsum("np,nq->pq", np.abs(f), np.abs(f))
    difference = np.abs(truncated - every_pair).reshape(k_count, q, k_count, q)
    assert np.all(difference <= bound[None, :, None, :] + 1e-12 * np.abs(every_pair).max())
    assert np.abs(truncated - every_pair).max() > 0.0
