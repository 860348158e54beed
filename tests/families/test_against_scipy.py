"""Compare the exponential families with scipy.stats, closed forms and Monte Carlo.

Reference values come from scipy.stats, from a closed form written out in the
test, or from a Monte Carlo average over draws from a seeded
numpy.random.Generator. A Monte Carlo check passes when the estimate lies
within 5 standard errors of the family's value. For a normally distributed
estimate that misses with probability 6e-7 per checked number, and the seeds
are fixed, so the outcome is the same on every run.
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

# Number of standard errors a Monte Carlo estimate may miss the exact value by.
MC_Z = 5.0


def random_spd(rng, batch_shape, dim, min_eigenvalue=1e-2):
    """Draw symmetric positive definite matrices A A^T + min_eigenvalue I."""
    factor = rng.standard_normal(tuple(batch_shape) + (dim, dim))
    return factor @ np.swapaxes(factor, -1, -2) + min_eigenvalue * np.eye(dim)


def assert_within_standard_errors(samples, exact, label):
    """Assert that the mean of ``samples`` over axis 0 is within MC_Z standard errors."""
    samples = np.asarray(samples, dtype=float)
    estimate = samples.mean(axis=0)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    miss = np.abs(estimate - exact)
    assert np.all(miss <= MC_Z * standard_error), (
        f"{label}: Monte Carlo estimate {estimate} misses the exact value {exact} by "
        f"{miss}, more than {MC_Z} standard errors {MC_Z * standard_error}"
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
    # Concentrations below 1 put mass near the faces. A coordinate that
    # rounds to 0 would make the log densities infinite, so skip such draws.
    draws = draws[np.all(draws > 0, axis=1)]
    draws = draws / draws.sum(axis=1, keepdims=True)

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
# Normal-Wishart against Monte Carlo
# ---------------------------------------------------------------------------

NW_MEAN = np.array([0.5, -1.0])
NW_BETA = 2.5
NW_SCALE = np.array([[0.8, 0.3], [0.3, 0.5]])
NW_DOF = 4.5

# scipy.stats.wishart.logpdf loops over draws in Python (about 25 us each with
# scipy 1.17), so the tests that score draws use fewer of them. With 20,000
# draws the standard error of the entropy and KL estimates is about 0.011.
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
    q_params = (np.array([0.0, -0.5]), 1.0, np.array([[1.2, -0.2], [-0.2, 0.6]]), 3.0)
    p = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    q = NormalWishart(*q_params)
    mu, precision = draw_normal_wishart(rng, NW_SCORED_DRAWS, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    log_p = normal_wishart_logpdf(mu, precision, NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)
    log_q = normal_wishart_logpdf(mu, precision, *q_params)

    assert_within_standard_errors(log_p - log_q, p.kl(q), "Normal-Wishart KL")


def test_normal_wishart_sample_moments():
    rng = np.random.default_rng(305)
    dim = NW_MEAN.shape[0]
    dist = NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, NW_DOF)

    mu, precision = dist.sample(200_000, rng)

    assert mu.shape == (200_000, dim)
    assert precision.shape == (200_000, dim, dim)
    assert_within_standard_errors(mu, NW_MEAN, "E[mu]")
    assert_within_standard_errors(precision, NW_DOF * NW_SCALE, "E[Lambda]")
    # Cov(mu) = E[(beta Lambda)^-1] = scale^-1 / (beta (dof - D - 1)).
    centred = mu - NW_MEAN
    outer = centred[:, :, None] * centred[:, None, :]
    expected_covariance = np.linalg.inv(NW_SCALE) / (NW_BETA * (NW_DOF - dim - 1))
    assert_within_standard_errors(outer, expected_covariance, "Cov(mu)")


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

    # BFGS stops where the gradient is about 1e-8, which places the optimum to about 1e-6.
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

    # The bounded search stops within xatol, but a flat top only fixes x to
    # about sqrt(eps) relative.
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

    mode_mean, mode_precision = dist.mode()
    np.testing.assert_allclose(mode_mean, result.x[:dim], atol=1e-6)
    np.testing.assert_allclose(mode_precision, factor @ factor.T, atol=1e-6)


def test_normal_wishart_mode_undefined_raises():
    with pytest.raises(ValueError, match=r"dof > D = 2"):
        NormalWishart(NW_MEAN, NW_BETA, NW_SCALE, 2.0).mode()
