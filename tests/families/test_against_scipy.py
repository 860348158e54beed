"""Compare the exponential families with scipy.stats, closed forms and Monte Carlo.

Reference values come from scipy.stats, from a closed form written out in the
test, or from a Monte Carlo average over draws from a seeded
numpy.random.Generator. A Monte Carlo check passes when the estimate lies
within 5 standard errors of the family's value. A normally distributed
estimate falls outside that range with probability 6e-7 per checked number.
The seeds are fixed, so every run gives the same outcome.

Comparisons with a closed form allow relative differences of 1e-12 to 1e-9.
Both sides evaluate the same formula in a different order, and an entropy or
KL is a difference of terms up to about 100 times larger than the result.
"""

import numpy as np
import pytest
from scipy import optimize, special, stats

from fg_influence.families import (
    Categorical,
    Dirichlet,
    Gamma,
    MultivariateNormal,
    NormalWishart,
    Wishart,
)

BATCH_SHAPES = [(3,), (2, 3)]

# Maximum distance, in standard errors, between a Monte Carlo estimate and the exact value.
MC_STANDARD_ERRORS = 5.0


def random_spd(rng, batch_shape, dim, min_eigenvalue=1e-2):
    """Draw symmetric positive definite matrices A A^T + min_eigenvalue I."""
    factor = rng.standard_normal(tuple(batch_shape) + (dim, dim))
    return factor @ np.swapaxes(factor, -1, -2) + min_eigenvalue * np.eye(dim)


def assert_within_standard_errors(samples, exact, label):
    """Assert that the mean of ``samples`` over axis 0 is close to ``exact``.

    Close means within MC_STANDARD_ERRORS standard errors, elementwise.
    """
    samples = np.asarray(samples, dtype=float)
    estimate = samples.mean(axis=0)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    miss = np.abs(estimate - exact)
    assert np.all(miss <= MC_STANDARD_ERRORS * standard_error), (
        f"{label}: Monte Carlo estimate {estimate} misses the exact value {exact} by "
        f"{miss}, more than {MC_STANDARD_ERRORS} standard errors {MC_STANDARD_ERRORS * standard_error}"
    )


def normal_wishart_logpdf(mu, precision, mean, beta, scale, dof):
    """Log density of NW(mu, Lambda) for draws of shape (N, D) and (N, D, D).

    The Wishart factor is scipy.stats.wishart.logpdf. The Gaussian factor
    N(mu | mean, (beta Lambda)^-1) equals N(z | 0, I) |L| with L L^T = beta Lambda
    and z = L^T (mu - mean), which lets one scipy call score every draw.
    """
    dim = mean.shape[-1]
    log_wishart = stats.wishart(df=dof, scale=scale).logpdf(np.moveaxis(precision, 0, -1))
    chol = np.linalg.cholesky(beta * precision)
    whitened = np.einsum("nji,nj->ni", chol, mu - mean)
    log_jacobian = np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
    log_normal = stats.multivariate_normal(np.zeros(dim)).logpdf(whitened) + log_jacobian
    return log_wishart + log_normal


def draw_normal_wishart(rng, size, mean, beta, scale, dof):
    """Draw (mu, Lambda) with scipy's Wishart and a covariance-Cholesky Gaussian."""
    dim = mean.shape[-1]
    precision = stats.wishart(df=dof, scale=scale).rvs(size=size, random_state=rng)
    precision = precision.reshape(size, dim, dim)
    covariance = np.linalg.inv(beta * precision)
    noise = rng.standard_normal((size, dim))
    mu = mean + np.einsum("nij,nj->ni", np.linalg.cholesky(covariance), noise)
    return mu, precision


# ---------------------------------------------------------------------------
# Entropy and mean of batched distributions against scipy.stats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_dirichlet_entropy_and_mean_batched(batch_shape):
    rng = np.random.default_rng(101)
    concentration = np.exp(rng.uniform(np.log(0.05), np.log(50.0), batch_shape + (4,)))
    dist = Dirichlet(concentration)

    entropy = dist.entropy()
    mean = dist.mean()
    assert entropy.shape == batch_shape
    assert mean.shape == batch_shape + (4,)
    for index in np.ndindex(*batch_shape):
        reference = stats.dirichlet(concentration[index])
        np.testing.assert_allclose(entropy[index], reference.entropy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(mean[index], reference.mean(), rtol=1e-12)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_gamma_entropy_and_mean_batched(batch_shape):
    rng = np.random.default_rng(102)
    shape = np.exp(rng.uniform(np.log(0.05), np.log(50.0), batch_shape))
    rate = np.exp(rng.uniform(np.log(0.01), np.log(100.0), batch_shape))
    dist = Gamma(shape, rate)

    entropy = dist.entropy()
    mean = dist.mean()
    assert entropy.shape == batch_shape
    for index in np.ndindex(*batch_shape):
        reference = stats.gamma(shape[index], scale=1.0 / rate[index])
        np.testing.assert_allclose(entropy[index], reference.entropy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(mean[index], reference.mean(), rtol=1e-12)


def test_gamma_broadcasts_scalar_rate():
    shape = np.array([0.5, 2.0, 7.5])
    dist = Gamma(shape, 3.0)

    expected = [stats.gamma(a, scale=1.0 / 3.0).entropy() for a in shape]
    np.testing.assert_allclose(dist.entropy(), expected, rtol=1e-10)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("dim", [1, 3])
def test_gaussian_entropy_mean_logpdf_batched(batch_shape, dim):
    rng = np.random.default_rng(103)
    mean = rng.normal(0.0, 3.0, batch_shape + (dim,))
    precision = random_spd(rng, batch_shape, dim)
    dist = MultivariateNormal(mean, precision)
    points = rng.normal(0.0, 3.0, (5,) + batch_shape + (dim,))

    entropy = dist.entropy()
    logpdf = dist.logpdf(points)
    assert entropy.shape == batch_shape
    assert logpdf.shape == (5,) + batch_shape
    for index in np.ndindex(*batch_shape):
        reference = stats.multivariate_normal(mean[index], np.linalg.inv(precision[index]))
        np.testing.assert_allclose(entropy[index], reference.entropy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dist.mean_value()[index], reference.mean, rtol=1e-12)
        np.testing.assert_allclose(dist.mode()[index], reference.mean, rtol=1e-12)
        expected_logpdf = reference.logpdf(points[(slice(None),) + index])
        np.testing.assert_allclose(logpdf[(slice(None),) + index], expected_logpdf, rtol=1e-9)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_wishart_entropy_and_mean_batched(batch_shape, dim):
    rng = np.random.default_rng(104)
    scale = random_spd(rng, batch_shape, dim)
    # From just above the D - 1 boundary to well inside the proper range.
    dof = dim - 1.0 + np.exp(rng.uniform(np.log(0.1), np.log(51.0), batch_shape))
    dist = Wishart(scale, dof)

    entropy = dist.entropy()
    mean = dist.mean()
    assert entropy.shape == batch_shape
    for index in np.ndindex(*batch_shape):
        reference = stats.wishart(df=dof[index], scale=scale[index])
        np.testing.assert_allclose(entropy[index], reference.entropy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(mean[index], reference.mean(), rtol=1e-12)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_categorical_entropy_and_mean_batched(batch_shape):
    rng = np.random.default_rng(105)
    probs = rng.dirichlet(np.full(4, 0.7), size=batch_shape)
    dist = Categorical(probs)

    entropy = dist.entropy()
    assert entropy.shape == batch_shape
    for index in np.ndindex(*batch_shape):
        np.testing.assert_allclose(entropy[index], stats.entropy(probs[index]), rtol=1e-12)
        # A one-trial multinomial is the categorical distribution as a one-hot vector.
        one_hot_mean = stats.multinomial(1, probs[index]).mean()
        np.testing.assert_allclose(dist.mean()[index], one_hot_mean, rtol=1e-12)


def test_categorical_entropy_with_zero_probability():
    probs = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    dist = Categorical(probs)

    np.testing.assert_allclose(dist.entropy(), [stats.entropy(row) for row in probs], atol=1e-15)


def test_categorical_kl_against_scipy():
    p = np.array([[0.2, 0.0, 0.8], [0.25, 0.25, 0.5]])
    q = np.array([[0.1, 0.3, 0.6], [0.7, 0.2, 0.1]])

    kl = Categorical(p).kl(Categorical(q))

    np.testing.assert_allclose(kl, [stats.entropy(p[i], q[i]) for i in range(2)], rtol=1e-12)


def test_categorical_kl_infinite_raises():
    p = Categorical([0.5, 0.5, 0.0])
    q = Categorical([1.0, 0.0, 0.0])

    with pytest.raises(ValueError, match="infinite"):
        p.kl(q)


def test_gaussian_sample_moments():
    rng = np.random.default_rng(106)
    mean = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    precision = random_spd(rng, (2,), 3, min_eigenvalue=0.5)
    dist = MultivariateNormal(mean, precision)

    draws = dist.sample(100_000, rng)

    assert draws.shape == (100_000, 2, 3)
    assert_within_standard_errors(draws, mean, "E[x]")
    centred = draws - mean
    outer = centred[..., :, None] * centred[..., None, :]
    assert_within_standard_errors(outer, np.linalg.inv(precision), "Cov(x)")


# ---------------------------------------------------------------------------
# Kullback-Leibler divergences
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_gaussian_kl_closed_form(dim):
    rng = np.random.default_rng(201)
    batch_shape = (4,)
    mean_p = rng.normal(0.0, 2.0, batch_shape + (dim,))
    mean_q = rng.normal(0.0, 2.0, batch_shape + (dim,))
    precision_p = random_spd(rng, batch_shape, dim)
    precision_q = random_spd(rng, batch_shape, dim)

    kl = MultivariateNormal(mean_p, precision_p).kl(MultivariateNormal(mean_q, precision_q))

    for i in range(batch_shape[0]):
        covariance_p = np.linalg.inv(precision_p[i])
        diff = mean_q[i] - mean_p[i]
        expected = 0.5 * (
            np.trace(precision_q[i] @ covariance_p)
            + diff @ precision_q[i] @ diff
            - dim
            + np.linalg.slogdet(precision_p[i])[1]
            - np.linalg.slogdet(precision_q[i])[1]
        )
        np.testing.assert_allclose(kl[i], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "alpha_p, alpha_q",
    [
        ([1.5, 2.0, 3.0], [2.0, 1.0, 4.0]),
        ([0.6, 0.8, 5.0, 2.0], [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_dirichlet_kl_monte_carlo(alpha_p, alpha_q):
    rng = np.random.default_rng(202)
    p, q = stats.dirichlet(alpha_p), stats.dirichlet(alpha_q)
    draws = p.rvs(size=200_000, random_state=rng)

    log_ratio = p.logpdf(draws.T) - q.logpdf(draws.T)
    kl = Dirichlet(alpha_p).kl(Dirichlet(alpha_q))

    assert_within_standard_errors(log_ratio, kl, "Dirichlet KL")


@pytest.mark.parametrize(
    "shape_p, rate_p, shape_q, rate_q",
    [(2.0, 1.5, 3.5, 0.7), (0.4, 3.0, 1.2, 1.0), (20.0, 10.0, 18.0, 8.0)],
)
def test_gamma_kl_monte_carlo(shape_p, rate_p, shape_q, rate_q):
    rng = np.random.default_rng(203)
    p = stats.gamma(shape_p, scale=1.0 / rate_p)
    q = stats.gamma(shape_q, scale=1.0 / rate_q)
    draws = p.rvs(size=200_000, random_state=rng)

    log_ratio = p.logpdf(draws) - q.logpdf(draws)
    kl = Gamma(shape_p, rate_p).kl(Gamma(shape_q, rate_q))

    assert_within_standard_errors(log_ratio, kl, "Gamma KL")


def test_kl_of_different_families_raises():
    with pytest.raises(TypeError, match="same family"):
        Gamma(1.0, 1.0).kl(Dirichlet([1.0, 2.0]))


# ---------------------------------------------------------------------------
# Normal-Wishart against Monte Carlo and closed forms
# ---------------------------------------------------------------------------

NW_MEAN = np.array([0.5, -1.0])
NW_BETA = 2.5
NW_SCALE = np.array([[0.8, 0.3], [0.3, 0.5]])
NW_DOF = 4.5
# Parameters (mean, beta, scale, dof) of a second Normal-Wishart for KL tests.
NW_OTHER = (np.array([0.0, -0.5]), 1.0, np.array([[1.2, -0.2], [-0.2, 0.6]]), 3.0)

# scipy.stats.wishart.logpdf loops over draws in Python (with scipy 1.17 it
# took about 5 s for 200,000 draws on a 2-core test machine), so the tests
# that score draws use fewer of them. With 20,000 draws the standard error of
# the entropy and KL estimates is about 0.011.
NW_SCORED_DRAWS = 20_000


def test_normal_wishart_expected_stats_monte_carlo():
    rng = np.random.default_rng(301)
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    mu, precision = draw_normal_wishart(rng, 200_000, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    precision_mu = np.einsum("nij,nj->ni", precision, mu)
    quadratic = np.einsum("ni,ni->n", mu, precision_mu)
    logdet = np.linalg.slogdet(precision)[1]
    weighted_mean, neg_half_quadratic, neg_half_precision, half_logdet = dist.expected_stats()

    assert_within_standard_errors(precision_mu, weighted_mean, "E[Lambda mu]")
    assert_within_standard_errors(-0.5 * quadratic, neg_half_quadratic, "E[-mu^T Lambda mu / 2]")
    assert_within_standard_errors(-0.5 * precision, neg_half_precision, "E[-Lambda / 2]")
    assert_within_standard_errors(0.5 * logdet, half_logdet, "E[ln|Lambda| / 2]")


def test_normal_wishart_expected_quadratic_monte_carlo():
    rng = np.random.default_rng(302)
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    mu, precision = draw_normal_wishart(rng, 200_000, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    x = np.array([1.0, 2.0])

    diff = x - mu
    quadratic = np.einsum("ni,nij,nj->n", diff, precision, diff)

    assert_within_standard_errors(quadratic, dist.expected_quadratic(x), "E[(x-mu)^T Lambda (x-mu)]")


def test_normal_wishart_entropy_monte_carlo():
    rng = np.random.default_rng(303)
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    mu, precision = draw_normal_wishart(rng, NW_SCORED_DRAWS, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    log_density = normal_wishart_logpdf(mu, precision, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    assert_within_standard_errors(-log_density, dist.entropy(), "Normal-Wishart entropy")


def test_normal_wishart_kl_monte_carlo():
    rng = np.random.default_rng(304)
    p = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    q = NormalWishart(*NW_OTHER)
    mu, precision = draw_normal_wishart(rng, NW_SCORED_DRAWS, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    log_p = normal_wishart_logpdf(mu, precision, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    log_q = normal_wishart_logpdf(mu, precision, *NW_OTHER)

    assert_within_standard_errors(log_p - log_q, p.kl(q), "Normal-Wishart KL")


def test_normal_wishart_sample_moments():
    rng = np.random.default_rng(305)
    dim = NW_MEAN.shape[0]
    # The standard error of the Cov(mu) estimate needs E[mu^4], which is
    # finite only for dof > D + 3, so this test uses a larger dof.
    dof = 12.0
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, dof)

    mu, precision = dist.sample(200_000, rng)

    assert mu.shape == (200_000, dim)
    assert precision.shape == (200_000, dim, dim)
    assert_within_standard_errors(mu, NW_MEAN, "E[mu]")
    assert_within_standard_errors(precision, dof * NW_SCALE, "E[Lambda]")
    # Cov(mu) = E[(beta Lambda)^-1] = scale^-1 / (beta (dof - D - 1)).
    centred = mu - NW_MEAN
    outer = centred[:, :, None] * centred[:, None, :]
    expected_covariance = np.linalg.inv(NW_SCALE) / (NW_BETA * (dof - dim - 1))
    assert_within_standard_errors(outer, expected_covariance, "Cov(mu)")


def multivariate_digamma(a, dim):
    """psi_D(a) = sum_{i=1..D} psi(a + (1 - i) / 2)."""
    return sum(special.digamma(a + (1 - i) / 2) for i in range(1, dim + 1))


def wishart_expected_logdet(scale, dof):
    """E[ln|Lambda|] = psi_D(dof / 2) + D ln 2 + ln|scale| for Lambda ~ W(scale, dof)."""
    dim = scale.shape[-1]
    return multivariate_digamma(dof / 2, dim) + dim * np.log(2.0) + np.linalg.slogdet(scale)[1]


def wishart_kl(scale_p, dof_p, scale_q, dof_q):
    """KL(W(scale_p, dof_p) || W(scale_q, dof_q)).

    This is E_p[ln p - ln q] written out from the Wishart log density, with
    E_p[Lambda] = dof_p scale_p and E_p[ln|Lambda|] from wishart_expected_logdet.
    """
    dim = scale_p.shape[-1]
    logdet_p = np.linalg.slogdet(scale_p)[1]
    logdet_q = np.linalg.slogdet(scale_q)[1]
    trace = np.trace(np.linalg.solve(scale_q, scale_p))
    return (
        0.5 * dof_q * (logdet_q - logdet_p)
        + 0.5 * dof_p * (trace - dim)
        + special.multigammaln(dof_q / 2, dim)
        - special.multigammaln(dof_p / 2, dim)
        + 0.5 * (dof_p - dof_q) * multivariate_digamma(dof_p / 2, dim)
    )


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_wishart_kl_closed_form(dim):
    rng = np.random.default_rng(306)
    batch_shape = (4,)
    scale_p = random_spd(rng, batch_shape, dim)
    scale_q = random_spd(rng, batch_shape, dim)
    dof_p = dim - 1.0 + rng.uniform(0.1, 20.0, batch_shape)
    dof_q = dim - 1.0 + rng.uniform(0.1, 20.0, batch_shape)

    kl = Wishart(scale_p, dof_p).kl(Wishart(scale_q, dof_q))

    for i in range(batch_shape[0]):
        expected = wishart_kl(scale_p[i], dof_p[i], scale_q[i], dof_q[i])
        np.testing.assert_allclose(kl[i], expected, rtol=1e-9)


def test_normal_wishart_entropy_closed_form():
    # H[NW] = H[Wishart] + E_Lambda[H[N(mean, (beta Lambda)^-1)]]
    #       = H[Wishart] + D/2 (1 + ln 2 pi) - D/2 ln beta - E[ln|Lambda|] / 2.
    dim = NW_MEAN.shape[0]
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    wishart_entropy = stats.wishart(df=NW_DOF, scale=NW_SCALE).entropy()
    expected = (
        wishart_entropy
        + 0.5 * dim * (1.0 + np.log(2 * np.pi))
        - 0.5 * dim * np.log(NW_BETA)
        - 0.5 * wishart_expected_logdet(NW_SCALE, NW_DOF)
    )

    np.testing.assert_allclose(dist.entropy(), expected, rtol=1e-12)


def test_normal_wishart_kl_closed_form():
    # KL(p || q) = KL(W_p || W_q) + E_{Lambda ~ W_p}[KL(N_p(mu | Lambda) || N_q(mu | Lambda))],
    # and the Gaussian term is (D beta_q / beta_p - D + D ln(beta_p / beta_q)
    # + beta_q dof_p (mean_q - mean_p)^T scale_p (mean_q - mean_p)) / 2.
    dim = NW_MEAN.shape[0]
    mean_q, beta_q, scale_q, dof_q = NW_OTHER
    p = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    q = NormalWishart(mean_q, beta_q, scale_q, dof_q)

    diff = mean_q - NW_MEAN
    gaussian_term = 0.5 * (
        dim * beta_q / NW_BETA
        - dim
        + dim * np.log(NW_BETA / beta_q)
        + beta_q * NW_DOF * diff @ NW_SCALE @ diff
    )
    expected = wishart_kl(NW_SCALE, NW_DOF, scale_q, dof_q) + gaussian_term

    np.testing.assert_allclose(p.kl(q), expected, rtol=1e-12)


def test_normal_wishart_mean_value():
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    mean_mu, mean_precision = dist.mean_value()

    np.testing.assert_allclose(mean_mu, NW_MEAN)
    np.testing.assert_allclose(mean_precision, stats.wishart(df=NW_DOF, scale=NW_SCALE).mean())


# ---------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------


def lower_triangular_from_vector(values, dim):
    """Fill a lower-triangular matrix with a positive (exponentiated) diagonal."""
    factor = np.zeros((dim, dim))
    factor[np.tril_indices(dim)] = values
    factor[np.diag_indices(dim)] = np.exp(np.diag(factor))
    return factor


def test_dirichlet_mode_maximises_density():
    alpha = np.array([1.5, 3.0, 7.2, 1.1])
    reference = stats.dirichlet(alpha)

    def negative_logpdf(logits):
        point = special.softmax(np.append(logits, 0.0))
        return -reference.logpdf(point)

    result = optimize.minimize(negative_logpdf, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    numerical_mode = special.softmax(np.append(result.x, 0.0))

    # BFGS with finite-difference gradients locates a maximum to about 1e-7
    # (8e-8 at most in the mode tests of this file), so 1e-6 leaves a margin.
    np.testing.assert_allclose(Dirichlet(alpha).mode(), numerical_mode, atol=1e-6)


def test_dirichlet_mode_undefined_raises():
    with pytest.raises(ValueError, match="every concentration exceeds 1"):
        Dirichlet([[2.0, 3.0], [0.5, 4.0]]).mode()


@pytest.mark.parametrize("shape, rate", [(3.7, 2.2), (1.5, 0.1), (40.0, 25.0)])
def test_gamma_mode_maximises_density(shape, rate):
    reference = stats.gamma(shape, scale=1.0 / rate)
    upper = reference.ppf(1 - 1e-9)

    result = optimize.minimize_scalar(
        lambda x: -reference.logpdf(x), bounds=(1e-12, upper), method="bounded",
        options={"xatol": 1e-10},
    )

    # The log density is flat to second order at its maximum, so rounding
    # limits the search to about sqrt(eps) = 1.5e-8 relative (3e-8 measured).
    np.testing.assert_allclose(Gamma(shape, rate).mode(), result.x, rtol=1e-6)


def test_gamma_mode_at_boundary_below_unit_shape():
    dist = Gamma(np.array([0.3, 1.0]), np.array([2.0, 5.0]))

    np.testing.assert_array_equal(dist.mode(), [0.0, 0.0])
    # For shape <= 1 the density decreases on (0, inf), so the supremum is at 0.
    grid = np.array([1e-6, 1e-3, 1e-1, 1.0])
    for shape, rate in [(0.3, 2.0), (1.0, 5.0)]:
        assert np.all(np.diff(stats.gamma(shape, scale=1.0 / rate).logpdf(grid)) < 0)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_wishart_mode_matches_scipy(batch_shape):
    rng = np.random.default_rng(401)
    dim = 3
    scale = random_spd(rng, batch_shape, dim)
    dof = rng.uniform(dim + 1, dim + 30, batch_shape)

    mode = Wishart(scale, dof).mode()

    for index in np.ndindex(*batch_shape):
        expected = stats.wishart(df=dof[index], scale=scale[index]).mode()
        np.testing.assert_allclose(mode[index], expected, rtol=1e-12)


def test_wishart_mode_maximises_density():
    dim = 2
    scale = np.array([[1.3, -0.4], [-0.4, 0.7]])
    dof = 6.5
    reference = stats.wishart(df=dof, scale=scale)

    def negative_logpdf(values):
        factor = lower_triangular_from_vector(values, dim)
        return -reference.logpdf(factor @ factor.T)

    result = optimize.minimize(negative_logpdf, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    factor = lower_triangular_from_vector(result.x, dim)

    # BFGS locates the maximum to about 1e-7, as in the Dirichlet mode test.
    np.testing.assert_allclose(Wishart(scale, dof).mode(), factor @ factor.T, atol=1e-6)


def test_wishart_mode_undefined_raises():
    with pytest.raises(ValueError, match=r"dof >= D \+ 1 = 4"):
        Wishart(np.eye(3), 3.5).mode()
    # scipy also has no mode in this range.
    assert stats.wishart(df=3.5, scale=np.eye(3)).mode() is None


def test_normal_wishart_mode_maximises_density():
    dim = 2
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    def negative_logpdf(values):
        mu = values[:dim]
        factor = lower_triangular_from_vector(values[dim:], dim)
        return -normal_wishart_logpdf(
            mu[None], (factor @ factor.T)[None], NW_MEAN, NW_BETA, NW_SCALE, NW_DOF
        )[0]

    result = optimize.minimize(negative_logpdf, np.zeros(5), method="BFGS", options={"gtol": 1e-10})
    factor = lower_triangular_from_vector(result.x[dim:], dim)

    # BFGS locates the maximum to about 1e-7, as in the Dirichlet mode test.
    mode_mean, mode_precision = dist.mode()
    np.testing.assert_allclose(mode_mean, result.x[:dim], atol=1e-6)
    np.testing.assert_allclose(mode_precision, factor @ factor.T, atol=1e-6)


def test_normal_wishart_mode_undefined_raises():
    with pytest.raises(ValueError, match=r"dof > D = 2"):
        NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, 2.0).mode()


def test_dirichlet_polygammas_match_mpmath():
    import mpmath

    alpha = np.array([0.3, 2.0, 150.0])
    per_component, total = Dirichlet(alpha).polygammas(order=3)
    assert per_component.shape == (4, 3)
    assert total.shape == (4,)
    for n in range(4):
        expected = [float(mpmath.polygamma(n, a)) for a in alpha]
        # scipy's polygamma against mpmath's: agreement to about 1e-14 relative.
        np.testing.assert_allclose(per_component[n], expected, rtol=1e-12)
        assert total[n] == pytest.approx(float(mpmath.polygamma(n, alpha.sum())), rel=1e-12)


@pytest.mark.parametrize("order, error, message", [
    (-1, ValueError, "order must be at least 0"),
    (1.5, TypeError, "order must be an integer"),
])
def test_dirichlet_polygammas_rejects_bad_order(order, error, message):
    with pytest.raises(error, match=message):
        Dirichlet([1.0, 2.0]).polygammas(order=order)


def test_dirichlet_polygammas_needs_one_dirichlet():
    with pytest.raises(ValueError, match="one Dirichlet"):
        Dirichlet(np.ones((2, 3))).polygammas()
