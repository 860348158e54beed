"""Property tests for the exponential families in fg_influence.families.

Hypothesis draws the family's dimension, a batch shape and a seed. The seed
feeds numpy.random.default_rng, which draws the parameters over wide but valid
ranges. Concentrations and Gamma shapes run from 0.05 to 50, and dof from
D - 1 + 0.1 to D + 50. SPD matrices are A A^T + eps I with eps from 1e-3 to 1,
which gives condition numbers up to about 1e4, times a factor from 1e-2 to 1e2.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from fg_influence.families import (
    Categorical,
    Dirichlet,
    ExponentialFamily,
    Gamma,
    MultivariateNormal,
    NormalWishart,
    Wishart,
)

EPS = np.finfo(float).eps

seeds = st.integers(0, 2**32 - 1)
batch_shapes = st.sampled_from([(), (3,)])


def log_uniform(rng, low, high, shape):
    return np.exp(rng.uniform(np.log(low), np.log(high), shape))


def random_spd(rng, batch_shape, dim):
    factor = rng.standard_normal(batch_shape + (dim, dim))
    ridge = log_uniform(rng, 1e-3, 1.0, batch_shape + (1, 1))
    overall = log_uniform(rng, 1e-2, 1e2, batch_shape + (1, 1))
    return overall * (factor @ np.swapaxes(factor, -1, -2) + ridge * np.eye(dim))


def random_dof(rng, batch_shape, dim):
    return dim - 1.0 + log_uniform(rng, 0.1, 51.0, batch_shape)


def random_symmetric(rng, batch_shape, dim):
    """Symmetric matrices whose entries have unit scale."""
    noise = rng.standard_normal(batch_shape + (dim, dim))
    return 0.5 * (noise + np.swapaxes(noise, -1, -2))


def build_dirichlet(rng, dim, batch_shape):
    return Dirichlet(log_uniform(rng, 0.05, 50.0, batch_shape + (dim,)))


def build_categorical(rng, dim, batch_shape):
    # Logits with standard deviation 3 give probabilities from about 1e-8 to 1.
    logits = rng.normal(0.0, 3.0, batch_shape + (dim,))
    return Categorical(special.softmax(logits, axis=-1))


def build_gamma(rng, dim, batch_shape):
    return Gamma(log_uniform(rng, 0.05, 50.0, batch_shape), log_uniform(rng, 1e-2, 1e2, batch_shape))


def build_gaussian(rng, dim, batch_shape):
    mean = rng.normal(0.0, 3.0, batch_shape + (dim,))
    return MultivariateNormal(mean, random_spd(rng, batch_shape, dim))


def build_wishart(rng, dim, batch_shape):
    return Wishart(random_spd(rng, batch_shape, dim), random_dof(rng, batch_shape, dim))


def build_normal_wishart(rng, dim, batch_shape):
    mean = rng.normal(0.0, 3.0, batch_shape + (dim,))
    beta = log_uniform(rng, 0.05, 50.0, batch_shape)
    return NormalWishart(mean, beta, random_spd(rng, batch_shape, dim), random_dof(rng, batch_shape, dim))


# Builder and dimension range of each family. Gamma is scalar, so its
# dimension is unused.
FAMILIES = {
    "dirichlet": (build_dirichlet, st.integers(1, 4)),
    "categorical": (build_categorical, st.integers(1, 4)),
    "gamma": (build_gamma, st.just(1)),
    "gaussian": (build_gaussian, st.integers(1, 3)),
    "wishart": (build_wishart, st.integers(1, 3)),
    "normal_wishart": (build_normal_wishart, st.integers(1, 3)),
}


def draw_distributions(data, family, count):
    """Draw ``count`` distributions of one family with a shared dimension and batch shape."""
    build, dims = FAMILIES[family]
    dim = data.draw(dims, label="dim")
    batch_shape = data.draw(batch_shapes, label="batch_shape")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    return [build(rng, dim, batch_shape) for _ in range(count)]


def standard_params(dist):
    """The constructor arguments of ``dist``, in constructor order."""
    if isinstance(dist, Dirichlet):
        return (dist.concentration,)
    if isinstance(dist, Categorical):
        return (dist.probs,)
    if isinstance(dist, Gamma):
        return (dist.shape, dist.rate)
    if isinstance(dist, MultivariateNormal):
        return (dist.mean, dist.precision)
    if isinstance(dist, Wishart):
        return (dist.scale, dist.dof)
    if isinstance(dist, NormalWishart):
        return (dist.mean, dist.beta, dist.scale, dist.dof)
    raise TypeError(f"no standard parameters known for {type(dist).__name__}")


def pair_magnitude(dist, left, right):
    """<|left|, |right|>, the size of the terms summed by dist.pair(left, right)."""
    return dist.pair(tuple(np.abs(a) for a in left), tuple(np.abs(b) for b in right))


def condition_number(dist):
    """Estimate the factor by which the natural-parameter conversions amplify rounding.

    This is the condition number of the matrix parameter, 1 for the vector
    families. Normal-Wishart recovers scale^-1 as (scale^-1 + beta m m^T) -
    beta m m^T, which cancels digits in proportion to beta m^T scale m, so
    that factor multiplies its condition number.
    """
    if isinstance(dist, MultivariateNormal):
        return np.linalg.cond(dist.precision).max()
    if isinstance(dist, Wishart):
        return np.linalg.cond(dist.scale).max()
    if isinstance(dist, NormalWishart):
        whitened_mean_sq = dist.beta * np.einsum("...i,...ij,...j->...", dist.mean, dist.scale, dist.mean)
        return (np.linalg.cond(dist.scale) * (1.0 + whitened_mean_sq)).max()
    return 1.0


def whitened_symmetric(rng, spd):
    """C R C^T for a random symmetric R with unit-scale entries and C C^T = spd.

    A step t C R C^T changes ``spd`` to C (I + t R) C^T, so it stays positive
    definite whenever |t| ||R|| < 1, however badly ``spd`` is conditioned.
    """
    chol = np.linalg.cholesky(spd)
    noise = random_symmetric(rng, spd.shape[:-2], spd.shape[-1])
    return chol @ noise @ np.swapaxes(chol, -1, -2)


def random_direction(dist, rng):
    """A direction in natural-parameter space scaled to the distribution.

    Each component moves its parameter by a relative amount of order 1 per
    unit step, so a step of 1e-5 keeps every parameter valid, and the
    derivatives of the log-partition along the direction stay of the order of
    the gradient. Matrix components are symmetric.
    """
    if isinstance(dist, (Dirichlet, Categorical)):
        eta = dist.natural_params()[0]
        scale = dist.concentration if isinstance(dist, Dirichlet) else 1.0
        return (scale * rng.standard_normal(eta.shape),)
    if isinstance(dist, Gamma):
        shape = dist.shape * rng.standard_normal(dist.shape.shape)
        rate = dist.rate * rng.standard_normal(dist.rate.shape)
        return (shape, rate)
    if isinstance(dist, MultivariateNormal):
        chol = np.linalg.cholesky(dist.precision)
        weighted_mean = np.einsum("...ij,...j->...i", chol, rng.standard_normal(dist.mean.shape))
        return (weighted_mean, whitened_symmetric(rng, dist.precision))
    if isinstance(dist, Wishart):
        scale_inverse = np.linalg.inv(dist.scale)
        # -2 eta2 + D + 1 = dof, and dof - (D - 1) is the distance to the boundary.
        dof_step = 0.5 * (dist.dof - dist.dim + 1.0) * rng.standard_normal(dist.dof.shape)
        return (whitened_symmetric(rng, scale_inverse), dof_step)
    if isinstance(dist, NormalWishart):
        scale_inverse = np.linalg.inv(dist.scale)
        chol = np.linalg.cholesky(scale_inverse)
        # scale^-1 = eta3 - eta1 eta1^T / eta2. Moving eta1 or eta2 changes it by
        # terms of relative size sqrt(beta m^T scale m) and beta m^T scale m,
        # so both steps are shrunk by those factors.
        whitened_mean_sq = dist.beta * np.einsum("...i,...ij,...j->...", dist.mean, dist.scale, dist.mean)
        shrink_mean = np.minimum(np.sqrt(dist.beta), 1.0) / (1.0 + np.sqrt(whitened_mean_sq))
        noise = rng.standard_normal(dist.mean.shape)
        weighted_mean = shrink_mean[..., None] * np.einsum("...ij,...j->...i", chol, noise)
        beta = dist.beta * rng.standard_normal(dist.beta.shape) / (1.0 + whitened_mean_sq)
        psi_matrix = whitened_symmetric(rng, scale_inverse)
        dof = (dist.dof - dist.dim + 1.0) * rng.standard_normal(dist.dof.shape)
        return (weighted_mean, beta, psi_matrix, dof)
    raise TypeError(f"no direction known for {type(dist).__name__}")


def log_partition_at(dist, natural):
    """A(eta) for the family of ``dist``, evaluated at the natural parameters ``natural``."""
    if isinstance(dist, Categorical):
        # from_natural normalises the probabilities, so the stored
        # log-partition is 0 everywhere. The family documents A(eta) =
        # logsumexp(eta) for unnormalised eta, so evaluate that.
        return special.logsumexp(natural[0], axis=-1)
    return type(dist).from_natural(*natural).log_partition()


# ---------------------------------------------------------------------------
# (a) natural -> standard -> natural round trip
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_from_natural_round_trip(family, data):
    (dist,) = draw_distributions(data, family, 1)

    rebuilt = type(dist).from_natural(*dist.natural_params())

    # Converting to natural parameters and back costs a few roundings, plus
    # one matrix inversion each way for the matrix families, which loses up to
    # cond * eps relative accuracy. 100 covers the constants of those bounds.
    tolerance = 100 * EPS * condition_number(dist)
    for original, restored in zip(standard_params(dist), standard_params(rebuilt)):
        assert restored.shape == original.shape
        np.testing.assert_allclose(restored, original, rtol=tolerance, atol=tolerance * np.abs(original).max())


# ---------------------------------------------------------------------------
# (b) grad A(eta) == E[T(x)]
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_log_partition_gradient_is_expected_stats(family, data):
    (dist,) = draw_distributions(data, family, 1)
    rng = np.random.default_rng(data.draw(seeds, label="direction_seed"))
    natural = dist.natural_params()
    direction = random_direction(dist, rng)
    step = 1e-5

    forward = log_partition_at(dist, tuple(eta + step * v for eta, v in zip(natural, direction)))
    backward = log_partition_at(dist, tuple(eta - step * v for eta, v in zip(natural, direction)))
    finite_difference = (forward - backward) / (2 * step)
    directional_derivative = dist.pair(direction, dist.expected_stats())

    # Truncation: the direction moves each parameter by a relative amount of
    # order 1, so step^2 A''' / 6 is about 1e-10 of the gradient terms. The
    # largest seen over 3,000 seeds per family was 4e-8 (concentrations near
    # 0.05), so the bound is 1e-6 of their size.
    # Rounding: each A is accurate to about eps * cond * (|A| + size), and the
    # difference divides that by the step. The factor 100 covers the constants.
    size = pair_magnitude(dist, direction, dist.expected_stats())
    log_partition = np.abs(log_partition_at(dist, natural))
    rounding = 100 * EPS * condition_number(dist) * (size + log_partition) / step
    tolerance = 1e-6 * size + rounding + 1e-12
    assert np.all(np.abs(finite_difference - directional_derivative) <= tolerance), (
        f"finite difference {finite_difference} differs from <v, E[T]> "
        f"{directional_derivative} by more than {tolerance}"
    )


def test_categorical_log_partition_is_zero():
    # The stored natural parameters are normalised log-probabilities.
    dist = Categorical([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])

    np.testing.assert_allclose(dist.log_partition(), 0.0, atol=1e-15)


# ---------------------------------------------------------------------------
# (c) KL(p, p) == 0 and KL(p, q) >= 0
# ---------------------------------------------------------------------------


def kl_rounding_size(p, q):
    """Size of the terms that KL(p || q) sums, for a tolerance on their rounding."""
    natural_size = tuple(np.abs(a) + np.abs(b) for a, b in zip(p.natural_params(), q.natural_params()))
    stats_size = tuple(np.abs(a) + np.abs(b) for a, b in zip(p.expected_stats(), q.expected_stats()))
    return np.abs(p.log_partition()) + np.abs(q.log_partition()) + p.pair(natural_size, stats_size)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_kl_zero_for_identical_distributions(family, data):
    (dist,) = draw_distributions(data, family, 1)
    same = type(dist)(*standard_params(dist))
    rebuilt = type(dist).from_natural(*dist.natural_params())

    np.testing.assert_array_equal(dist.kl(same), 0.0)
    # rebuilt differs from dist by rounding, so its KL is the rounding error
    # of the summed terms: a few eps of their size (at most 1e-15 of it over
    # 1,500 seeds per family).
    tolerance = 1e-12 * kl_rounding_size(dist, rebuilt)
    kl = dist.kl(rebuilt)
    assert np.all(kl >= 0)
    assert np.all(kl <= tolerance), f"KL(p || p) = {kl} exceeds the rounding tolerance {tolerance}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=200)
@given(data=st.data())
def test_kl_nonnegative_and_symmetrised(family, data):
    p, q = draw_distributions(data, family, 2)

    kl_pq = p.kl(q)
    kl_qp = q.kl(p)

    assert kl_pq.shape == p.batch_shape
    assert np.all(kl_pq >= 0)
    assert np.all(kl_qp >= 0)
    # kl clamps negative values to 0, which would hide a wrong sign. The
    # identity KL(p||q) + KL(q||p) = <eta_p - eta_q, E_p[T] - E_q[T]> catches
    # that, and because its right side uses no log-partition, it also catches
    # an A that does not match E[T].
    natural_diff = tuple(a - b for a, b in zip(p.natural_params(), q.natural_params()))
    stats_diff = tuple(a - b for a, b in zip(p.expected_stats(), q.expected_stats()))
    symmetrised = p.pair(natural_diff, stats_diff)
    # Both sides sum terms of size kl_rounding_size, so they differ by a few
    # eps of that size (at most 1e-15 of it over 1,500 seeds per family).
    tolerance = 1e-12 * kl_rounding_size(p, q)
    assert np.all(np.abs(kl_pq + kl_qp - symmetrised) <= tolerance), (
        f"KL(p||q) + KL(q||p) = {kl_pq + kl_qp} differs from {symmetrised} by more than {tolerance}"
    )


@settings(max_examples=200)
@given(data=st.data())
def test_categorical_kl_matches_generic_formula(data):
    p, q = draw_distributions(data, "categorical", 2)

    generic = ExponentialFamily.kl(p, q)

    # Both sum the same K terms in a different order, so they differ by a few
    # eps of the size of those terms.
    tolerance = 1e-12 * kl_rounding_size(p, q)
    assert np.all(np.abs(p.kl(q) - generic) <= tolerance)


# ---------------------------------------------------------------------------
# (d) entropy against scipy.stats
# ---------------------------------------------------------------------------


def scipy_entropy(dist, index):
    """scipy.stats entropy of one batch element, or None where scipy has none."""
    if isinstance(dist, Dirichlet):
        alpha = dist.concentration[index]
        # scipy.stats.dirichlet needs at least two categories.
        return stats.dirichlet(alpha).entropy() if alpha.shape[-1] >= 2 else None
    if isinstance(dist, Categorical):
        return stats.entropy(dist.probs[index])
    if isinstance(dist, Gamma):
        return stats.gamma(dist.shape[index], scale=1.0 / dist.rate[index]).entropy()
    if isinstance(dist, MultivariateNormal):
        covariance = np.linalg.inv(dist.precision[index])
        return stats.multivariate_normal(dist.mean[index], covariance).entropy()
    if isinstance(dist, Wishart):
        return stats.wishart(df=dist.dof[index], scale=dist.scale[index]).entropy()
    return None


@pytest.mark.parametrize("family", ["categorical", "dirichlet", "gamma", "gaussian", "wishart"])
@settings(max_examples=200)
@given(data=st.data())
def test_entropy_matches_scipy(family, data):
    (dist,) = draw_distributions(data, family, 1)

    # Categorical overrides entropy, so check the generic formula directly too.
    generic = ExponentialFamily.entropy(dist)
    entropy = dist.entropy()

    # Both compute a difference of terms of size |A| + <|eta|, |E[T]|>, so
    # they agree to a few eps of that size (at most 1e-14 of it over 1,500
    # seeds per family).
    size = np.abs(dist.log_partition()) + pair_magnitude(dist, dist.natural_params(), dist.expected_stats())
    tolerance = 1e-12 * (size + 1)
    for index in np.ndindex(*dist.batch_shape):
        expected = scipy_entropy(dist, index)
        if expected is None:
            continue
        assert abs(entropy[index] - expected) <= tolerance[index], (
            f"entropy {entropy[index]} differs from scipy's {expected} at batch index {index}"
        )
        assert abs(generic[index] - expected) <= tolerance[index], (
            f"generic entropy {generic[index]} differs from scipy's {expected} at batch index {index}"
        )


@settings(max_examples=200)
@given(data=st.data())
def test_single_category_dirichlet_entropy_is_zero(data):
    # With K = 1 the Dirichlet is a point mass at pi = (1,), so H = 0.
    build, _ = FAMILIES["dirichlet"]
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    dist = build(rng, 1, (3,))

    np.testing.assert_allclose(dist.entropy(), 0.0, atol=1e-12)
