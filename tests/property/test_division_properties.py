"""Identities of site messages and division on random Gaussian mixtures."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

from fg_influence.inference import fit_cavi
from fg_influence.influence import InfluenceResult, divide, divided_natural_params, posterior_kl, site_messages

from ..helpers import clustered_data, mixture_graph


@st.composite
def mixture_problems(draw):
    """A fitted Gaussian mixture on random data with random priors."""
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(1, 4))
    d = draw(st.integers(1, 3))
    n = draw(st.integers(8, 60))
    spread = draw(st.floats(0.0, 10.0))
    alpha0 = draw(st.floats(0.01, 10.0))
    beta0 = draw(st.floats(0.01, 10.0))
    nu_extra = draw(st.floats(0.01, 20.0))
    scale_factor = draw(st.floats(0.05, 20.0))
    rng = np.random.default_rng(seed)
    X = clustered_data(rng, n, d, k, spread)
    graph = mixture_graph(X, k, alpha0=alpha0, beta0=beta0, nu0=d - 1 + nu_extra,
                          scale0=scale_factor * np.eye(d))
    iterations = draw(st.integers(1, 30))
    posterior = fit_cavi(graph, init="random", random_state=rng, max_iter=iterations, warn=False)
    return posterior


def _sites(draw_data, n):
    return draw_data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))


@settings(max_examples=200)
@given(mixture_problems())
def test_rank_one_kl_equals_explicit_division(posterior):
    result = InfluenceResult(posterior)
    assert not result.improper.any()
    for site in range(0, posterior.n_sites, max(1, posterior.n_sites // 6)):
        explicit = posterior_kl(posterior.globals, divide(posterior, [site]))
        # The explicit path subtracts log-partitions of magnitude up to ~1e3,
        # leaving absolute rounding near 1e-12; the closed form has none of
        # that cancellation, so 1e-9 absolute plus 1e-7 relative is ample.
        np.testing.assert_allclose(result.kl[site], explicit, rtol=1e-7, atol=1e-9)


@settings(max_examples=200)
@given(mixture_problems())
def test_rank_one_shifts_equal_explicit_division(posterior):
    result = InfluenceResult(posterior)
    fitted = posterior.globals
    for site in range(0, posterior.n_sites, max(1, posterior.n_sites // 4)):
        divided = divide(posterior, [site])
        # Means are recovered from natural parameters by one division, so
        # agreement is to rounding relative to the data scale (<= ~30 here).
        np.testing.assert_allclose(result.mean_shift[site], divided["components"].mean - fitted["components"].mean,
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(result.weight_shift[site], divided["weights"].mean() - fitted["weights"].mean(),
                                   rtol=1e-7, atol=1e-12)


@settings(max_examples=200)
@given(mixture_problems())
def test_loo_log_predictive_equals_student_t_mixture(posterior):
    result = InfluenceResult(posterior)
    X = posterior.data["x"]
    d = X.shape[1]
    for site in range(0, posterior.n_sites, max(1, posterior.n_sites // 3)):
        divided = divide(posterior, [site])
        components, weights = divided["components"], divided["weights"]
        terms = []
        for k in range(components.beta.size):
            dof = components.dof[k] + 1 - d
            beta = components.beta[k]
            shape = (1 + beta) / (dof * beta) * np.linalg.inv(components.scale[k])
            terms.append(np.log(weights.mean()[k])
                         + stats.multivariate_t(components.mean[k], shape, df=dof).logpdf(X[site]))
        # scipy inverts the shape matrix itself; both routes are exact to
        # rounding amplified by the matrix condition number (< 1e6 here).
        np.testing.assert_allclose(result.loo_log_predictive[site], logsumexp(terms), rtol=1e-7, atol=1e-8)


@settings(max_examples=200)
@given(mixture_problems())
def test_dividing_every_site_returns_prior(posterior):
    everything = divide(posterior, np.arange(posterior.n_sites))
    graph = posterior.graph
    for name, divided in everything.items():
        prior = graph.variables[name].prior
        for got, expected in zip(divided.natural_params(), prior.natural_params()):
            # The fitted natural parameters are prior + sum of N messages; the
            # subtraction cancels that sum, leaving rounding of order
            # N * eps * |largest message| (data up to ~30, N <= 60).
            scale = 1.0 + np.abs(posterior.globals[name].natural_params()[0]).max()
            np.testing.assert_allclose(got, expected, atol=1e-9 * scale ** 2, rtol=1e-9)


@settings(max_examples=200)
@given(mixture_problems(), st.data())
def test_division_is_additive(posterior, data):
    first = _sites(data, posterior.n_sites)
    rest = [i for i in range(posterior.n_sites) if i not in first]
    second = data.draw(st.lists(st.sampled_from(rest), unique=True, max_size=len(rest))) if rest else []
    combined = divided_natural_params(posterior, first + second)
    for name in combined:
        sequential = tuple(
            p - a.sum(axis=0) - (b.sum(axis=0) if second else 0.0)
            for p, a, b in zip(
                posterior.globals[name].natural_params(),
                site_messages(posterior, name, first),
                site_messages(posterior, name, second) if second else site_messages(posterior, name, first),
            )
        )
        for got, expected in zip(combined[name], sequential):
            # The same numbers summed in a different order: rounding only.
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=200)
@given(mixture_problems(), st.data())
def test_adding_site_messages_back_undoes_division(posterior, data):
    sites = _sites(data, posterior.n_sites)
    divided = divided_natural_params(posterior, sites)
    for name, natural in divided.items():
        restored = tuple(p + m.sum(axis=0) for p, m in zip(natural, site_messages(posterior, name, sites)))
        for got, expected in zip(restored, posterior.globals[name].natural_params()):
            # One subtraction and one addition of the same terms: rounding only.
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=200)
@given(mixture_problems())
def test_kl_to_divided_posterior_is_non_negative(posterior):
    result = InfluenceResult(posterior)
    assert np.all(result.kl >= 0)
    assert np.all(np.isfinite(result.kl))
    assert np.all(np.isfinite(result.loo_log_predictive))


@settings(max_examples=200)
@given(mixture_problems())
def test_elbo_never_decreases(posterior):
    history = np.array(posterior.elbo_history)
    # Every CAVI step maximises the ELBO in its block; summing N <= 60 site
    # terms leaves rounding far below 1e-10 of the ELBO's magnitude.
    assert np.all(np.diff(history) >= -1e-10 * np.maximum(1.0, np.abs(history[1:])))
