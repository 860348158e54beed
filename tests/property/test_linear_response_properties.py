"""Properties of the linear-response correction on small random mixtures.

J is checked against central finite differences of the library's own CAVI
iteration (one E-step and one M-step through ``fg_influence.inference.cavi``),
and division plus the response term is checked against one Newton step on
the fixed-point equations without a site, with the Newton Jacobian also
taken by finite differences. The all-site summaries, computed in the
eigenbasis of J or through distinct products of the data, without any
site's corrected posterior, are checked against
dense per-site computations: the KL against the quadratic form of the
corrected coordinates, the LOO predictive density against a directional
derivative of the exact density.
"""

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from fg_influence.inference.cavi import update_global, update_local
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import InfluenceResult
from fg_influence.influence import linear_response as lr
from fg_influence.models import GaussianMixture
from tests.helpers import clustered_data, fit_quietly

seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(autouse=True, scope="module")
def every_responsibility():
    """Keep every responsibility in J: these tests check the derivative itself.

    The library leaves responsibilities below RESP_TOL out of J, an
    approximation of about K * RESP_TOL relative that finite differences
    of the full CAVI map would detect on sites with large statistics.
    """
    saved = lr.RESP_TOL
    lr.RESP_TOL = 0.0
    yield
    lr.RESP_TOL = saved


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


def stable_system(posterior):
    """The response system of a fit, rejecting the example when the fit is not a stable fixed point.

    Overlapping random clusters sometimes end at a saddle point (J has an
    eigenvalue of at least 1), where the correction is undefined and the
    library raises SingularResponseError.
    """
    try:
        return lr.build_response_system(posterior, warn=False)
    except lr.SingularResponseError:
        reject()


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
    system = stable_system(posterior)
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
    system = stable_system(posterior)
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
    system = stable_system(refreshed(posterior))
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


def posterior_division_kl(posterior):
    return sum(InfluenceResult(posterior).kl_by_variable.values())


def posterior_division_log_predictive(posterior):
    return InfluenceResult(posterior).loo_log_predictive


def untruncated_summaries(posterior, kl_route=None):
    """All-site summaries keeping every direction with a positive gain."""
    saved = lr.RANK_TOL
    lr.RANK_TOL = 0.0
    try:
        summaries = lr.LinearResponseSummaries(posterior, warn=False, kl_route=kl_route)
        summaries.loo_log_predictive
    except lr.SingularResponseError:
        reject()
    finally:
        lr.RANK_TOL = saved
    return summaries


mixtures = st.fixed_dictionaries({"seed": seeds, "n": st.integers(15, 40), "d": st.integers(1, 2),
                                   "k": st.integers(2, 3), "spread": st.floats(0.5, 3.0)})


@settings(max_examples=10)
@given(case=mixtures, kl_route=st.sampled_from(["moments", "eigenbasis"]))
def test_all_site_kl_is_division_plus_quadratic_response(case, kl_route):
    posterior = refreshed(small_fit(**case, tol=1e-8))
    summaries = untruncated_summaries(posterior, kl_route)
    system, n = summaries.system, case["n"]
    division = posterior_division_kl(posterior)
    hessian = lr.linalg.block_diag(*system.hessian)
    identity = np.eye(hessian.shape[0])
    for site in range(0, n, 7):
        # Dense and independent of the eigenbasis: delta = -(I - J)^-1 s_i, and
        # the response adds (delta^T H delta - s_i^T H s_i) / 2 to division's KL.
        message = system.site_messages([site])[0].reshape(-1)
        delta = np.linalg.solve(identity - system.jacobian, -message)
        added = 0.5 * (delta @ hessian @ delta - message @ hessian @ message)
        if summaries.improper[site]:
            # Flagged because a corrected weight, kappa or degrees of freedom
            # left the family; the dense coordinates must show it.
            corrected = system.coordinates.reshape(-1) + delta
            outside = [corrected.reshape(system.coordinates.shape)[:, system.block_slices()[b.variable]][:, p] <= bound
                       for b in system.blocks for p, bound in b.lower_bounds.items()]
            assert np.any(outside)
            continue
        fast = sum(values[site] for values in summaries.kl_by_variable.values())
        # Rounding in two routes through I - J, amplified by its condition number.
        tolerance = 1e-9 * system.condition_number * (abs(added) + division[site] + 1e-12)
        assert added >= -tolerance
        assert abs(fast - (division[site] + added)) <= tolerance


@settings(max_examples=10)
@given(case=mixtures)
def test_all_site_predictive_is_directional_derivative(case):
    posterior = refreshed(small_fit(**case, tol=1e-8))
    summaries = untruncated_summaries(posterior)
    system, n = summaries.system, case["n"]
    division = posterior_division_log_predictive(posterior)
    for site in range(0, n, 7):
        if summaries.improper[site]:
            # The corrected posterior left the family (checked in the KL test).
            assert summaries.loo_log_predictive[site] == -np.inf
            continue
        # Division's LOO predictive density plus its derivative along the
        # response term, the derivative taken by central differences of the
        # exact density at coordinates g - s_i + eps * u_i.
        divided = system.coordinates - system.site_messages([site])[0]
        response = system.response_term([site])[0]
        step = 1e-5

        def density(coords):
            parts = system.split(coords[None])
            log_terms = 0.0
            for block in system.blocks:
                summary = block.summarize(parts[block.variable], np.array([site]), np.zeros(1, dtype=bool))
                log_terms = log_terms + summary.get("log_weights", 0.0) + summary.get("log_density", 0.0)
            return float(logsumexp(log_terms, axis=1)[0])

        derivative = (density(divided + step * response) - density(divided - step * response)) / (2 * step)
        # Central differences with a unit-scaled step 1e-5: truncation near
        # 1e-10 times the third derivative, rounding near 1e-11 relative.
        expected = division[site] + derivative
        assert abs(summaries.loo_log_predictive[site] - expected) <= 1e-6 * (1.0 + abs(derivative))


@settings(max_examples=15)
@given(case=mixtures)
def test_moment_assembly_equals_direct(case):
    posterior = refreshed(small_fit(**case, tol=1e-8))
    _, blocks = lr.response_blocks(posterior)
    resp = posterior.locals["assignment"]

    def features(sites):
        return np.concatenate([b.features(sites) for b in blocks], axis=1)

    direct = lr.assemble_missing_information(resp, features)
    # The Dirichlet block's base has no entries, so the Gaussian block's
    # monomials index the data columns directly.
    monomials = tuple(blocks[0].monomials) + tuple(blocks[1].monomials)
    table = lr._MomentTable(monomials)
    assert table.fast
    moments = lr.assemble_missing_information(resp, features, (blocks[1].base, table))
    # Both sum the same products of the same pairs, in different orders and
    # groupings, so they differ by rounding only (measured up to 1.2e-12 relative).
    assert np.abs(moments - direct).max() <= 1e-10 * max(1.0, np.abs(direct).max())


@settings(max_examples=10)
@given(case=mixtures)
def test_kl_routes_agree_variable_by_variable(case):
    posterior = refreshed(small_fit(**case, tol=1e-8))
    moments = untruncated_summaries(posterior, "moments")
    eigenbasis = untruncated_summaries(posterior, "eigenbasis")
    # With every direction kept, both routes add y^T (R + R^2 / 2) y and split
    # it by variable in the same way. One goes through an eigen-decomposition,
    # the other through a Cholesky solve and distinct products of the data.
    # So they differ by rounding amplified by the condition number of I - J.
    assert np.array_equal(moments.improper, eigenbasis.improper)
    for name, values in moments.kl_by_variable.items():
        scale = np.abs(eigenbasis.kl_by_variable[name]) + np.abs(posterior_division_kl(posterior))
        tolerance = 1e-9 * moments.system.condition_number * (scale + 1e-12)
        assert np.all(np.abs(values - eigenbasis.kl_by_variable[name]) <= tolerance)
