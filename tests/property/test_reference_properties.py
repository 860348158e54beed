"""Identities linking variational division, EM-influence and the Newton influence function.

Each test draws a small random Gaussian mixture problem. The variational
tests fit CAVI and compare its divided posterior with the EM formulas at
the same responsibilities. The Hessian tests use random parameters, since
the missing-information identity is true at every theta, or a MAP fitted
by EM.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fg_influence.inference import fit_cavi
from fg_influence.influence import InfluenceResult
from fg_influence.reference import (
    MixtureParameters, MixturePrior, complete_hessian, complete_scores, em_influence, finite_difference_hessian,
    fit_map_em, hessian, influence_function, missing_information, missing_information_correction, natural_scales,
    site_gradients, unpack_shifts,
)
from fg_influence.reference.mixture_loss import component_hessians

from ..helpers import clustered_data, mixture_graph


def _sizes(draw):
    return draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(8, 60))


@st.composite
def variational_problems(draw):
    """A CAVI fit whose Dirichlet mode stays inside the simplex after removing any one site.

    alpha0 >= 1.05 keeps every divided concentration above 1, where the mode exists.
    The identities are algebraic in the responsibilities, so a partly
    converged fit (1 to 10 iterations) tests them as well as a converged one.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    k, d, n = _sizes(draw)
    alpha0 = draw(st.floats(1.05, 10.0))
    beta0 = draw(st.floats(0.01, 10.0))
    nu0 = d - 1 + draw(st.floats(0.01, 20.0))
    scale0 = draw(st.floats(0.05, 20.0)) * np.eye(d)
    rng = np.random.default_rng(seed)
    X = clustered_data(rng, n, d, k, draw(st.floats(0.0, 10.0)))
    graph = mixture_graph(X, k, alpha0=alpha0, beta0=beta0, nu0=nu0, scale0=scale0)
    posterior = fit_cavi(graph, init="random", random_state=rng, max_iter=draw(st.integers(1, 10)), warn=False)
    prior = MixturePrior(alpha0, beta0, np.zeros(d), nu0, np.linalg.inv(scale0))
    return posterior, prior


def _variational_point(posterior):
    """Dirichlet mode, posterior means and E[Lambda_k] of a fitted posterior, as point parameters."""
    weights = posterior.globals["weights"]
    components = posterior.globals["components"]
    alpha = weights.concentration
    mode = (alpha - 1.0) / (alpha.sum() - alpha.size)
    return MixtureParameters(mode, components.mean.copy(), components.wishart.mean())


@st.composite
def random_points(draw):
    """Data, a prior and parameters drawn independently of the data (not a fit)."""
    seed = draw(st.integers(0, 2**32 - 1))
    k, d, n = _sizes(draw)
    rng = np.random.default_rng(seed)
    X = clustered_data(rng, n, d, k, draw(st.floats(0.0, 10.0)))
    weights = rng.dirichlet(np.full(k, draw(st.floats(0.3, 10.0))))
    weights = np.maximum(weights, 1e-3)
    weights /= weights.sum()
    means = rng.normal(scale=3.0, size=(k, d))
    factors = rng.normal(size=(k, d, d + 2))
    precisions = factors @ np.swapaxes(factors, 1, 2) / (d + 2) * draw(st.floats(0.1, 10.0)) + 0.05 * np.eye(d)
    prior = MixturePrior(draw(st.floats(0.5, 10.0)), draw(st.floats(0.01, 10.0)), rng.normal(size=d),
                         d - 1 + draw(st.floats(0.01, 20.0)), draw(st.floats(0.05, 20.0)) * np.eye(d))
    return X, MixtureParameters(weights, means, precisions), prior


@st.composite
def map_problems(draw):
    """Data, a prior and the MAP found by EM from a random start.

    alpha0 > 1 and nu0 > D keep the M-step defined for empty components.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    k, d, n = _sizes(draw)
    rng = np.random.default_rng(seed)
    X = clustered_data(rng, n, d, k, draw(st.floats(0.0, 10.0)))
    prior = MixturePrior(draw(st.floats(1.05, 10.0)), draw(st.floats(0.01, 10.0)), X.mean(axis=0),
                         d + draw(st.floats(0.01, 20.0)), draw(st.floats(0.05, 20.0)) * np.eye(d))
    fit = fit_map_em(X, k, prior, max_iter=200, random_state=rng)
    return X, fit.parameters, prior


@settings(max_examples=200)
@given(variational_problems())
def test_dirichlet_mode_shift_equals_em_closed_form(problem):
    posterior, prior = problem
    X = posterior.data["x"]
    resp = posterior.locals["assignment"]
    point = _variational_point(posterior)
    division = InfluenceResult(posterior).weight_mode_shift
    em = unpack_shifts(em_influence(X, point, prior, hessian="divided", resp=resp),
                       point.n_components, point.dim)["weights"]
    # Both sides are (pi_k - r_ik) / (N - 1 + K alpha0 - K) reached by
    # different arithmetic on numbers of order 1, so only rounding differs.
    np.testing.assert_allclose(division, em, rtol=1e-9, atol=1e-12)


@settings(max_examples=200)
@given(variational_problems())
def test_mean_shift_equals_em_with_divided_precision(problem):
    posterior, prior = problem
    X = posterior.data["x"]
    resp = posterior.locals["assignment"]
    point = _variational_point(posterior)
    n, d = X.shape
    division = InfluenceResult(posterior).mean_shift
    scores = complete_scores(X, point)
    undivided_blocks = component_hessians(X, point, prior, resp)[:, :d, :d]
    beta = posterior.globals["components"].beta
    for site in range(0, n, max(1, n // 5)):
        without = resp.copy()
        without[site] = 0.0
        divided_blocks = component_hessians(X, point, prior, without)[:, :d, :d]
        for k in range(point.n_components):
            start = point.n_components - 1 + k * (d + d * (d + 1) // 2)
            gradient = resp[site, k] * scores[site, k, start: start + d]
            divided_step = -np.linalg.solve(divided_blocks[k], gradient)
            undivided_step = -np.linalg.solve(undivided_blocks[k], gradient)
            # The precision block is (beta_k - r) E[Lambda_k]; solving with it
            # loses about cond(E[Lambda_k]) * eps, and conditions stay below ~1e4 here.
            np.testing.assert_allclose(divided_step, division[site, k], rtol=1e-8, atol=1e-10)
            # Removing r_ik E[Lambda_k] from beta_k E[Lambda_k] scales the inverse
            # by beta_k / (beta_k - r_ik), the Sherman-Morrison factor of a
            # downdate proportional to the matrix itself.
            factor = beta[k] / (beta[k] - resp[site, k])
            np.testing.assert_allclose(divided_step, factor * undivided_step, rtol=1e-8, atol=1e-10)


@settings(max_examples=200)
@given(random_points())
def test_missing_information_hessian_equals_finite_differences(problem):
    X, point, prior = problem
    louis = complete_hessian(X, point, prior) - missing_information(X, point)
    scales = natural_scales(point)
    numeric = finite_difference_hessian(X, point, prior, 1e-5 * scales)
    scaled_louis = louis * np.outer(scales, scales)
    scaled_numeric = numeric * np.outer(scales, scales)
    # In coordinates scaled to their natural size, the fourth-order stencil
    # with step h has truncation error about (h r)^4 relative, where r grows
    # with how sharply the responsibilities switch when a component moves
    # (r reaches a few hundred for random parameters far from the data), and
    # rounding error about eps |grad| / h. With h = 1e-5 the worst relative
    # error over 300 random problems was 1.6e-8 (h = 1e-4 reached 9e-5 and
    # h = 1e-3 reached 2), so 1e-6 of the largest entry leaves a 60x margin.
    tolerance = 1e-6 * np.abs(scaled_louis).max()
    np.testing.assert_allclose(scaled_louis, scaled_numeric, rtol=0, atol=tolerance)


@settings(max_examples=200)
@given(map_problems())
def test_em_influence_plus_missing_information_is_influence_function(problem):
    X, point, prior = problem
    em = em_influence(X, point, prior, hessian="complete")
    dense_em = np.linalg.solve(complete_hessian(X, point, prior), site_gradients(X, point).T).T
    corrected = missing_information_correction(X, point, prior, em)
    newton = influence_function(X, point, prior)
    scales = natural_scales(point)
    exact_hessian = hessian(X, point, prior) * np.outer(scales, scales)
    condition = np.linalg.cond(exact_hessian)
    # Both sides solve with H = H_complete - I_missing, once directly and once
    # after a block solve with H_complete and a product, so they differ by
    # rounding amplified by the condition number of H in scaled coordinates.
    tolerance = 1e-12 * max(condition, 1.0) * np.abs(newton / scales).max()
    np.testing.assert_allclose(corrected / scales, newton / scales, rtol=0, atol=tolerance)
    # EM-influence solves each block of H_complete on its own; the dense solve
    # must agree, to rounding amplified by the blocks' condition numbers.
    complete_condition = np.linalg.cond(complete_hessian(X, point, prior) * np.outer(scales, scales))
    tolerance = 1e-12 * max(complete_condition, 1.0) * np.abs(em / scales).max()
    np.testing.assert_allclose(em / scales, dense_em / scales, rtol=0, atol=tolerance)
