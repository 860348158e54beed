"""Properties of the linear-response correction on small random mixtures.

J is checked against central finite differences of the library's own CAVI
iteration (one E-step and one M-step through ``fg_influence.inference.cavi``),
and division plus the response term is checked against one Newton step on
the fixed-point equations without a site, with the Newton Jacobian also
taken by finite differences.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fg_influence.inference.cavi import update_global, update_local
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import linear_response as lr
from fg_influence.models import GaussianMixture
from tests.helpers import clustered_data, fit_quietly

seeds = st.integers(0, 2**32 - 1)


def coordinates_of(system, globals_):
    """The system's (K, Q) coordinates read back from family objects."""
    parts = []
    for block in system.blocks:
        dist = globals_[block.variable]
        if block.variable == "weights":
            parts.append(dist.concentration[:, None])
        else:
            parts.append(lr.normal_wishart_coordinates(dist))
    return np.concatenate(parts, axis=1)


def cavi_iteration(posterior, system, coords, graph=None, data=None):
    """One CAVI iteration (E-step, then M-step) started from global coordinates ``coords``."""
    graph = posterior.graph if graph is None else graph
    data = posterior.data if data is None else data
    parts = system.split(coords)
    globals_ = {b.variable: b.to_posterior(parts[b.variable]) for b in system.blocks}
    state = Posterior(graph, globals_, {}, data)
    update_local(state, system.local)
    for block in system.blocks:
        update_global(state, block.variable)
    return coordinates_of(system, state.globals)


def refreshed(posterior):
    """The posterior with responsibilities recomputed from its globals, so J is dS/dg at g exactly."""
    state = Posterior(posterior.graph, dict(posterior.globals), dict(posterior.locals), posterior.data)
    update_local(state, "assignment")
    return state


def small_fit(seed, n, d, k, spread, tol=1e-12):
    rng = np.random.default_rng(seed)
    X = clustered_data(rng, n, d, k, spread)
    model = GaussianMixture(k, random_state=int(rng.integers(2**31)), tol=tol, max_iter=20000)
    return fit_quietly(model, X).posterior_


def finite_difference_jacobian(function, coords, scale):
    """Central differences of ``function`` along each coordinate, step scale * 1e-6."""
    flat = coords.reshape(-1)
    columns = []
    for j in range(flat.size):
        step = np.zeros_like(flat)
        step[j] = 1e-6 * scale[j]
        plus = function((flat + step).reshape(coords.shape)).reshape(-1)
        minus = function((flat - step).reshape(coords.shape)).reshape(-1)
        columns.append((plus - minus) / (2 * step[j]))
    return np.stack(columns, axis=1)


@settings(max_examples=8)
@given(seed=seeds, n=st.integers(15, 50), d=st.integers(1, 2), k=st.integers(1, 3),
       spread=st.floats(0.5, 4.0))
def test_jacobian_matches_finite_differences(seed, n, d, k, spread):
    posterior = refreshed(small_fit(seed, n, d, k, spread, tol=1e-8))
    system = lr.build_response_system(posterior, warn=False)
    coords = system.coordinates
    scale = np.abs(coords.reshape(-1)) + 1.0
    numeric = finite_difference_jacobian(lambda g: cavi_iteration(posterior, system, g), coords, scale)

    # Compare column by column in the scaled coordinates the steps were taken in.
    # Central differences with relative step 1e-6 have truncation error near
    # 1e-12 and rounding error near 1e-10 relative to |g|, so 1e-6 of the
    # largest scaled entry leaves a wide margin.
    analytic = system.jacobian * scale[None, :]
    numeric = numeric * scale[None, :]
    tolerance = 1e-6 * max(1.0, np.abs(analytic).max())
    assert np.abs(numeric - analytic).max() <= tolerance


@settings(max_examples=12)
@given(seed=seeds, n=st.integers(15, 50), d=st.integers(1, 2), k=st.integers(1, 3),
       spread=st.floats(0.5, 4.0))
def test_hessian_is_symmetric_positive_definite(seed, n, d, k, spread):
    posterior = small_fit(seed, n, d, k, spread, tol=1e-8)
    hessian = lr.normal_wishart_hessian(posterior.globals["components"])
    # The Hessian of a log-partition is symmetric; the derivation builds each
    # column separately, so an asymmetry above rounding means a wrong term.
    scale = np.abs(hessian).max()
    assert np.abs(hessian - np.swapaxes(hessian, 1, 2)).max() <= 1e-10 * scale
    assert np.all(np.linalg.eigvalsh(hessian) > 0)


@settings(max_examples=12)
@given(seed=seeds, n=st.integers(15, 50), d=st.integers(1, 2), k=st.integers(1, 3),
       spread=st.floats(0.5, 4.0))
def test_correction_solves_linear_system(seed, n, d, k, spread):
    posterior = refreshed(small_fit(seed, n, d, k, spread, tol=1e-8))
    system = lr.build_response_system(posterior, warn=False)
    site = int(np.random.default_rng(seed).integers(n))
    corrected = system.corrected_coordinates([site])[0].reshape(-1)
    message = system.site_messages([site])[0].reshape(-1)
    identity = np.eye(message.size)

    # An independent dense LU solve of (I - J) delta = -s; both routes are
    # backward stable, so they agree to the condition number times eps.
    delta = np.linalg.solve(identity - system.jacobian, -message)
    expected = system.coordinates.reshape(-1) + delta
    tolerance = 1e-9 * system.condition_number * (np.abs(message).max() + 1.0)
    assert np.abs(corrected - expected).max() <= tolerance

    # The eigenvalues of J are real, in [0, 1) at a stable fixed point, and
    # equal those of the symmetric form used for the factorisation.
    eigenvalues = np.sort(np.linalg.eigvals(system.jacobian).real)
    assert np.allclose(eigenvalues, system.eigenvalues, atol=1e-8)
    assert system.eigenvalues.min() > -1e-10
    assert system.eigenvalues.max() < 1.0


@settings(max_examples=8)
@given(seed=seeds, n=st.integers(15, 40), d=st.integers(1, 2), k=st.integers(1, 3),
       spread=st.floats(1.0, 4.0))
def test_division_plus_response_is_newton_step(seed, n, d, k, spread):
    posterior = small_fit(seed, n, d, k, spread)
    system = lr.build_response_system(refreshed(posterior), warn=False)
    site = int(np.random.default_rng(seed).integers(n))
    keep = np.arange(n) != site
    reduced_graph = posterior.graph.without_sites([site])
    reduced_data = {name: values[keep] for name, values in posterior.data.items()}
    coords = system.coordinates

    def residual(g):
        return g - cavi_iteration(posterior, system, g, reduced_graph, reduced_data)

    # F(g) = g - prior - S_without_i(g); at the fitted g it equals s_i up to
    # how far the fit is from its fixed point.
    value = residual(coords).reshape(-1)
    fixed_point_gap = np.abs(coords - cavi_iteration(posterior, system, coords)).max()
    scale = np.abs(coords.reshape(-1)) + 1.0
    derivative = finite_difference_jacobian(residual, coords, scale)
    newton = coords.reshape(-1) - np.linalg.solve(derivative, value)

    # Division plus the response term with J - J_i is the same step.
    library = lr.newton_corrected_coordinates(system, site).reshape(-1)
    step = np.abs(newton - coords.reshape(-1)).max()
    # Finite differences carry about 1e-8 relative error into the step, and a
    # fit that is off its fixed point by `gap` moves F by as much, amplified
    # by the condition number of I - J.
    tolerance = 1e-6 * step + 10 * system.condition_number * fixed_point_gap
    assert np.abs(library - newton).max() <= tolerance
