"""The generic CAVI loop: ELBO, convergence, restarts and reproducibility."""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from fg_influence import ConvergenceWarning
from fg_influence.inference import compute_elbo, fit_cavi

from .helpers import clustered_data, mixture_graph


@pytest.fixture
def graph():
    X = clustered_data(np.random.default_rng(1), 60, 2, 3, spread=4.0)
    return mixture_graph(X, 3)


def test_elbo_never_decreases(graph):
    posterior = fit_cavi(graph, random_state=0, init="random", tol=0, max_iter=60, warn=False)
    history = np.array(posterior.elbo_history)
    # Each coordinate step maximises the ELBO exactly; rounding in sums over
    # 60 sites allows decreases of about 1e-12 relative at most.
    assert np.all(np.diff(history) >= -1e-10 * np.abs(history[1:]))


def test_final_elbo_at_least_last_iteration(graph):
    posterior = fit_cavi(graph, random_state=0)
    # The final global update can only raise the bound, up to rounding.
    assert posterior.elbo >= posterior.elbo_history[-1] - 1e-9 * abs(posterior.elbo)


def test_elbo_matches_monte_carlo(graph):
    posterior = fit_cavi(graph, random_state=0)
    rng = np.random.default_rng(123)
    X = graph.variables["x"].data
    weights = posterior.globals["weights"]
    components = posterior.globals["components"]
    resp = posterior.locals["assignment"]
    n_draws = 1500
    samples = np.empty(n_draws)
    prior_weights = graph.variables["weights"].prior
    prior_components = graph.variables["components"].prior
    for s in range(n_draws):
        pi = rng.dirichlet(weights.concentration)
        log_joint = stats.dirichlet(prior_weights.concentration).logpdf(pi)
        log_q = stats.dirichlet(weights.concentration).logpdf(pi)
        loglik = np.empty((X.shape[0], pi.size))
        for k in range(pi.size):
            precision = stats.wishart(df=components.dof[k], scale=components.scale[k]).rvs(random_state=rng)
            mu = rng.multivariate_normal(components.mean[k], np.linalg.inv(components.beta[k] * precision))
            for nw, target in ((prior_components, "prior"), (components, "q")):
                value = (stats.wishart(df=nw.dof[k], scale=nw.scale[k]).logpdf(precision)
                         + stats.multivariate_normal(nw.mean[k], np.linalg.inv(nw.beta[k] * precision)).logpdf(mu))
                if target == "prior":
                    log_joint += value
                else:
                    log_q += value
            loglik[:, k] = stats.multivariate_normal(mu, np.linalg.inv(precision)).logpdf(X)
        # Sum over z_i analytically: E_q(z)[log p(x, z | theta) - log q(z)].
        log_pz = np.log(pi) + loglik
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.sum(np.where(resp > 0, resp * np.log(resp), 0.0))
        samples[s] = log_joint - log_q + np.sum(resp * log_pz) + entropy
    standard_error = samples.std(ddof=1) / np.sqrt(n_draws)
    # Monte Carlo mean within 5 standard errors (a false failure has probability below 1e-6).
    assert abs(samples.mean() - compute_elbo(posterior)) < 5 * standard_error


def test_same_seed_reproduces_fit(graph):
    first = fit_cavi(graph, random_state=7, n_init=2)
    second = fit_cavi(graph, random_state=7, n_init=2)
    np.testing.assert_array_equal(first.locals["assignment"], second.locals["assignment"])
    np.testing.assert_array_equal(first.globals["components"].mean, second.globals["components"].mean)
    assert first.elbo == second.elbo


def test_restarts_keep_best_elbo(graph):
    single = [fit_cavi(graph, random_state=seed, init="random", n_init=1).elbo for seed in range(4)]
    best = fit_cavi(graph, random_state=np.random.default_rng(0), init="random", n_init=4).elbo
    # Four random restarts reach at least the median of four single runs.
    assert best >= np.median(single) - 1e-9 * abs(best)


def test_convergence_warning_when_max_iter_too_small(graph):
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        posterior = fit_cavi(graph, random_state=0, init="random", max_iter=2, tol=1e-14)
    assert not posterior.converged
    assert posterior.n_iter == 2


def test_converged_run_raises_no_warning(graph):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        posterior = fit_cavi(graph, random_state=0)
    assert posterior.converged


def test_globals_equal_prior_plus_messages(graph):
    posterior = fit_cavi(graph, random_state=0)
    resp = posterior.locals["assignment"]
    X = graph.variables["x"].data
    alpha = posterior.globals["weights"].concentration
    prior_alpha = graph.variables["weights"].prior.concentration
    np.testing.assert_allclose(alpha, prior_alpha + resp.sum(axis=0), rtol=1e-12)
    components = posterior.globals["components"]
    prior = graph.variables["components"].prior
    counts = resp.sum(axis=0)
    np.testing.assert_allclose(components.beta, prior.beta + counts, rtol=1e-12)
    np.testing.assert_allclose(components.dof, prior.dof + counts, rtol=1e-12)
    expected_mean = (prior.beta[:, None] * prior.mean + resp.T @ X) / (prior.beta + counts)[:, None]
    np.testing.assert_allclose(components.mean, expected_mean, rtol=1e-10, atol=1e-12)


def test_responsibilities_are_softmax_of_messages(graph):
    posterior = fit_cavi(graph, random_state=0, tol=1e-15, max_iter=5000, warn=False)
    weights = posterior.globals["weights"]
    components = posterior.globals["components"]
    X = graph.variables["x"].data
    expected_loglik = np.empty((X.shape[0], 3))
    for k in range(3):
        expected_loglik[:, k] = (0.5 * components.wishart.expected_logdet()[k] - np.log(2 * np.pi)
                                 - 0.5 * components.expected_quadratic(X[:, None, :])[:, k])
    logits = weights.expected_log() + expected_loglik
    converged_resp = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    # At a fixed point converged to rounding, one more E-step moves the
    # responsibilities by far less than 1e-8.
    np.testing.assert_allclose(posterior.locals["assignment"], converged_resp, atol=1e-8)


def test_invalid_settings_rejected(graph):
    with pytest.raises(ValueError, match="init must be one of"):
        fit_cavi(graph, init="spectral")
    with pytest.raises(ValueError, match="max_iter must be at least 1, got 0"):
        fit_cavi(graph, max_iter=0)
    with pytest.raises(TypeError, match="graph must be a FactorGraph"):
        fit_cavi("model")
    with pytest.raises(ValueError, match=r"init_locals\['assignment'\] must have shape \(60, 3\)"):
        fit_cavi(graph, init_locals={"assignment": np.ones((60, 2)) / 2})
