"""Rotations of the factors of factor analysis and the alignment of exact refits.

With two or more factors, rotating the loadings' factor part and every
row's factors together leaves the model unchanged, so a refit without a row
is defined up to a rotation. Exact refits are rotated to the rotation with
the smallest KL to the fit before their KL is taken. These tests check that
this KL does not depend on the rotation a refit happens to end at, that it
is a minimum over rotations, and that one factor and other models are left
alone.
"""

from functools import cache

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import linalg
from scipy.stats import ortho_group

from fg_influence.datasets import load_iris
from fg_influence.inference import fit_cavi
from fg_influence.inference.cavi import compute_elbo
from fg_influence.influence import (
    InfluenceResult,
    exact_kl,
    leave_group_out_kl,
    posterior_kl,
    refit_without,
)
from fg_influence.influence import linear_response_factor_analysis as lrf
from fg_influence.influence.factor_rotation import (
    align_rotation,
    closest_rotation,
    has_rotation_symmetry,
    rotate_factors,
)
from fg_influence.models import GaussianMixture
from fg_influence.models.factor_analysis import (
    FactorAnalysis,
    build_factor_analysis_graph,
)

seeds = st.integers(0, 2**32 - 1)


def standardized_iris():
    X = load_iris().data
    return (X - X.mean(axis=0)) / X.std(axis=0)


@cache
def iris_fit_and_refit(n_factors):
    """A fit of standardized iris and its refit without row 41 (an outlier), unaligned."""
    posterior = FactorAnalysis(n_factors).fit(standardized_iris()).posterior_
    return posterior, refit_without(posterior, [41])


def random_rotation(seed, n_factors):
    return ortho_group.rvs(n_factors, random_state=np.random.default_rng(seed))


# Rotating a posterior.


def test_rotation_keeps_elbo_and_round_trips():
    posterior, _ = iris_fit_and_refit(3)
    rotation = random_rotation(1, 3)
    rotated = rotate_factors(posterior, rotation)
    # The ELBO is invariant, so the two evaluations differ by rounding only.
    assert compute_elbo(rotated) == pytest.approx(compute_elbo(posterior), rel=1e-12)
    back = rotate_factors(rotated, rotation.T)
    np.testing.assert_allclose(back.globals["loadings"].mean, posterior.globals["loadings"].mean, atol=1e-12)
    np.testing.assert_allclose(back.globals["loadings"].precision, posterior.globals["loadings"].precision,
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(back.locals["latent"].stat1, posterior.locals["latent"].stat1, atol=1e-12)
    # The caller's posterior is not modified.
    assert rotated.globals["loadings"] is not posterior.globals["loadings"]
    assert np.abs(rotated.locals["latent"].stat0 - posterior.locals["latent"].stat0).max() > 0.1


def test_rotate_factors_rejects_bad_input():
    posterior, _ = iris_fit_and_refit(2)
    with pytest.raises(ValueError, match=r"rotation must have shape \(2, 2\) for 2 factors, got \(3, 3\)"):
        rotate_factors(posterior, np.eye(3))
    with pytest.raises(ValueError, match="rotation must be orthogonal"):
        rotate_factors(posterior, [[1.0, 0.5], [0.0, 1.0]])
    mixture = GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 2))).posterior_
    with pytest.raises(ValueError, match="needs a factor analysis posterior"):
        rotate_factors(mixture, np.eye(2))


# Aligning a refit.


@settings(max_examples=8, deadline=None)
@given(seed=seeds, n_factors=st.integers(2, 3))
def test_alignment_invariant_to_a_rotation_of_the_refit(seed, n_factors):
    posterior, refit = iris_fit_and_refit(n_factors)
    rotation = random_rotation(seed, n_factors)
    # Rotations near the identity barely move the refit, which would make the first check vacuous.
    assume(np.linalg.norm(rotation - np.eye(n_factors)) > 0.5)
    aligned = align_rotation(posterior, refit)
    rotated = rotate_factors(refit, rotation)
    realigned = align_rotation(posterior, rotated)
    expected = posterior_kl(posterior.globals, aligned.globals)
    # Such a rotation moves the unaligned KL far from the aligned one (by a
    # factor above 1,000 in the measured cases).
    assert posterior_kl(posterior.globals, rotated.globals) > 2 * expected
    # BFGS stops with a gradient below 1e-10, which leaves the KL at its
    # minimum to far below 1e-9 relative.
    assert posterior_kl(posterior.globals, realigned.globals) == pytest.approx(expected, rel=1e-9)
    # The same minimum, so the same rotated factors up to the solver's tolerance.
    np.testing.assert_allclose(realigned.locals["latent"].stat0, aligned.locals["latent"].stat0, atol=1e-6)


@pytest.mark.parametrize("n_factors", [2, 3])
def test_closest_rotation_is_a_minimum(n_factors):
    posterior, refit = iris_fit_and_refit(n_factors)
    fitted, refitted = posterior.globals["loadings"], refit.globals["loadings"]
    rotation = closest_rotation(fitted, refitted)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(n_factors), atol=1e-12)

    def kl(matrix):
        return posterior_kl(posterior.globals, rotate_factors(refit, matrix).globals)

    best = kl(rotation)
    rows, cols = np.triu_indices(n_factors, 1)
    for a, b in zip(rows, cols):
        generator = np.zeros((n_factors, n_factors))
        generator[a, b], generator[b, a] = 1.0, -1.0
        for angle in (-1e-3, 1e-3):
            assert kl(linalg.expm(angle * generator) @ rotation) > best

    # The Procrustes rotation of the loading means, the search's start, is close but not the minimum.
    procrustes, _ = linalg.orthogonal_procrustes(refitted.mean[:, :n_factors], fitted.mean[:, :n_factors])
    assert best < kl(procrustes.T)


def test_no_alignment_without_the_symmetry():
    X = standardized_iris()
    one_factor = FactorAnalysis(1).fit(X).posterior_
    assert not has_rotation_symmetry(one_factor)
    refit = refit_without(one_factor, [0])
    assert align_rotation(one_factor, refit) is refit

    mixture = GaussianMixture(2, random_state=0).fit(X).posterior_
    assert not has_rotation_symmetry(mixture)

    # A prior with different precisions for the two factors breaks the symmetry.
    priors = FactorAnalysis(2).priors(X)
    precision = priors["loadings_prior"].precision.copy()
    precision[:, 1, 1] = 4.0
    priors["loadings_prior"] = type(priors["loadings_prior"])(priors["loadings_prior"].mean, precision)
    posterior = fit_cavi(build_factor_analysis_graph(X, 2, **priors), tol=1e-12, max_iter=20000)
    assert not has_rotation_symmetry(posterior)
    refit = refit_without(posterior, [0])
    assert align_rotation(posterior, refit) is refit
    # Without the symmetry, I - J is solved whole and has no eigenvalue at 1.
    system = lrf.build_factor_analysis_response_system(posterior, warn=False)
    assert system.complement is None
    assert system.eigenvalues.max() < 1.0


# Exact refits.


def test_exact_kl_is_aligned():
    posterior, refit = iris_fit_and_refit(2)
    values, refits = exact_kl(posterior, [[41]])
    expected = posterior_kl(posterior.globals, align_rotation(posterior, refit).globals)
    # The same warm-started refit, so the same KL up to rounding.
    assert values[0] == pytest.approx(expected, rel=1e-9)
    assert posterior_kl(posterior.globals, refits[0].globals) == pytest.approx(values[0], rel=1e-12)
    grouped = leave_group_out_kl(posterior, [[41]], method="exact")
    assert grouped[0] == pytest.approx(values[0], rel=1e-12)


def test_exact_kl_invariant_to_rotating_the_fit():
    posterior, _ = iris_fit_and_refit(2)
    rotated = rotate_factors(posterior, random_rotation(3, 2))
    rows = [0, 41]
    expected = InfluenceResult(posterior).compute_exact(rows).exact_kl
    values = InfluenceResult(rotated).compute_exact(rows).exact_kl
    # CAVI is equivariant under the rotation, so the refits differ only by
    # rounding, carried through slowly converging iterations to where each
    # stops (a relative ELBO change of 1e-12): measured 4e-5 relative. An
    # unaligned rotation changes the KL by orders of magnitude.
    np.testing.assert_allclose(values, expected, rtol=1e-3)
