"""Property tests for the Beta and Normal-Gamma families.

The same properties as for the other families: natural-parameter round trip,
grad A = E[T] by finite differences, KL(p, p) = 0, KL >= 0 with the
symmetrised identity, and entropy, density, mean and mode against
scipy.stats. Hypothesis draws the dimension, batch shape and a seed for
numpy.random.default_rng; concentrations, shapes and rates range over
[0.05, 50], precision matrices A A^T + eps I have eps in [1e-3, 1] times a
factor in [1e-2, 1e2].
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fg_influence.families import Beta, NormalGamma

EPS = np.finfo(float).eps
seeds = st.integers(0, 2**32 - 1)
batch_shapes = st.sampled_from([(), (3,)])


def log_uniform(rng, low, high, shape):
    return np.exp(rng.uniform(np.log(low), np.log(high), shape))


def build_beta(rng, dim, batch_shape):
    return Beta(log_uniform(rng, 0.05, 50.0, batch_shape), log_uniform(rng, 0.05, 50.0, batch_shape))


def build_normal_gamma(rng, dim, batch_shape):
    factor = rng.standard_normal(batch_shape + (dim, dim))
    ridge = log_uniform(rng, 1e-3, 1.0, batch_shape + (1, 1))
    overall = log_uniform(rng, 1e-2, 1e2, batch_shape + (1, 1))
    precision = overall * (factor @ np.swapaxes(factor, -1, -2) + ridge * np.eye(dim))
    return NormalGamma(rng.normal(0.0, 3.0, batch_shape + (dim,)), precision,
                       log_uniform(rng, 0.05, 50.0, batch_shape), log_uniform(rng, 1e-2, 1e2, batch_shape))


FAMILIES = {
    "beta": (build_beta, st.just(1)),
    "normal_gamma": (build_normal_gamma, st.integers(1, 3)),
}


def draw(data, family, count):
    build, dims = FAMILIES[family]
    dim = data.draw(dims, label="dim")
    batch_shape = data.draw(batch_shapes, label="batch_shape")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    return [build(rng, dim, batch_shape) for _ in range(count)], rng


def standard_params(dist):
    if isinstance(dist, Beta):
        return (dist.a, dist.b)
    return (dist.mean, dist.precision, dist.shape, dist.rate)


def condition_number(dist):
    """Relative error amplification of the conversions: the precision's condition
    number times (1 + mean^T precision mean / rate), because rate is recovered as a
    difference of terms of that relative size."""
    if isinstance(dist, Beta):
        return 1.0
    quad = np.einsum("...i,...ij,...j->...", dist.mean, dist.precision, dist.mean)
    return (np.linalg.cond(dist.precision) * (1.0 + quad / dist.rate)).max()


def pair_magnitude(dist, left, right):
    return dist.pair(tuple(np.abs(a) for a in left), tuple(np.abs(b) for b in right))


def kl_rounding_size(p, q):
    natural_size = tuple(np.abs(a) + np.abs(b) for a, b in zip(p.natural_params(), q.natural_params()))
    stats_size = tuple(np.abs(a) + np.abs(b) for a, b in zip(p.expected_stats(), q.expected_stats()))
    return np.abs(p.log_partition()) + np.abs(q.log_partition()) + p.pair(natural_size, stats_size)


def random_direction(dist, rng):
    """A natural-parameter direction that moves each parameter by a relative amount of order 1."""
    if isinstance(dist, Beta):
        return (dist.a * rng.standard_normal(dist.a.shape), dist.b * rng.standard_normal(dist.b.shape))
    chol = np.linalg.cholesky(dist.precision)
    noise = rng.standard_normal(dist.precision.shape)
    symmetric = chol @ (0.5 * (noise + np.swapaxes(noise, -1, -2))) @ np.swapaxes(chol, -1, -2)
    quad = np.einsum("...i,...ij,...j->...", dist.mean, dist.precision, dist.mean)
    # eta1 and eta2 also move rate through mean^T precision mean, so shrink them by its size.
    shrink = 1.0 / (1.0 + quad / dist.rate)
    weighted_mean = np.einsum("...ij,...j->...i", chol, rng.standard_normal(dist.mean.shape))
    return (
        0.1 * (shrink * np.sqrt(dist.rate))[..., None] * weighted_mean,
        0.1 * shrink[..., None, None] * symmetric,
        dist.rate * rng.standard_normal(dist.rate.shape),
        dist.shape * rng.standard_normal(dist.shape.shape),
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_from_natural_round_trip(family, data):
    (dist,), _ = draw(data, family, 1)

    rebuilt = type(dist).from_natural(*dist.natural_params())

    # A few roundings plus one inversion of the precision each way, which loses
    # up to cond * eps; 1000 covers the constants of those bounds.
    tolerance = 1000 * EPS * condition_number(dist)
    for original, restored in zip(standard_params(dist), standard_params(rebuilt)):
        np.testing.assert_allclose(restored, original, rtol=tolerance, atol=tolerance * np.abs(original).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_log_partition_gradient_is_expected_stats(family, data):
    (dist,), rng = draw(data, family, 1)
    natural = dist.natural_params()
    direction = random_direction(dist, rng)
    step = 1e-5

    def log_partition(sign):
        return type(dist).from_natural(*(eta + sign * step * v for eta, v in zip(natural, direction))).log_partition()

    finite_difference = (log_partition(1) - log_partition(-1)) / (2 * step)
    derivative = dist.pair(direction, dist.expected_stats())

    # Truncation error step^2 A''' / 6 is about 1e-10 of the gradient terms;
    # rounding of A (eps * cond * (|A| + size)) is divided by the step.
    size = pair_magnitude(dist, direction, dist.expected_stats())
    rounding = 1000 * EPS * condition_number(dist) * (size + np.abs(dist.log_partition())) / step
    tolerance = 1e-6 * size + rounding + 1e-12
    assert np.all(np.abs(finite_difference - derivative) <= tolerance)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_kl_zero_for_identical_distributions(family, data):
    (dist,), _ = draw(data, family, 1)

    same = type(dist)(*standard_params(dist))

    np.testing.assert_array_equal(dist.kl(same), 0.0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_kl_nonnegative_and_symmetrised(family, data):
    (p, q), _ = draw(data, family, 2)

    kl_pq = p.kl(q)
    kl_qp = q.kl(p)
    natural_diff = tuple(a - b for a, b in zip(p.natural_params(), q.natural_params()))
    stats_diff = tuple(a - b for a, b in zip(p.expected_stats(), q.expected_stats()))

    assert np.all(kl_pq >= 0)
    assert np.all(kl_qp >= 0)
    # KL(p||q) + KL(q||p) = <eta_p - eta_q, E_p[T] - E_q[T]> uses no
    # log-partition, so it catches an A that does not match E[T]. Both sides
    # sum terms of size kl_rounding_size and agree to a few eps of it.
    tolerance = 1e-12 * kl_rounding_size(p, q)
    assert np.all(np.abs(kl_pq + kl_qp - p.pair(natural_diff, stats_diff)) <= tolerance)


def scipy_reference(dist, index):
    """(entropy, KL to itself shifted, log density at a point) from scipy.stats for one batch element."""
    if isinstance(dist, Beta):
        return stats.beta(dist.a[index], dist.b[index]).entropy()
    # NG entropy by the chain rule: H[tau] + E_tau[H[N(mean, (tau precision)^-1)]],
    # and the Gaussian entropy at tau is its entropy at tau = 1 minus D E[ln tau] / 2.
    gamma = stats.gamma(dist.shape[index], scale=1.0 / dist.rate[index])
    gaussian = stats.multivariate_normal(dist.mean[index], np.linalg.inv(dist.precision[index]))
    return gamma.entropy() + gaussian.entropy() - 0.5 * dist.dim * dist.expected_log_precision()[index]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_entropy_matches_scipy(family, data):
    (dist,), _ = draw(data, family, 1)

    entropy = dist.entropy()

    # A difference of terms of size |A| + <|eta|, |E[T]|>, exact to a few eps of it.
    size = np.abs(dist.log_partition()) + pair_magnitude(dist, dist.natural_params(), dist.expected_stats())
    tolerance = 1e-12 * (size + 1) * condition_number(dist)
    for index in np.ndindex(*dist.batch_shape):
        assert abs(entropy[index] - scipy_reference(dist, index)) <= tolerance[index]


@settings(max_examples=200)
@given(data=st.data())
def test_normal_gamma_logpdf_matches_scipy(data):
    (dist,), rng = draw(data, "normal_gamma", 1)
    tau = np.asarray(rng.gamma(dist.shape, 1.0 / dist.rate))
    w = dist.mean + rng.normal(size=dist.mean.shape)

    ours = dist.logpdf(w, tau)

    for index in np.ndindex(*dist.batch_shape):
        expected = (
            stats.gamma(dist.shape[index], scale=1.0 / dist.rate[index]).logpdf(tau[index])
            + stats.multivariate_normal(dist.mean[index], np.linalg.inv(tau[index] * dist.precision[index])).logpdf(w[index])
        )
        # Terms of size up to |ln tau| * shape; 1e-9 relative covers cond * eps.
        assert ours[index] == pytest.approx(expected, rel=1e-8, abs=1e-8)


@settings(max_examples=200)
@given(data=st.data())
def test_beta_mean_and_mode_match_scipy(data):
    (dist,), _ = draw(data, "beta", 1)

    np.testing.assert_allclose(dist.mean(), stats.beta(dist.a, dist.b).mean(), rtol=1e-12)
    if np.all(dist.a > 1) and np.all(dist.b > 1):
        grid_best = dist.mode()
        # The mode maximises the density: nudging it either way lowers it.
        for delta in (-1e-6, 1e-6):
            assert np.all(stats.beta(dist.a, dist.b).logpdf(grid_best) >= stats.beta(dist.a, dist.b).logpdf(grid_best + delta))
    else:
        with pytest.raises(ValueError, match="Beta mode is defined only when a and b exceed 1"):
            dist.mode()


def test_normal_gamma_moments_match_monte_carlo():
    rng = np.random.default_rng(0)
    dist = NormalGamma([1.0, -2.0], [[2.0, 0.5], [0.5, 1.0]], 3.0, 2.0)
    tau = rng.gamma(3.0, 1.0 / 2.0, size=200_000)
    noise = rng.multivariate_normal(np.zeros(2), np.linalg.inv(dist.precision), size=tau.size)
    w = dist.mean + noise / np.sqrt(tau)[:, None]

    expected = dist.expected_stats()

    # 200,000 draws give Monte Carlo standard errors below 0.01 of these moments.
    np.testing.assert_allclose((tau[:, None] * w).mean(axis=0), expected[0], rtol=0.02)
    np.testing.assert_allclose((tau[:, None, None] * w[:, :, None] * w[:, None, :]).mean(axis=0), expected[1],
                               rtol=0.02, atol=0.02)
    np.testing.assert_allclose(np.log(tau).mean(), expected[3], rtol=0.02)
    np.testing.assert_allclose(np.cov(w.T), dist.coefficient_covariance(), rtol=0.05)
