"""Numba kernels against plain numpy/scipy references, and across thread counts."""

import math

import mpmath
import numba
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.special import gammaln, logsumexp, multigammaln, psi
from scipy.stats import multivariate_t

from fg_influence.families import Dirichlet
from fg_influence.families._linalg import multivariate_digamma, multivariate_polygamma
from fg_influence.kernels import loo as loo_kernels
from fg_influence.kernels import mixture as mixture_kernels

# Relative tolerance between a kernel and its numpy reference: both sum the
# same O(D^2) float64 terms in different orders, so they differ by a few
# hundred ulps at most.
RTOL = 1e-11


def random_problem(rng, n, dim, k):
    """Data, responsibilities and a Normal-Wishart posterior like a fitted one (beta, nu ~ N / K)."""
    X = rng.normal(size=(n, dim)) * rng.uniform(0.5, 3.0, size=dim)
    resp = rng.dirichlet(np.full(k, 0.3), size=n)
    means = rng.normal(size=(k, dim))
    factors = rng.normal(size=(k, dim, dim)) / dim
    precision = factors @ np.swapaxes(factors, 1, 2) + np.eye(dim) * rng.uniform(0.05, 0.5, size=(k, 1, 1))
    counts = resp.sum(axis=0)
    beta = counts + 1.0
    dof = counts + dim + rng.uniform(0.0, 2.0, size=k)
    alpha = counts + 0.1
    # W = E[Lambda] / nu, as in a fitted posterior.
    scale = precision / dof[:, None, None]
    return X, resp, means, scale, np.linalg.cholesky(scale), beta, dof, alpha


def reference_quadratic_forms(X, means, scale):
    diff = X[:, None, :] - means[None, :, :]
    return np.einsum("nka,kab,nkb->nk", diff, scale, diff)


def digamma_and_derivatives(dof, dim):
    """Return psi_D(nu / 2) and its first four derivatives, as normal_wishart_downdate_kl takes them."""
    half = 0.5 * np.asarray(dof, dtype=float)
    return (np.stack([multivariate_digamma(half, dim)] + [multivariate_polygamma(n, half, dim) for n in range(1, 5)]),)


def nw_kl_closed_form_50_digits(r, q, beta, dof, dim):
    """Evaluate the closed form of one component's KL term with 50 significant digits."""
    with mpmath.workdps(50):
        r, q, b, nu = (mpmath.mpf(float(value)) for value in (r, q, beta, dof))
        b_new, nu_new = b - r, nu - r
        c = b * r / b_new

        def log_multigamma(a):
            return sum(mpmath.loggamma(a + mpmath.mpf(1 - j) / 2) for j in range(1, dim + 1))

        digamma = sum(mpmath.digamma(nu / 2 + mpmath.mpf(1 - j) / 2) for j in range(1, dim + 1))
        kl_wishart = (-nu_new / 2 * mpmath.log(1 - c * q) - nu / 2 * c * q + log_multigamma(nu_new / 2)
                      - log_multigamma(nu / 2) + r / 2 * digamma)
        kl_mean = (dim * b_new / b - dim - dim * mpmath.log(b_new / b) + nu * r * r * q / b_new) / 2
        return float(kl_wishart + kl_mean)


def nw_kl_reference(q, resp, beta, dof, dim):
    """KL(q || q without the site) from the Wishart and Gaussian KL formulas, with scipy's multigammaln."""
    n, k = q.shape
    out = np.zeros(n)
    improper = np.zeros(n, dtype=bool)
    for i in range(n):
        for j in range(k):
            r = resp[i, j]
            if r == 0.0:
                continue
            b, nu = beta[j], dof[j]
            b_new, nu_new = b - r, nu - r
            c = b * r / b_new
            one_minus = 1.0 - c * q[i, j]
            if b_new <= 0 or nu_new <= dim - 1 or one_minus <= 0:
                improper[i] = True
                continue
            kl_wishart = (-0.5 * nu_new * math.log(one_minus) - 0.5 * nu * c * q[i, j]
                          + multigammaln(0.5 * nu_new, dim) - multigammaln(0.5 * nu, dim)
                          + 0.5 * r * multivariate_digamma(0.5 * nu, dim))
            kl_mean = 0.5 * (dim * b_new / b - dim - dim * math.log(b_new / b) + nu * r * r * q[i, j] / b_new)
            out[i] += kl_wishart + kl_mean
    return out, improper


def test_quadratic_forms_match_numpy():
    rng = np.random.default_rng(11)
    for dim in (1, 3, 10):
        X, _, means, scale, chol, *_ = random_problem(rng, 700, dim, 4)
        expected = reference_quadratic_forms(X, means, scale)
        np.testing.assert_allclose(mixture_kernels.quadratic_forms(X, means, chol), expected, rtol=RTOL)


def test_expected_loglik_matches_formula():
    rng = np.random.default_rng(12)
    dim = 4
    X, _, means, scale, chol, beta, dof, _ = random_problem(rng, 500, dim, 3)
    expected_logdet = rng.normal(size=3)
    q = reference_quadratic_forms(X, means, scale)
    expected = 0.5 * (expected_logdet - dim * math.log(2 * math.pi) - dim / beta - dof * q)
    fused = mixture_kernels.gaussian_expected_loglik(X, means, chol, beta, dof, expected_logdet)
    from_q = mixture_kernels.expected_loglik_from_quadratic_forms(q, beta, dof, expected_logdet, float(dim))
    np.testing.assert_allclose(fused, expected, rtol=RTOL)
    np.testing.assert_allclose(from_q, expected, rtol=RTOL)


def test_normalize_log_resp_matches_scipy():
    rng = np.random.default_rng(13)
    logits = rng.normal(scale=30.0, size=(400, 6))
    resp, log_norm = mixture_kernels.normalize_log_resp(logits)
    expected_norm = logsumexp(logits, axis=1)
    np.testing.assert_allclose(log_norm, expected_norm, rtol=RTOL)
    # Responsibilities near 1 are compared absolutely: exp of a value near 0.
    np.testing.assert_allclose(resp, np.exp(logits - expected_norm[:, None]), rtol=RTOL, atol=1e-15)


def test_weighted_stats_match_einsum():
    rng = np.random.default_rng(14)
    # More rows than one chunk so that the chunk reduction is exercised.
    X, resp, *_ = random_problem(rng, 2 * mixture_kernels.CHUNK_ROWS + 123, 5, 3)
    counts, sums, outer = mixture_kernels.weighted_gaussian_stats(X, resp)
    np.testing.assert_allclose(counts, resp.sum(axis=0), rtol=RTOL)
    np.testing.assert_allclose(sums, resp.T @ X, rtol=RTOL)
    np.testing.assert_allclose(outer, np.einsum("nk,na,nb->kab", resp, X, X), rtol=RTOL)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 12))
def test_multi_lgamma_downdate_matches_multigammaln(seed, dim):
    rng = np.random.default_rng(seed)
    # a - h ranges from just above (D - 1) / 2 (the direct branch) to large values (the recursion).
    a = 0.5 * (dim - 1) + 0.5 + rng.choice([rng.uniform(0.0, 2.0), rng.uniform(2.0, 50.0), 1e4])
    h = rng.uniform(0.0, 0.5)
    expected = multigammaln(a - h, dim) - multigammaln(a, dim)
    value = loo_kernels._multi_lgamma_downdate(a, h, dim, gammaln(a), gammaln(a - 0.5))
    # Both sides cancel terms of size up to D |ln Gamma(a)|; relative to that scale they agree
    # to about 1e-14, and absolute differences of 1e-12 cover a = 1e4 with D = 12.
    scale = max(1.0, dim * abs(gammaln(a)))
    assert abs(value - expected) <= 1e-13 * scale


@pytest.mark.parametrize("dim", [1, 2, 5, 7])
def test_lgamma_half_shift_matches_gammaln(dim):
    for x in (0.3, 1.7, 12.5, 4e5):
        expected = gammaln(x + 0.5 * dim) - gammaln(x)
        value = loo_kernels._lgamma_half_shift(x, dim)
        # The product form and scipy's two lgammas agree to rounding of the larger lgamma.
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12 * abs(gammaln(x + 0.5 * dim)))


@pytest.mark.parametrize("dim", [1, 2, 3, 6])
def test_normal_wishart_kl_matches_reference(dim):
    rng = np.random.default_rng(20 + dim)
    X, resp, means, scale, chol, beta, dof, _ = random_problem(rng, 300, dim, 3)
    q = reference_quadratic_forms(X, means, scale)
    expected, expected_improper = nw_kl_reference(q, resp, beta, dof, dim)
    improper = np.zeros(len(q), dtype=bool)
    value = loo_kernels.normal_wishart_downdate_kl(
        q, resp, beta, dof, *digamma_and_derivatives(dof, dim), float(dim), improper)
    np.testing.assert_array_equal(improper, expected_improper)
    # The KL is a sum of terms of size ~ |ln Gamma_D(nu / 2)| that cancel, so
    # the error is relative to that size, not to the (small) KL.
    atol = 1e-13 * dim * np.abs(gammaln(0.5 * dof)).max()
    np.testing.assert_allclose(value, expected, rtol=1e-9, atol=atol)


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(1, 6), beta=st.floats(2.0, 1e4), extra_dof=st.floats(0.5, 1e4), q=st.floats(0.0, 200.0),
       log_weight=st.floats(-9.0, -4.0))
def test_normal_wishart_kl_series_accuracy(dim, beta, extra_dof, q, log_weight):
    # Below SERIES_WEIGHT the kernel takes the Taylor series in r. The
    # reference is the closed form with 50 digits, because float64 loses
    # such small terms (about 1e-16 of ln Gamma_D(nu / 2) or less) to rounding.
    dof = dim - 1.0 + extra_dof
    r = 10.0 ** log_weight / (1.0 + q)
    improper = np.zeros(1, dtype=bool)
    value = loo_kernels.normal_wishart_downdate_kl(
        np.array([[q]]), np.array([[r]]), np.array([beta]), np.array([dof]),
        *digamma_and_derivatives(np.array([dof]), dim), float(dim), improper)[0]
    expected = nw_kl_closed_form_50_digits(r, q, beta, dof, dim)
    assert not improper[0]
    # The series' relative error is about (r (1 + q))^2 / 2, at most 5e-9 at
    # the cut-off 1e-4 (measured up to 0.5 (r (1 + q))^2 in 50-digit checks).
    assert value == pytest.approx(expected, rel=1e-8)


@settings(max_examples=80, deadline=None)
@given(dim=st.integers(1, 6), beta=st.floats(2.0, 1e4), extra_dof=st.floats(0.5, 1e6),
       log_weight=st.floats(-3.5, 0.0), shrink=st.floats(0.0, 0.9))
# Just inside the lgamma step's series (r / 2 = 0.45 against 1e-3 (nu - D + 1) / 2
# = 0.5), where the KL is large enough that a wrong term would show.
@example(dim=3, beta=50.0, extra_dof=1000.0, log_weight=float(np.log10(0.9)), shrink=0.3)
@example(dim=1, beta=20.0, extra_dof=1000.0, log_weight=float(np.log10(0.9)), shrink=0.0)
def test_normal_wishart_kl_closed_form_accuracy(dim, beta, extra_dof, log_weight, shrink):
    # Weights r (1 + q) above SERIES_WEIGHT take the closed form, whose
    # multivariate lgamma step comes from its own series where r / 2 is below
    # LGAMMA_SERIES_RATIO (nu - D + 1) / 2 (large extra_dof) and from lgamma
    # otherwise. The reference is the closed form with 50 digits.
    dof = dim - 1.0 + extra_dof
    r = min(10.0 ** log_weight, 0.5 * extra_dof)  # nu - r > D - 1 keeps the divided Wishart proper
    c = beta * r / (beta - r)
    q = shrink / c  # c q = shrink < 1 keeps the divided scale positive definite
    improper = np.zeros(1, dtype=bool)
    value = loo_kernels.normal_wishart_downdate_kl(
        np.array([[q]]), np.array([[r]]), np.array([beta]), np.array([dof]),
        *digamma_and_derivatives(np.array([dof]), dim), float(dim), improper)[0]
    expected = nw_kl_closed_form_50_digits(r, q, beta, dof, dim)
    assert not improper[0]
    # The closed form adds terms of size up to about nu (1 + c q) and
    # |ln Gamma_D(nu / 2)| that cancel; float64 keeps about 1e-16 of them.
    scale = dof * (1.0 + shrink) + dim * abs(gammaln(0.5 * dof)) + dim
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-14 * scale)


def test_normal_wishart_kl_flags_improper_sites():
    rng = np.random.default_rng(30)
    X, resp, means, scale, chol, beta, dof, _ = random_problem(rng, 50, 2, 2)
    beta = beta.copy()
    beta[0] = resp[:, 0].max() * 0.999  # removing the heaviest site leaves beta' < 0
    q = reference_quadratic_forms(X, means, scale)
    improper = np.zeros(50, dtype=bool)
    value = loo_kernels.normal_wishart_downdate_kl(
        q, resp, beta, dof, *digamma_and_derivatives(dof, 2), 2.0, improper)
    heaviest = int(np.argmax(resp[:, 0]))
    assert improper[heaviest]
    assert np.all(np.isfinite(value))


def test_dirichlet_kl_matches_scipy():
    rng = np.random.default_rng(31)
    _, resp, *_, alpha = random_problem(rng, 200, 2, 4)
    expected_log = psi(alpha) - psi(alpha.sum())
    improper = np.zeros(200, dtype=bool)
    value = loo_kernels.dirichlet_downdate_kl(alpha, resp, *Dirichlet(alpha).polygammas(), improper)
    new = alpha - resp
    expected = (gammaln(alpha.sum()) - gammaln(new.sum(axis=1)) - gammaln(alpha).sum()
                + gammaln(new).sum(axis=1) + resp @ expected_log)
    assert not improper.any()
    # Cancellation of lgamma(sum alpha) ~ N ln N terms sets the absolute scale.
    np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-13 * gammaln(alpha.sum()))


def dirichlet_kl_closed_form_50_digits(alpha, r):
    """Evaluate KL(Dir(alpha) || Dir(alpha - r)) with 50 significant digits."""
    with mpmath.workdps(50):
        alpha = [mpmath.mpf(float(a)) for a in alpha]
        r = [mpmath.mpf(float(v)) for v in r]
        total, removed = sum(alpha), sum(r)
        value = mpmath.loggamma(total) - mpmath.loggamma(total - removed)
        for a, v in zip(alpha, r):
            value += mpmath.loggamma(a - v) - mpmath.loggamma(a) + v * (mpmath.digamma(a) - mpmath.digamma(total))
        return float(value)


@settings(max_examples=80, deadline=None)
@given(alpha=st.lists(st.floats(1e-3, 1e6), min_size=2, max_size=5),
       log_weights=st.lists(st.floats(-9.5, 0.0), min_size=2, max_size=5))
def test_dirichlet_kl_series_accuracy(alpha, log_weights):
    # Weights below LGAMMA_SERIES_RATIO alpha take the Taylor series of their
    # component's term and others the closed form, and so does the total.
    # The reference is the closed form with 50 digits.
    size = min(len(alpha), len(log_weights))
    alpha = np.array(alpha[:size])
    r = np.minimum(10.0 ** np.array(log_weights[:size]), 0.5 * alpha)
    improper = np.zeros(1, dtype=bool)
    value = loo_kernels.dirichlet_downdate_kl(alpha, r[None, :], *Dirichlet(alpha).polygammas(), improper)[0]
    expected = dirichlet_kl_closed_form_50_digits(alpha, r)
    assert not improper[0]
    # A closed-form lgamma difference in float64 carries an absolute rounding
    # error of about 1e-16 |ln Gamma(a)|, and the series a relative error
    # below 1e-12 (see LGAMMA_SERIES_RATIO). The tolerance covers both, with room.
    rounding = 1e-14 * (np.abs(gammaln(alpha)).sum() + abs(gammaln(alpha.sum())) + 1.0)
    assert value == pytest.approx(expected, rel=1e-10, abs=rounding)


def test_dirichlet_kl_large_concentrations():
    # Large concentrations: each term is about r^2 / (2 alpha), far below the
    # rounding of ln Gamma(alpha) differences, and the series keeps it.
    alpha = np.array([2.0e4, 3.0e4, 5.0e4])
    r = np.array([0.7, 0.2999, 1e-4])
    improper = np.zeros(1, dtype=bool)
    value = loo_kernels.dirichlet_downdate_kl(alpha, r[None, :], *Dirichlet(alpha).polygammas(), improper)[0]
    # Relative error of the fifth-order series at r / alpha <= 3.5e-5, with room.
    assert value == pytest.approx(dirichlet_kl_closed_form_50_digits(alpha, r), rel=1e-12)


@pytest.mark.parametrize("dim, tiny", [(1, False), (2, False), (4, False), (3, True)])
def test_loo_log_predictive_matches_student_t(dim, tiny):
    rng = np.random.default_rng(40 + dim)
    k = 3
    X, resp, means, scale, chol, beta, dof, alpha = random_problem(rng, 40, dim, k)
    if tiny:
        # Responsibilities of 1e-20 take the kernel's undivided-term path.
        resp[::2, 0] = 1e-20
        resp /= resp.sum(axis=1, keepdims=True)
    q = reference_quadratic_forms(X, means, scale)
    improper = np.zeros(40, dtype=bool)
    loo_kernels.normal_wishart_downdate_kl(q, resp, beta, dof, *digamma_and_derivatives(dof, dim), float(dim),
                                           improper)
    assert improper.sum() < 10
    logdet_scale = np.linalg.slogdet(scale)[1]
    value = loo_kernels.mixture_loo_log_predictive(q, resp, beta, dof, logdet_scale, alpha, float(dim), improper)
    assert np.all(value[improper] == 0.0)
    for i in np.flatnonzero(~improper):
        # The divided posterior built explicitly, then scipy's multivariate t.
        x, r = X[i], resp[i]
        densities = []
        for j in range(k):
            b_new, nu_new = beta[j] - r[j], dof[j] - r[j]
            m_new = (beta[j] * means[j] - r[j] * x) / b_new
            u = x - means[j]
            c = beta[j] * r[j] / b_new
            scale_new = np.linalg.inv(np.linalg.inv(scale[j]) - c * np.outer(u, u))
            t_dof = nu_new + 1 - dim
            precision = t_dof * b_new / (1 + b_new) * scale_new
            log_t = multivariate_t(m_new, np.linalg.inv(precision), df=t_dof).logpdf(x)
            densities.append(math.log((alpha[j] - r[j]) / (alpha - r).sum()) + log_t)
        # Explicit inverses lose about cond(W') ulps; 1e-9 covers the conditioning here.
        assert value[i] == pytest.approx(logsumexp(densities), rel=1e-9, abs=1e-9)


def test_mean_shift_norm_matches_numpy():
    rng = np.random.default_rng(50)
    X, resp, means, scale, chol, beta, dof, _ = random_problem(rng, 500, 3, 4)
    q = reference_quadratic_forms(X, means, scale)
    ratio = resp / (beta - resp)
    expected = np.sqrt(dof * ratio**2 * q).max(axis=1)
    np.testing.assert_allclose(loo_kernels.mean_shift_norm(q, resp, beta, dof), expected, rtol=RTOL)


def test_mean_shift_norm_propagates_nan():
    q = np.array([[1.0, np.nan], [1.0, 2.0]])
    resp = np.array([[0.5, 0.5], [0.5, 0.5]])
    value = loo_kernels.mean_shift_norm(q, resp, np.array([5.0, 5.0]), np.array([3.0, 3.0]))
    assert np.isnan(value[0])
    assert np.isfinite(value[1])


# Thread-count independence: every parallel kernel splits rows into blocks
# of fixed size and reduces block results in block order, so its output
# should not change with the number of threads.

def _all_kernel_outputs(rng):
    n, dim, k = 3 * mixture_kernels.CHUNK_ROWS + 77, 6, 5
    X, resp, means, scale, chol, beta, dof, alpha = random_problem(rng, n, dim, k)
    q = mixture_kernels.quadratic_forms(X, means, chol)
    logdet = np.linalg.slogdet(scale)[1]
    digamma = multivariate_digamma(0.5 * dof, dim)
    improper = np.zeros(n, dtype=bool)
    outputs = {
        "quadratic_forms": q,
        "expected_loglik": mixture_kernels.gaussian_expected_loglik(X, means, chol, beta, dof, logdet),
        "normalize_log_resp": mixture_kernels.normalize_log_resp(np.log(resp))[0],
        "nw_kl": loo_kernels.normal_wishart_downdate_kl(q, resp, beta, dof, *digamma_and_derivatives(dof, dim),
                                                 float(dim), improper),
        "dirichlet_kl": loo_kernels.dirichlet_downdate_kl(alpha, resp, *Dirichlet(alpha).polygammas(), improper),
        "log_predictive": loo_kernels.mixture_loo_log_predictive(q, resp, beta, dof, logdet, alpha, float(dim),
                                                                 improper),
        "mean_shift_norm": loo_kernels.mean_shift_norm(q, resp, beta, dof),
    }
    for name, value in zip(("counts", "sums", "outer"), mixture_kernels.weighted_gaussian_stats(X, resp)):
        outputs[name] = value
    return outputs


def test_kernels_agree_across_thread_counts():
    available = numba.config.NUMBA_NUM_THREADS
    previous = numba.get_num_threads()
    results = {}
    try:
        for threads in sorted({1, 2, available} & set(range(1, available + 1))):
            numba.set_num_threads(threads)
            results[threads] = _all_kernel_outputs(np.random.default_rng(60))
    finally:
        numba.set_num_threads(previous)
    reference = results[1]
    for threads, outputs in results.items():
        for name, value in outputs.items():
            # Required to 1e-12 relative; the fixed block order makes them equal in practice.
            np.testing.assert_allclose(value, reference[name], rtol=1e-12, atol=0,
                                       err_msg=f"{name} with {threads} threads")


def test_n_jobs_gives_same_fit_and_restores_threads():
    from fg_influence.models import GaussianMixture

    from .helpers import fit_quietly

    X = np.random.default_rng(70).normal(size=(3000, 2))
    previous = numba.get_num_threads()
    # Both fits stop after the same 50 iterations, converged or not: the check
    # is that thread counts do not change the numbers, so the warning is noise.
    one = fit_quietly(GaussianMixture(3, random_state=0, max_iter=50, n_jobs=1), X)
    assert numba.get_num_threads() == previous
    every = fit_quietly(GaussianMixture(3, random_state=0, max_iter=50, n_jobs=None), X)
    # Thread-count independent kernels: the fits are equal to 1e-12 relative.
    np.testing.assert_allclose(one.means_, every.means_, rtol=1e-12)
    np.testing.assert_allclose(one.influence().kl, every.influence().kl, rtol=1e-12)


@pytest.mark.parametrize("value, error, message", [
    (0, ValueError, "n_jobs must be between 1 and NUMBA_NUM_THREADS"),
    (10_000, ValueError, "n_jobs must be between 1 and NUMBA_NUM_THREADS"),
    (1.5, TypeError, "n_jobs must be None or an integer"),
    (True, TypeError, "n_jobs must be None or an integer"),
])
def test_n_jobs_rejects_bad_values(value, error, message):
    from fg_influence.models import GaussianMixture

    X = np.random.default_rng(71).normal(size=(50, 2))
    with pytest.raises(error, match=message):
        GaussianMixture(2, n_jobs=value).fit(X)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), k=st.integers(1, 8),
       n_parts=st.integers(1, 3), spread=st.floats(0.05, 5.0))
def test_pair_activity_matches_brute_force(seed, n, k, n_parts, spread):
    from fg_influence.kernels import linear_response as lr_kernels

    rng = np.random.default_rng(seed)
    # Small Dirichlet concentrations give rows whose products fall on both sides of tol.
    resp = rng.dirichlet(np.full(k, spread), size=n)
    tol = 1e-4
    together, ambiguous = lr_kernels.pair_activity(resp, tol, n_parts)
    products = resp[:, :, None] * resp[:, None, :]
    above = np.triu(np.ones((k, k), dtype=bool), 1)[None] & (products > tol)
    assert np.array_equal(together.any(axis=0), above.any(axis=0))
    assert np.array_equal(ambiguous, above.any(axis=(1, 2)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150), k=st.integers(1, 6),
       n_parts=st.integers(1, 3), block=st.integers(4, 64), spread=st.floats(0.05, 5.0))
def test_pair_moment_sums_match_brute_force(seed, n, k, n_parts, block, spread):
    from fg_influence.influence.linear_response import _moment_table
    from fg_influence.kernels import linear_response as lr_kernels

    rng = np.random.default_rng(seed)
    resp = rng.dirichlet(np.full(k, spread), size=n)
    base = rng.normal(size=(n, 2))
    # Features 1, x_0, x_1 and x_0 x_1: their pairwise products are monomials of degree up to 4.
    table = _moment_table(((), (0,), (1,), (0, 1)))
    tol = 1e-4
    upper = np.triu_indices(k, 1)
    pair_of = np.full((k, k), -1, dtype=np.int64)
    pair_of[upper] = np.arange(upper[0].size)
    rows = rng.permutation(n)
    sums, together, ambiguous = lr_kernels.pair_moment_sums(
        base, resp, rows, tol, pair_of, upper[0].size, table.runs, table.n_moments, n_parts, block)
    products = table.products(base)
    weights = resp[:, upper[0]] * resp[:, upper[1]]
    weights = np.where(weights > tol, weights, 0.0)
    # Sums of a few hundred terms of size up to 1e2, in another order: 1e-12 relative covers the rounding.
    np.testing.assert_allclose(sums.sum(axis=0), weights.T @ products, rtol=1e-12, atol=1e-12)
    entered = weights > 0.0
    expected_together = np.zeros((k, k), dtype=bool)
    expected_together[upper] = entered.any(axis=0)
    assert np.array_equal(together.any(axis=0), expected_together)
    assert np.array_equal(ambiguous, entered[rows].any(axis=1))
