"""Input checks of the family constructors and from_natural, and copy semantics."""

import numpy as np
import pytest

from fg_influence.families import (
    Categorical,
    Dirichlet,
    Gamma,
    MultivariateNormal,
    NormalWishart,
    Wishart,
)

NOT_SPD = np.array([[1.0, 2.0], [2.0, 1.0]])
# Three 2 x 2 identity matrices, a valid scale for a batch of shape (3,).
IDENTITY_BATCH = np.broadcast_to(np.eye(2), (3, 2, 2))

INVALID_INPUTS = {
    "dirichlet negative concentration": (
        lambda: Dirichlet([1.0, -0.5]), ValueError, "concentration must be positive"),
    "dirichlet zero concentration": (
        lambda: Dirichlet([1.0, 0.0]), ValueError, "concentration must be positive"),
    "dirichlet nan concentration": (
        lambda: Dirichlet([1.0, np.nan]), ValueError, "concentration must contain only finite"),
    "dirichlet scalar concentration": (
        lambda: Dirichlet(2.0), ValueError, "last axis of at least one category"),
    "dirichlet no categories": (
        lambda: Dirichlet(np.ones((3, 0))), ValueError, "last axis of at least one category"),
    "dirichlet string concentration": (
        lambda: Dirichlet("1, 2"), TypeError, "concentration must be a numeric array"),
    "dirichlet ragged concentration": (
        lambda: Dirichlet([[1.0, 2.0], [1.0]]), TypeError, "concentration must be a numeric array"),
    "categorical not summing to one": (
        lambda: Categorical([0.5, 0.6]), ValueError, "sum to 1"),
    "categorical negative probability": (
        lambda: Categorical([1.5, -0.5]), ValueError, "non-negative"),
    "categorical nan probability": (
        lambda: Categorical([np.nan, 1.0]), ValueError, "probs must contain only finite"),
    "categorical scalar probs": (
        lambda: Categorical(1.0), ValueError, "last axis of categories"),
    "gamma negative shape": (
        lambda: Gamma(-1.0, 1.0), ValueError, "shape must be positive"),
    "gamma zero rate": (
        lambda: Gamma(1.0, 0.0), ValueError, "rate must be positive"),
    "gamma infinite shape": (
        lambda: Gamma(np.inf, 1.0), ValueError, "shape must contain only finite"),
    "gamma nan rate": (
        lambda: Gamma(1.0, np.nan), ValueError, "rate must contain only finite"),
    "gamma complex shape": (
        lambda: Gamma(1.0 + 2.0j, 1.0), TypeError, "shape must be a (real )?numeric array"),
    "gamma shape mismatch": (
        lambda: Gamma([1.0, 2.0, 3.0], [1.0, 2.0]), ValueError,
        r"shape and rate must have broadcastable batch shapes, got \(3,\) and \(2,\)"),
    "gaussian precision dimension mismatch": (
        lambda: MultivariateNormal(np.zeros(2), np.eye(3)), ValueError,
        r"precision must have shape \(\.\.\., D, D\) matching mean"),
    "gaussian batch mismatch": (
        lambda: MultivariateNormal(np.zeros((3, 2)), np.broadcast_to(np.eye(2), (2, 2, 2))),
        ValueError, "mean and precision must have broadcastable batch shapes"),
    "gaussian precision not spd": (
        lambda: MultivariateNormal(np.zeros(2), NOT_SPD), ValueError,
        "precision must be symmetric positive definite"),
    "gaussian nan mean": (
        lambda: MultivariateNormal([0.0, np.nan], np.eye(2)), ValueError,
        "mean must contain only finite"),
    "gaussian logpdf dimension mismatch": (
        lambda: MultivariateNormal(np.zeros(2), np.eye(2)).logpdf(np.zeros(3)), ValueError,
        r"x must have shape \(\.\.\., 2\)"),
    "wishart scale not spd": (
        lambda: Wishart(NOT_SPD, 3.0), ValueError, "scale must be symmetric positive definite"),
    "wishart dof at boundary": (
        lambda: Wishart(np.eye(3), 2.0), ValueError, "dof must be greater than D - 1 = 2"),
    "wishart dof below boundary": (
        lambda: Wishart(np.eye(2), 0.5), ValueError, "dof must be greater than D - 1 = 1"),
    "wishart scale not square": (
        lambda: Wishart(np.ones((2, 3)), 3.0), ValueError,
        r"scale must have shape \(\.\.\., D, D\), got \(2, 3\)"),
    "wishart scale one-dimensional": (
        lambda: Wishart(np.ones(3), 3.0), ValueError, r"scale must have shape \(\.\.\., D, D\)"),
    "wishart dof batch mismatch": (
        lambda: Wishart(IDENTITY_BATCH, [3.0, 4.0]), ValueError,
        r"dof must have the batch shape of scale \(3,\), got \(2,\)"),
    "wishart nan scale": (
        lambda: Wishart([[1.0, np.nan], [np.nan, 1.0]], 3.0), ValueError,
        "scale must contain only finite"),
    "normal-wishart zero beta": (
        lambda: NormalWishart(np.zeros(2), 0.0, np.eye(2), 3.0), ValueError,
        "beta must be positive"),
    "normal-wishart scale dimension mismatch": (
        lambda: NormalWishart(np.zeros(2), 1.0, np.eye(3), 3.0), ValueError,
        r"scale must have shape \(2, 2\) to match mean \(2,\), got \(3, 3\)"),
    "normal-wishart unbatched scale": (
        lambda: NormalWishart(np.zeros((3, 2)), 1.0, np.eye(2), 3.0), ValueError,
        r"scale must have shape \(3, 2, 2\)"),
    "normal-wishart dof batch mismatch": (
        lambda: NormalWishart(np.zeros((3, 2)), 1.0, IDENTITY_BATCH, [3.0, 4.0]), ValueError,
        r"dof must have the batch shape \(3,\), got \(2,\)"),
    "normal-wishart beta batch mismatch": (
        lambda: NormalWishart(np.zeros((3, 2)), [1.0, 2.0], IDENTITY_BATCH, 3.0), ValueError,
        r"beta must have the batch shape \(3,\), got \(2,\)"),
    "normal-wishart dof at boundary": (
        lambda: NormalWishart(np.zeros(2), 1.0, np.eye(2), 1.0), ValueError,
        "dof must be greater than D - 1 = 1"),
    "normal-wishart scale not spd": (
        lambda: NormalWishart(np.zeros(2), 1.0, NOT_SPD, 3.0), ValueError,
        "scale must be symmetric positive definite"),
    "normal-wishart scalar mean": (
        lambda: NormalWishart(0.0, 1.0, np.eye(1), 3.0), ValueError, r"mean must have shape \(\.\.\., D\)"),
    "normal-wishart nan mean": (
        lambda: NormalWishart([np.nan, 0.0], 1.0, np.eye(2), 3.0), ValueError,
        "mean must contain only finite"),
}


@pytest.mark.parametrize("case", sorted(INVALID_INPUTS))
def test_invalid_parameters_raise(case):
    build, error, message = INVALID_INPUTS[case]

    with pytest.raises(error, match=message):
        build()


INVALID_NATURAL = {
    "dirichlet concentration not positive": (
        lambda: Dirichlet.from_natural([-1.0, 0.0]), "concentration must be positive"),
    "gamma rate not positive": (
        lambda: Gamma.from_natural(0.0, 1.0), "rate must be positive"),
    "gaussian precision not positive definite": (
        lambda: MultivariateNormal.from_natural(np.zeros(2), np.eye(2)),
        r"precision \(-2 eta2\) must be symmetric positive definite"),
    "wishart scale not positive definite": (
        lambda: Wishart.from_natural(np.eye(2), 1.0),
        r"scale inverse \(-2 eta1\) must be symmetric positive definite"),
    "normal-wishart beta not positive": (
        lambda: NormalWishart.from_natural(np.zeros(2), -1.0, np.eye(2), 1.0),
        "improper Normal-Wishart: beta must be positive"),
    # psi - beta m m^T = I - (3, 0)(3, 0)^T has eigenvalue -8.
    "normal-wishart scale not positive definite": (
        lambda: NormalWishart.from_natural(np.array([3.0, 0.0]), 1.0, np.eye(2), 1.0),
        r"scale inverse \(psi - beta m m\^T\) must be symmetric positive definite"),
}


@pytest.mark.parametrize("case", sorted(INVALID_NATURAL))
def test_improper_natural_parameters_raise(case):
    build, message = INVALID_NATURAL[case]

    with pytest.raises(ValueError, match=message):
        build()


def test_gaussian_logpdf_accepts_scalar_for_one_dimension():
    dist = MultivariateNormal([0.5], [[4.0]])

    # N(0.3 | 0.5, 1/4): 0.5 ln(4 / (2 pi)) - 0.5 * 4 * 0.2^2.
    expected = 0.5 * np.log(4.0 / (2 * np.pi)) - 0.5 * 4.0 * 0.04
    np.testing.assert_allclose(dist.logpdf(0.3), expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# Constructors copy their inputs
# ---------------------------------------------------------------------------


def caller_arrays():
    """Arrays a caller might pass, with a slightly asymmetric matrix that the
    constructors symmetrise."""
    rng = np.random.default_rng(7)
    factor = rng.standard_normal((3, 2, 2))
    spd = factor @ np.swapaxes(factor, -1, -2) + np.eye(2)
    asymmetric = spd.copy()
    asymmetric[:, 0, 1] += 1e-3
    return {
        "concentration": rng.uniform(0.5, 3.0, (3, 4)),
        "probs": rng.dirichlet(np.ones(4), size=3),
        "shape": rng.uniform(0.5, 3.0, 3),
        "rate": rng.uniform(0.5, 3.0, 3),
        "mean": rng.standard_normal((3, 2)),
        "matrix": asymmetric,
        "beta": rng.uniform(0.5, 3.0, 3),
        "dof": rng.uniform(3.0, 6.0, 3),
    }


CONSTRUCTORS = {
    "dirichlet": lambda a: Dirichlet(a["concentration"]),
    "categorical": lambda a: Categorical(a["probs"]),
    "gamma": lambda a: Gamma(a["shape"], a["rate"]),
    "gaussian": lambda a: MultivariateNormal(a["mean"], a["matrix"]),
    "wishart": lambda a: Wishart(a["matrix"], a["dof"]),
    "normal_wishart": lambda a: NormalWishart(a["mean"], a["beta"], a["matrix"], a["dof"]),
}


@pytest.mark.parametrize("family", sorted(CONSTRUCTORS))
def test_constructor_leaves_caller_arrays_unchanged(family):
    arrays = caller_arrays()
    originals = {name: value.copy() for name, value in arrays.items()}

    dist = CONSTRUCTORS[family](arrays)
    dist.entropy()
    dist.kl(dist)
    type(dist).from_natural(*dist.natural_params())

    for name, value in arrays.items():
        np.testing.assert_array_equal(value, originals[name], err_msg=f"{family} changed {name}")


@pytest.mark.parametrize("family", sorted(CONSTRUCTORS))
def test_distribution_does_not_alias_caller_arrays(family):
    arrays = caller_arrays()
    dist = CONSTRUCTORS[family](arrays)
    natural_before = [eta.copy() for eta in dist.natural_params()]

    for value in arrays.values():
        value *= 2.0

    for before, after in zip(natural_before, dist.natural_params()):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("family", sorted(CONSTRUCTORS))
def test_from_natural_leaves_caller_arrays_unchanged(family):
    dist = CONSTRUCTORS[family](caller_arrays())
    natural = dist.natural_params()
    originals = [eta.copy() for eta in natural]

    type(dist).from_natural(*natural)

    for before, after in zip(originals, natural):
        np.testing.assert_array_equal(after, before)


def test_matrix_parameters_are_stored_symmetric():
    arrays = caller_arrays()
    matrix = arrays["matrix"]

    stored = {
        "gaussian precision": MultivariateNormal(arrays["mean"], matrix).precision,
        "wishart scale": Wishart(matrix, arrays["dof"]).scale,
        "normal-wishart scale": NormalWishart(arrays["mean"], arrays["beta"], matrix, arrays["dof"]).scale,
    }

    for name, value in stored.items():
        np.testing.assert_array_equal(value, np.swapaxes(value, -1, -2), err_msg=name)
        np.testing.assert_allclose(value, 0.5 * (matrix + np.swapaxes(matrix, -1, -2)), err_msg=name)
