"""MAP-EM fits and exact leave-out refits."""

import numpy as np
import pytest

from fg_influence.models import GaussianMixture
from fg_influence.reference import (
    MixtureParameters, MixturePrior, fit_map_em, gradient, loss, m_step, natural_scales, refit_without,
)

from ..helpers import standardized_faithful


@pytest.fixture(scope="module")
def faithful():
    X = standardized_faithful()
    prior = MixturePrior.from_dict(GaussianMixture(2).priors(X), 2)
    return X, prior, fit_map_em(X, 2, prior, random_state=0)


def test_map_is_stationary(faithful):
    X, prior, fit = faithful
    assert fit.converged
    scaled = gradient(X, fit.parameters, prior) * natural_scales(fit.parameters)
    # EM stops when coordinates move less than 1e-10 of their scale; the
    # gradient then is of that order times the curvature (entries up to ~1e3).
    assert np.abs(scaled).max() < 1e-6


def test_em_never_increases_loss(faithful):
    X, prior, _ = faithful
    rng = np.random.default_rng(3)
    resp = rng.dirichlet(np.ones(2), size=X.shape[0])
    parameters = m_step(X, resp, prior)
    values = [loss(X, parameters, prior)]
    for _ in range(30):
        parameters = fit_map_em(X, 2, prior, init=parameters, max_iter=1).parameters
        values.append(loss(X, parameters, prior))
    # EM is a majorise-minimise method; steps may only lose rounding (~1e-12 of a loss near 500).
    assert np.all(np.diff(values) <= 1e-9)


def test_refit_without_site_matches_cold_fit(faithful):
    X, prior, fit = faithful
    refit = refit_without(X, fit, prior, [7])
    cold = fit_map_em(np.delete(X, 7, axis=0), 2, prior, init=fit.resp[np.arange(X.shape[0]) != 7])
    assert refit.converged
    # Both reach the same MAP to the EM stopping tolerance (1e-10 of each scale).
    np.testing.assert_allclose(refit.parameters.to_vector(), cold.parameters.to_vector(), atol=1e-8)


def test_vector_round_trip():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(3, 2, 4))
    parameters = MixtureParameters(np.array([0.2, 0.3, 0.5]), rng.normal(size=(3, 2)), factors @ factors.transpose(0, 2, 1))
    back = MixtureParameters.from_vector(parameters.to_vector(), 3, 2)
    np.testing.assert_array_equal(back.weights, parameters.weights)
    np.testing.assert_array_equal(back.means, parameters.means)
    np.testing.assert_array_equal(back.precisions, parameters.precisions)


def test_empty_component_is_reported(faithful):
    X, prior, _ = faithful
    resp = np.zeros((X.shape[0], 3))
    resp[:, :2] = 0.5
    with pytest.raises(ValueError, match="MAP weight of component 2 is undefined"):
        m_step(X, resp, MixturePrior(0.5, 1.0, np.zeros(2), 2.0, np.eye(2)))


def test_bad_init_is_rejected(faithful):
    X, prior, _ = faithful
    with pytest.raises(ValueError, match="init must have shape"):
        fit_map_em(X, 2, prior, init=np.ones((5, 2)) / 2)
    with pytest.raises(ValueError, match="each row must sum to 1"):
        fit_map_em(X, 2, prior, init=np.ones((X.shape[0], 2)))
    with pytest.raises(ValueError, match="X must have 2 columns"):
        fit_map_em(X[:, :1], 2, prior)


def test_bad_prior_is_rejected():
    with pytest.raises(ValueError, match="covariance_prior must be a symmetric positive definite"):
        MixturePrior.from_dict({"weight_concentration_prior": 1.0, "mean_precision_prior": 1.0,
                                "mean_prior": [0.0, 0.0], "degrees_of_freedom_prior": 2.0,
                                "covariance_prior": [[1.0, 2.0], [2.0, 1.0]]}, 2)
