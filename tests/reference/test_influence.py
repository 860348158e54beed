"""EM-influence and the influence function against exact EM refits on Old Faithful."""

import numpy as np
import pytest

from fg_influence.models import GaussianMixture
from fg_influence.reference import (
    MixturePrior, em_influence, exact_shifts, fit_map_em, hessian, influence_function, influence_on_test_loss,
    loss, m_step, missing_information_correction, self_influence, unpack_shifts,
)
from fg_influence.reference.mixture_loss import responsibilities

from ..helpers import standardized_faithful

SITES = [0, 7, 18, 100, 150, 271]


@pytest.fixture(scope="module")
def faithful():
    X = standardized_faithful()
    prior = MixturePrior.from_dict(GaussianMixture(2).priors(X), 2)
    fit = fit_map_em(X, 2, prior, random_state=0)
    return X, prior, fit, exact_shifts(X, fit, prior, [[site] for site in SITES])


def _relative_error(estimate, exact, metric):
    difference = estimate - exact
    return np.sqrt(np.einsum("np,pq,nq->n", difference, metric, difference)
                   / np.einsum("np,pq,nq->n", exact, metric, exact))


def test_influence_function_close_to_refit(faithful):
    X, prior, fit, exact = faithful
    metric = hessian(X, fit.parameters, prior)
    estimate = influence_function(X, fit.parameters, prior, groups=SITES)
    # One Newton step misses second-order terms of size |shift|^2, a few
    # percent of the shift for one of 272 points (measured maximum 0.029).
    assert _relative_error(estimate, exact, metric).max() < 0.06


def test_em_influence_less_accurate_than_influence_function(faithful):
    X, prior, fit, exact = faithful
    metric = hessian(X, fit.parameters, prior)
    newton = _relative_error(influence_function(X, fit.parameters, prior, groups=SITES), exact, metric)
    em = _relative_error(em_influence(X, fit.parameters, prior, groups=SITES), exact, metric)
    # EM-influence ignores the missing information, so its error is larger at every site.
    assert np.all(em > newton)


def test_divided_weight_step_is_exact_m_step(faithful):
    X, prior, fit, _ = faithful
    # The M-step of the fit's own responsibilities, so the weights are their exact MAP.
    parameters = m_step(X, fit.resp, prior)
    groups = [[3], [5, 9, 200]]
    shifts = em_influence(X, parameters, prior, groups=groups, hessian="divided", resp=fit.resp)
    weight_shifts = unpack_shifts(shifts, 2, 2)["weights"]
    for row, group in enumerate(groups):
        keep = np.setdiff1d(np.arange(X.shape[0]), group)
        m_step_weights = m_step(X[keep], fit.resp[keep], prior).weights
        # The closed form and the M-step are the same ratio computed two ways.
        np.testing.assert_allclose(weight_shifts[row], m_step_weights - parameters.weights, rtol=1e-10, atol=1e-15)


def test_missing_information_correction_is_influence_function(faithful):
    X, prior, fit, _ = faithful
    em = em_influence(X, fit.parameters, prior)
    corrected = missing_information_correction(X, fit.parameters, prior, em)
    newton = influence_function(X, fit.parameters, prior)
    # Two solves with a Hessian of condition number 9.2e3 on this fit, each
    # losing about cond * eps; 1e-12 * 1e4 of the largest entry covers both.
    np.testing.assert_allclose(corrected, newton, rtol=0, atol=1e-12 * 1e4 * np.abs(newton).max())


def test_group_influence_is_sum_of_sites(faithful):
    X, prior, fit, _ = faithful
    single = influence_function(X, fit.parameters, prior, groups=[4, 5, 6])
    group = influence_function(X, fit.parameters, prior, groups=[[4, 5, 6]])
    # The Newton step is linear in the removed gradient.
    np.testing.assert_allclose(group[0], single.sum(axis=0), rtol=1e-10, atol=1e-15)


def test_self_influence_is_hessian_norm_of_step(faithful):
    X, prior, fit, _ = faithful
    metric = hessian(X, fit.parameters, prior)
    steps = influence_function(X, fit.parameters, prior, groups=SITES, hessian_matrix=metric)
    np.testing.assert_allclose(self_influence(X, fit.parameters, prior, groups=SITES),
                               np.einsum("np,pq,nq->n", steps, metric, steps), rtol=1e-10)


def test_test_loss_influence_predicts_refit(faithful):
    X, prior, fit, exact = faithful
    X_test = np.array([[0.0, 0.0], [1.5, 1.0], [-1.2, -1.4]])
    predicted = influence_on_test_loss(X_test, X, fit.parameters, prior, groups=SITES)
    _, before = responsibilities(X_test, fit.parameters)
    for column, site in enumerate(SITES):
        refit = fit_map_em(np.delete(X, site, axis=0), 2, prior, init=fit.parameters)
        _, after = responsibilities(X_test, refit.parameters)
        # First order in a shift of relative size ~1/272: second-order terms
        # are a few percent of the larger changes (up to 0.05 here) and
        # dominate changes near 1e-3 (measured worst absolute error 4.8e-4).
        np.testing.assert_allclose(predicted[:, column], after - before, rtol=0.05, atol=1e-3)
    assert np.isfinite(loss(X, fit.parameters, prior))


def test_unpack_shifts_last_weight(faithful):
    X, prior, fit, _ = faithful
    parts = unpack_shifts(influence_function(X, fit.parameters, prior, groups=SITES), 2, 2)
    assert parts["weights"].shape == (len(SITES), 2)
    assert parts["means"].shape == (len(SITES), 2, 2)
    assert parts["precisions"].shape == (len(SITES), 2, 2, 2)
    np.testing.assert_allclose(parts["weights"].sum(axis=1), 0.0, atol=1e-15)
    np.testing.assert_array_equal(parts["precisions"], np.swapaxes(parts["precisions"], 2, 3))


def test_bad_arguments_are_rejected(faithful):
    X, prior, fit, _ = faithful
    with pytest.raises(ValueError, match="hessian must be one of"):
        em_influence(X, fit.parameters, prior, hessian="full")
    with pytest.raises(ValueError, match="groups"):
        influence_function(X, fit.parameters, prior, groups=[[400]])
    with pytest.raises(ValueError, match="X_test must have 2 columns"):
        influence_on_test_loss(np.zeros((2, 3)), X, fit.parameters, prior)
    with pytest.raises(ValueError, match="resp must be non-negative"):
        em_influence(X, fit.parameters, prior, resp=np.ones((X.shape[0], 2)))
