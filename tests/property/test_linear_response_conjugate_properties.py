"""Properties of the linear-response blocks of conjugate likelihood mixtures.

Small random Poisson, Bernoulli, categorical, diagonal Gaussian and
regression mixtures are fitted by the library. J is checked against
central finite differences of the library's own CAVI iteration (one E-step
and one M-step through ``fg_influence.inference.cavi``). The blocks'
Hessians are checked for symmetry and positive definiteness and against
central differences of the families' expected statistics. The E-step logits
are checked against features . mu, and the corrected coordinates against a
dense solve.
"""

import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from fg_influence.exceptions import ConvergenceWarning
from fg_influence.inference.cavi import local_logits, update_global, update_local
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import linear_response as lr
from fg_influence.influence import linear_response_conjugate as lrc
from fg_influence.models import (
    BernoulliMixture,
    CategoricalMixture,
    DiagonalGaussianMixture,
    MixtureOfRegressions,
    PoissonMixture,
)
from tests.helpers import clustered_data

seeds = st.integers(0, 2**32 - 1)
#: Each test runs its examples once per family, so every family is covered.
FAMILIES = ["poisson", "bernoulli", "categorical", "gaussian", "regression"]


def random_fit(family, seed, n, d, k):
    """Fit a mixture of ``family`` to n random rows with d columns from k clusters; return its posterior."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    options = {"random_state": int(rng.integers(2**31)), "tol": 1e-10, "max_iter": 5000}
    if family == "poisson":
        rates = rng.gamma(2.0, 3.0, size=(k, d))
        model, args = PoissonMixture(k, **options), (rng.poisson(rates[labels]).astype(float),)
    elif family == "bernoulli":
        probabilities = rng.uniform(0.1, 0.9, size=(k, d))
        model, args = BernoulliMixture(k, **options), ((rng.random((n, d)) < probabilities[labels]).astype(float),)
    elif family == "categorical":
        columns = []
        for _ in range(d):
            probabilities = rng.dirichlet(np.ones(int(rng.integers(2, 5))), size=k)
            codes = [rng.choice(probabilities.shape[1], p=probabilities[z]) for z in labels]
            # Two distinct codes per column: one category would be a point mass.
            codes[:2] = [0, 1]
            columns.append(codes)
        model, args = CategoricalMixture(k, **options), (np.array(columns, dtype=float).T,)
    elif family == "gaussian":
        model, args = DiagonalGaussianMixture(k, **options), (clustered_data(rng, n, d, k, 3.0),)
    else:
        design = rng.normal(size=(n, d))
        coefficients = rng.normal(scale=2.0, size=(k, d))
        response = np.einsum("nd,nd->n", design, coefficients[labels]) + rng.normal(scale=0.5, size=n)
        model, args = MixtureOfRegressions(k, **options), (design, response)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args).posterior_


def refreshed(posterior):
    """Copy the posterior with responsibilities recomputed from its globals, so J is dS/dg at g exactly."""
    state = Posterior(posterior.graph, dict(posterior.globals), dict(posterior.locals), posterior.data)
    update_local(state, "assignment")
    return state


def stable_system(posterior):
    """Build the response system, rejecting the example when the fit is a saddle of CAVI.

    Random mixtures of few binary or count columns are often not
    identifiable: two components that nearly coincide form a saddle, where J
    has an eigenvalue of at least 1 and the correction is undefined.
    """
    try:
        return lr.build_response_system(posterior, warn=False)
    except lr.SingularResponseError:
        reject()


def coordinates_of(system, globals_):
    """Read the system's (K, Q) coordinates back from family objects."""
    parts = []
    for block in system.blocks:
        dist = globals_[block.variable]
        if block.variable == "weights":
            parts.append(dist.concentration[:, None])
        else:
            coordinate_map = lrc.CoordinateMap(lrc.FAMILY_COORDINATES[type(dist)], dist)
            parts.append(coordinate_map.elements(dist.natural_params()).reshape(dist.batch_shape[0], -1))
    return np.concatenate(parts, axis=1)


def cavi_iteration(posterior, system, coords):
    """Run one CAVI iteration (E-step, then M-step) from global coordinates ``coords``."""
    parts = system.split(coords)
    globals_ = {b.variable: b.to_posterior(parts[b.variable]) for b in system.blocks}
    state = Posterior(posterior.graph, globals_, {}, posterior.data)
    update_local(state, system.local)
    for block in system.blocks:
        update_global(state, block.variable)
    return coordinates_of(system, state.globals)


def finite_difference_jacobian(function, coords, scale):
    """Differentiate ``function`` along each coordinate by Richardson-extrapolated central differences.

    The step along coordinate j is h = 1e-5 scale[j]; (4 D(h / 2) - D(h)) / 3
    cancels the h^2 error of the central differences D.
    """
    flat = coords.reshape(-1)

    def central(j, size):
        step = np.zeros_like(flat)
        step[j] = size
        plus = function((flat + step).reshape(coords.shape)).reshape(-1)
        minus = function((flat - step).reshape(coords.shape)).reshape(-1)
        return (plus - minus) / (2 * size)

    columns = []
    for j in range(flat.size):
        size = 1e-5 * scale[j]
        columns.append((4 * central(j, 0.5 * size) - central(j, size)) / 3)
    return np.stack(columns, axis=1)


# With one component J = 0; two or three make the check informative.
@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=8, deadline=None)
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 2), k=st.integers(2, 3))
def test_jacobian_matches_finite_differences(family, seed, n, d, k):
    posterior = refreshed(random_fit(family, seed, n, d, k))
    # Without the cut-off RESP_TOL the assembled J is exact. With it, a site
    # of responsibility 1e-9 whose statistics are far larger than the
    # others' (a regression outlier) moved a J entry by 6e-5 of the largest.
    with mock.patch.object(lr, "RESP_TOL", 0.0):
        system = stable_system(posterior)
    coords = system.coordinates
    scale = np.abs(coords.reshape(-1)) + 1.0
    numeric = finite_difference_jacobian(lambda g: cavi_iteration(posterior, system, g), coords, scale)

    # Compare in the scaled coordinates the steps were taken in. Plain
    # central differences were off by up to 4e-6 here on a diagonal Gaussian
    # mixture, from truncation. The extrapolated ones have truncation error
    # of order 1e-20, and their rounding error, amplified by E-step logits of
    # size up to 1e3, stays below 1e-7.
    analytic = system.jacobian * scale[None, :]
    numeric = numeric * scale[None, :]
    tolerance = 1e-6 * max(1.0, np.abs(analytic).max())
    assert np.abs(numeric - analytic).max() <= tolerance


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=5, deadline=None)
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 3), k=st.integers(1, 3))
def test_hessian_is_symmetric_positive_definite(family, seed, n, d, k):
    posterior = random_fit(family, seed, n, d, k)
    factor = posterior.graph.factors["likelihood"]
    for variable in factor.params:
        block = lrc._conjugate_block(factor, posterior, variable)
        hessian = block.hessian
        # The Hessian of a log-partition is symmetric. The Normal-Gamma one
        # is built column by column, so an asymmetry above rounding means a
        # wrong term.
        scale = np.abs(hessian).max()
        assert np.abs(hessian - np.swapaxes(hessian, 1, 2)).max() <= 1e-10 * scale
        assert np.all(np.linalg.eigvalsh(hessian) > 0)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=5, deadline=None)
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 3), k=st.integers(1, 3))
def test_analytic_hessian_matches_numerical(family, seed, n, d, k):
    posterior = random_fit(family, seed, n, d, k)
    factor = posterior.graph.factors["likelihood"]
    for variable in factor.params:
        fitted = posterior.globals[variable]
        coordinate_map = lrc.CoordinateMap(lrc.FAMILY_COORDINATES[type(fitted)], fitted)
        analytic = coordinate_map.element_hessian(fitted)
        numeric = lrc.numerical_hessian(coordinate_map, fitted)
        diagonal = np.sqrt(np.abs(np.diagonal(analytic, axis1=-2, axis2=-1)))
        scale = diagonal[..., :, None] * diagonal[..., None, :]
        # Entries are compared relative to sqrt(H_ii H_jj). The extrapolated
        # differences agreed to 6e-9 on 75 random fits, worst on regression
        # mixtures, while a wrong term in a Hessian is off by order 1.
        assert np.all(np.abs(numeric - analytic) <= 1e-6 * scale)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=5, deadline=None)
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 3), k=st.integers(1, 3))
def test_logits_are_features_dot_mean(family, seed, n, d, k):
    posterior = random_fit(family, seed, n, d, k)
    _, blocks = lr.response_blocks(posterior)
    logits = local_logits(posterior, "assignment")
    predicted = np.zeros_like(logits)
    sites = np.arange(n)
    for block in blocks:
        dist = posterior.globals[block.variable]
        if block.variable == "weights":
            predicted += dist.expected_log()[None, :]
            continue
        coordinate_map = lrc.CoordinateMap(lrc.FAMILY_COORDINATES[type(dist)], dist)
        mean = coordinate_map.mean(dist).reshape(k, -1)
        predicted += block.features(sites) @ mean.T

    # The remainder is ln h(x_i), the same for every component. The logits
    # are sums of a few terms of size up to about 1e3, so rounding stays
    # below 1e-9 of their scale.
    remainder = logits - predicted
    spread = remainder - remainder[:, :1]
    assert np.abs(spread).max() <= 1e-9 * max(1.0, np.abs(logits).max())


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=4, deadline=None)
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 3), k=st.integers(1, 3))
def test_coordinates_are_prior_plus_weighted_features(family, seed, n, d, k):
    # After an M-step from the current responsibilities, g - prior equals
    # sum_i r_ik f_i: the features are the factor's site statistics.
    posterior = random_fit(family, seed, n, d, k)
    state = Posterior(posterior.graph, dict(posterior.globals), dict(posterior.locals), posterior.data)
    factor = posterior.graph.factors["likelihood"]
    for variable in factor.params:
        update_global(state, variable)
        block = lrc._conjugate_block(factor, state, variable)
        expected = state.locals["assignment"].T @ block.features(np.arange(n))
        # Sums of up to 40 terms of size up to about 1e2: rounding only.
        scale = max(1.0, np.abs(block.coordinates).max())
        assert np.abs(block.coordinates - block.prior_coordinates - expected).max() <= 1e-10 * scale


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=6, deadline=None)
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 2), k=st.integers(2, 3))
def test_correction_solves_linear_system(family, seed, n, d, k):
    posterior = refreshed(random_fit(family, seed, n, d, k))
    system = stable_system(posterior)
    site = int(np.random.default_rng(seed).integers(n))
    corrected = system.corrected_coordinates([site])[0].reshape(-1)
    message = system.site_messages([site])[0].reshape(-1)
    identity = np.eye(message.size)

    # An independent dense LU solve of (I - J) delta = -s. Both routes are
    # backward stable, so they agree to the condition number times eps.
    delta = np.linalg.solve(identity - system.jacobian, -message)
    expected = system.coordinates.reshape(-1) + delta
    tolerance = 1e-9 * system.condition_number * (np.abs(message).max() + np.abs(expected).max() * 1e-3 + 1.0)
    assert np.abs(corrected - expected).max() <= tolerance

    # The eigenvalues of J are real and in [0, 1) at a stable fixed point.
    assert system.eigenvalues.min() > -1e-10
    assert system.eigenvalues.max() < 1.0
