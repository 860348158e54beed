"""Division is exact for models without latent variables.

For Beta-Bernoulli, Poisson-Gamma and Bayesian linear regression the
posterior is conjugate, so its natural parameters are the prior's plus the
sum of the site messages, and dividing site i out leaves exactly the
posterior of the data without site i. Two properties are checked:

1. the divided posterior equals the posterior fitted without the site, to
   rounding;
2. it equals one Newton step on the perturbed objective. For Beta-Bernoulli
   and Poisson-Gamma the objective is the ELBO of the data without the site
   as a function of q's natural parameters lambda,
   L(lambda) = <eta - lambda, grad A(lambda)> + A(lambda), whose gradient is
   F(lambda) (eta - lambda) with F = grad^2 A the Fisher information. The
   Newton step that uses F as the curvature (the natural-gradient step of
   unit length) from the full fit lambda* moves to lambda* + (eta - lambda*)
   = eta, the exact posterior; the test computes the gradient and F by finite
   differences of A and E[T], so it checks the family's formulas as well.
   For linear regression the posterior mean of the coefficients minimises
   the quadratic objective ||y - X w||^2 / 2 + w^T Lambda0 w / 2, so one
   ordinary Newton step on the objective without row i, from the full-data
   mean, reaches its minimiser exactly.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fg_influence.influence import divide
from fg_influence.models import BayesianLinearRegression, BetaBernoulli, PoissonGamma

seeds = st.integers(0, 2**32 - 1)


def draw_binary(rng):
    n = int(rng.integers(2, 40))
    d = int(rng.integers(1, 4))
    return rng.integers(0, 2, size=(n, d)).astype(float)


def draw_counts(rng):
    n = int(rng.integers(2, 40))
    d = int(rng.integers(1, 4))
    return rng.poisson(np.exp(rng.uniform(-2, 4, size=d)), size=(n, d)).astype(float)


def draw_regression(rng):
    p = int(rng.integers(1, 4))
    n = int(rng.integers(p + 3, 40))
    X = rng.normal(scale=np.exp(rng.uniform(-1, 2, size=p)), size=(n, p))
    w = rng.normal(size=p)
    y = X @ w + rng.normal(loc=rng.normal(scale=5.0), scale=np.exp(rng.uniform(-2, 1)), size=n)
    return X, y


def assert_natural_params_close(divided, refit, fitted):
    # Division computes (prior + sum over all sites) - message_i, the refit
    # prior + sum over the others: they differ by rounding of the largest
    # summed term, a few eps of |fitted natural parameters|.
    for left, right, size in zip(divided.natural_params(), refit.natural_params(), fitted.natural_params()):
        np.testing.assert_allclose(left, right, rtol=0, atol=1e-12 * (np.abs(size).max() + 1.0))


@settings(max_examples=200)
@given(seed=seeds)
def test_beta_bernoulli_division_equals_refit(seed):
    rng = np.random.default_rng(seed)
    X = draw_binary(rng)
    model = BetaBernoulli(a=rng.uniform(0.1, 5), b=rng.uniform(0.1, 5)).fit(X)
    site = int(rng.integers(len(X)))

    divided = divide(model.posterior_, [site])["probability"]
    refit = BetaBernoulli(a=model.a, b=model.b).fit(np.delete(X, site, axis=0)).posterior

    assert_natural_params_close(divided, refit, model.posterior)


@settings(max_examples=200)
@given(seed=seeds)
def test_poisson_gamma_division_equals_refit(seed):
    rng = np.random.default_rng(seed)
    X = draw_counts(rng)
    model = PoissonGamma(shape=rng.uniform(0.1, 5), rate=rng.uniform(0.1, 5)).fit(X)
    site = int(rng.integers(len(X)))

    divided = divide(model.posterior_, [site])["rate"]
    refit = PoissonGamma(shape=model.shape, rate=model.rate).fit(np.delete(X, site, axis=0)).posterior

    assert_natural_params_close(divided, refit, model.posterior)


@settings(max_examples=200)
@given(seed=seeds)
def test_linear_regression_division_equals_refit(seed):
    rng = np.random.default_rng(seed)
    X, y = draw_regression(rng)
    options = dict(coef_precision_prior=float(np.exp(rng.uniform(-6, 1))), noise_shape_prior=0.5,
                   noise_rate_prior=0.5)
    model = BayesianLinearRegression(**options).fit(X, y)
    site = int(rng.integers(len(y)))

    divided = divide(model.posterior_, [site])["coefficients"]
    refit = BayesianLinearRegression(**options).fit(np.delete(X, site, axis=0), np.delete(y, site))

    assert_natural_params_close(divided, refit.posterior_.globals["coefficients"],
                                model.posterior_.globals["coefficients"])


def flat(params):
    return np.concatenate([np.ravel(p) for p in params])


def natural_gradient_step(family, fitted_natural, target_natural):
    """lambda* + F^-1 grad L(lambda*) for the ELBO L with natural parameters ``target_natural``.

    Scalar families only (Beta and Gamma, batch shape ()): both natural
    parameters are perturbed by central differences of relative size 1e-6.
    """
    lam = flat(fitted_natural)
    eta = flat(target_natural)

    def elbo(values):
        q = family.from_natural(*values)
        return float(np.dot(eta - values, flat(q.expected_stats())) + q.log_partition())

    def stats(values):
        return flat(family.from_natural(*values).expected_stats())

    steps = 1e-6 * np.maximum(np.abs(lam), 1.0)
    gradient = np.empty(lam.size)
    fisher = np.empty((lam.size, lam.size))
    for j in range(lam.size):
        delta = np.zeros(lam.size)
        delta[j] = steps[j]
        gradient[j] = (elbo(lam + delta) - elbo(lam - delta)) / (2 * steps[j])
        fisher[:, j] = (stats(lam + delta) - stats(lam - delta)) / (2 * steps[j])
    return lam + np.linalg.solve(fisher, gradient)


@settings(max_examples=200)
@given(seed=seeds, family=st.sampled_from(["beta", "gamma"]))
def test_divided_posterior_is_one_natural_newton_step(seed, family):
    rng = np.random.default_rng(seed)
    if family == "beta":
        X = draw_binary(rng)[:, :1]
        model = BetaBernoulli(a=rng.uniform(0.5, 5), b=rng.uniform(0.5, 5)).fit(X)
    else:
        X = draw_counts(rng)[:, :1]
        model = PoissonGamma(shape=rng.uniform(0.5, 5), rate=rng.uniform(0.5, 5)).fit(X)
    site = int(rng.integers(len(X)))
    fitted = model.posterior
    scalar = type(fitted).from_natural(*(p[0] for p in fitted.natural_params()))
    divided = divide(model.posterior_, [site])[model.variable]
    divided_natural = tuple(p[0] for p in divided.natural_params())

    stepped = natural_gradient_step(type(fitted), scalar.natural_params(), divided_natural)

    # Central differences with relative step h = 1e-6 have truncation error
    # O(h^2) and rounding error O(eps / h) = 1e-10 relative to the terms of
    # the ELBO, which are at most a few hundred here.
    np.testing.assert_allclose(stepped, flat(divided_natural), rtol=1e-4, atol=1e-4)


@settings(max_examples=200)
@given(seed=seeds)
def test_regression_divided_mean_is_one_newton_step(seed):
    rng = np.random.default_rng(seed)
    X, y = draw_regression(rng)
    precision0 = float(np.exp(rng.uniform(-6, 1)))
    model = BayesianLinearRegression(coef_precision_prior=precision0).fit(X, y)
    site = int(rng.integers(len(y)))
    design = np.column_stack([np.ones(len(y)), X])
    w = model.posterior_.globals["coefficients"].mean
    keep = np.arange(len(y)) != site

    # Objective without the site: ||y - X w||^2 / 2 + precision0 ||w||^2 / 2.
    hessian = design[keep].T @ design[keep] + precision0 * np.eye(design.shape[1])
    gradient = -design[keep].T @ (y[keep] - design[keep] @ w) + precision0 * w
    newton = w - np.linalg.solve(hessian, gradient)
    divided = divide(model.posterior_, [site])["coefficients"].mean

    # Both solve a linear system in X^T X + precision0 I, whose condition
    # number (at most about 1e8 for the drawn designs) multiplies eps.
    scale = np.abs(w).max() + np.abs(newton).max()
    np.testing.assert_allclose(divided, newton, rtol=0, atol=1e-7 * scale)
