"""Bayesian linear regression on stackloss against statsmodels' OLS influence measures."""

import numpy as np
import pytest
from scipy import stats

sm = pytest.importorskip("statsmodels.api")
from statsmodels.stats.outliers_influence import OLSInfluence  # noqa: E402

from fg_influence.datasets import load_stackloss  # noqa: E402
from fg_influence.influence import divide  # noqa: E402
from fg_influence.models import BayesianLinearRegression  # noqa: E402

# A prior precision of 1e-12 per coefficient perturbs X^T X (entries up to
# about 1e5 on stackloss) by a relative 1e-17, far below the 1e-6 checked.
VAGUE = dict(coef_precision_prior=1e-12, noise_shape_prior=1e-3, noise_rate_prior=1e-3)


@pytest.fixture(scope="module")
def stackloss():
    data = load_stackloss().data
    return data[:, :3], data[:, 3]


@pytest.fixture(scope="module")
def fitted(stackloss):
    X, y = stackloss
    model = BayesianLinearRegression(**VAGUE).fit(X, y)
    ols = sm.OLS(y, sm.add_constant(X)).fit()
    return model, model.influence(), ols


def test_vague_prior_mean_equals_ols(fitted):
    model, _, ols = fitted

    coefficients = np.concatenate([[model.intercept_], model.coef_])

    np.testing.assert_allclose(coefficients, ols.params, rtol=1e-6)


def test_coefficient_shifts_equal_statsmodels_dfbeta(fitted):
    _, result, ols = fitted
    # statsmodels' dfbeta is beta - beta_without_i; a shift is without minus with.
    dfbeta = OLSInfluence(ols).dfbeta

    shift = result.shift("coefficients.coef")

    np.testing.assert_allclose(-shift, dfbeta, rtol=1e-6, atol=1e-6 * np.abs(dfbeta).max())


def test_cooks_distance_matches_statsmodels(fitted):
    model, result, ols = fitted
    expected = OLSInfluence(ols).cooks_distance[0]

    np.testing.assert_allclose(model.cooks_distance(result), expected, rtol=1e-6)


def test_known_unusual_rows_rank_first(fitted):
    _, result, _ = fitted

    top = set((result.top(4) + 1).tolist())

    assert top == {1, 3, 4, 21}


def test_kl_matches_exact_refits(fitted):
    _, result, _ = fitted

    result.compute_exact("all")
    accuracy = result.accuracy()

    # Without latent variables division is exact, so the two differ by
    # rounding only (measured maximum relative error 4e-11).
    assert accuracy["spearman"] >= 0.999  # measured 1.0
    assert accuracy["max_relative_error"] < 1e-8


def test_loo_log_predictive_is_student_t_of_refit(stackloss, fitted):
    X, y = stackloss
    _, result, _ = fitted

    for i in (0, 2, 20):
        keep = np.arange(len(y)) != i
        refit = BayesianLinearRegression(**VAGUE).fit(X[keep], y[keep])
        posterior = refit.posterior_.globals["coefficients"]
        x = np.concatenate([[1.0], X[i]])
        variance = posterior.rate / posterior.shape * (1.0 + x @ np.linalg.solve(posterior.precision, x))
        expected = stats.t.logpdf(y[i], df=2 * posterior.shape, loc=x @ posterior.mean, scale=np.sqrt(variance))
        # Both are sums of a few terms of size 10 computed in float64.
        assert result.loo_log_predictive[i] == pytest.approx(expected, rel=1e-9)


def test_leave_group_out_equals_refit(stackloss, fitted):
    X, y = stackloss
    model, _, _ = fitted
    group = [0, 2, 3, 20]
    keep = np.setdiff1d(np.arange(len(y)), group)

    divided = divide(model.posterior_, group)["coefficients"]
    refit = BayesianLinearRegression(**VAGUE).fit(X[keep], y[keep]).posterior_.globals["coefficients"]

    # Division subtracts the group's sums from the fitted sums, which loses
    # digits in proportion to the condition number of X^T X (about 1e7 here).
    np.testing.assert_allclose(divided.mean, refit.mean, rtol=1e-6)
    np.testing.assert_allclose(divided.shape, refit.shape, rtol=1e-12)
    np.testing.assert_allclose(divided.rate, refit.rate, rtol=1e-6)


def test_singular_design_rejected(stackloss):
    X, y = stackloss
    collinear = np.column_stack([X, 2.0 * X[:, 0]])

    with pytest.raises(ValueError, match="design matrix is singular: rank 4 with 5 columns"):
        BayesianLinearRegression().fit(collinear, y)


def test_non_numeric_target_rejected(stackloss):
    X, _ = stackloss

    with pytest.raises(TypeError, match="y must be a numeric array"):
        BayesianLinearRegression().fit(X, np.array(["a"] * len(X)))


def test_mismatched_rows_rejected(stackloss):
    X, y = stackloss

    with pytest.raises(ValueError, match="same number of rows, got 21 and 20"):
        BayesianLinearRegression().fit(X, y[:-1])
