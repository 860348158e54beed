"""Properties of the linear-response correction on small random hidden Markov models.

The covariance kernel is checked against direct enumeration of every state
path. J is checked against central finite differences of the library's own
CAVI iteration (forward-backward through ``HiddenMarkovFactor.update_block``,
then ``update_global``) for Poisson and Gaussian emissions. Division plus
the response term is checked against one Newton step on the fixed-point
equations without a sequence, with the Newton Jacobian also taken by
finite differences.
"""

import itertools
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from fg_influence.exceptions import ConvergenceWarning
from fg_influence.graph.blocks import update_block
from fg_influence.inference.cavi import update_global
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import InfluenceResult
from fg_influence.influence import linear_response_hmm as lr_hmm
from fg_influence.kernels.hmm_response import chain_statistics_covariance
from fg_influence.models.hmm import HiddenMarkovModel, build_hmm_graph, sequences_to_ragged

seeds = st.integers(0, 2**32 - 1)


# The covariance kernel against enumeration.


@st.composite
def chain_problems(draw):
    """Random log weights linear in random row features, for a few short sequences with 1-3 states."""
    seed = draw(seeds)
    k = draw(st.integers(1, 3))
    q = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    scale = draw(st.floats(0.1, 5.0))
    rng = np.random.default_rng(seed)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    features = rng.normal(size=(offsets[-1], q)) * scale
    # Some rows carry no emission term, as after removing a time step.
    features[rng.random(offsets[-1]) < 0.2] = 0.0
    emission_weights = rng.normal(size=(k, q))
    return {
        "log_initial": rng.normal(size=k) * scale,
        "log_transition": rng.normal(size=(k, k)) * scale,
        "log_emission": features @ emission_weights.T,
        "features": features,
        "offsets": offsets,
        "use_initial": rng.random(len(lengths)) < 0.7,
    }


def enumerated_covariance(problem, sequence):
    """Cov_q(t) of one sequence's counts by summing over all K^T state paths."""
    k = problem["log_transition"].shape[0]
    q = problem["features"].shape[1]
    rows = np.arange(problem["offsets"][sequence], problem["offsets"][sequence + 1])
    size = k + k * k + k * q
    counts, scores = [], []
    for path in itertools.product(range(k), repeat=rows.size):
        t = np.zeros(size)
        score = 0.0
        if problem["use_initial"][sequence]:
            t[path[0]] += 1.0
            score += problem["log_initial"][path[0]]
        for step in range(rows.size - 1):
            t[k + path[step] * k + path[step + 1]] += 1.0
            score += problem["log_transition"][path[step], path[step + 1]]
        for step, row in enumerate(rows):
            start = k + k * k + path[step] * q
            t[start:start + q] += problem["features"][row]
            score += problem["log_emission"][row, path[step]]
        counts.append(t)
        scores.append(score)
    counts = np.array(counts)
    weights = np.exp(np.array(scores) - logsumexp(scores))
    centred = counts - weights @ counts
    return centred.T @ (centred * weights[:, None])


@settings(max_examples=100)
@given(chain_problems())
def test_covariance_kernel_matches_enumeration(problem):
    n_sequences = problem["offsets"].size - 1
    expected = sum(enumerated_covariance(problem, s) for s in range(n_sequences))
    computed = chain_statistics_covariance(
        problem["log_initial"], problem["log_transition"], problem["log_emission"], problem["features"],
        problem["offsets"], problem["use_initial"], np.arange(n_sequences, dtype=np.int64))
    # Counts are at most 5 and features at most about 20 in size, so the
    # covariance entries are below about 1e3; both routes round at 1e-16
    # relative per term over at most 3^5 paths.
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(computed, expected, rtol=0, atol=1e-11 * scale)
    # A covariance is symmetric, and the kernel builds each column separately.
    np.testing.assert_allclose(computed, computed.T, rtol=0, atol=1e-12 * scale)


# Small random hidden Markov models.


@st.composite
def hmm_problems(draw, emission):
    """Sequences from a random K-state chain with well-separated Poisson or Gaussian emissions."""
    seed = draw(seeds)
    k = draw(st.integers(1, 3))
    n_sequences = draw(st.integers(3, 6))
    rng = np.random.default_rng(seed)
    stay = draw(st.floats(0.5, 0.95))
    transition = np.full((k, k), (1.0 - stay) / max(k - 1, 1))
    np.fill_diagonal(transition, stay if k > 1 else 1.0)

    sequences = []
    for _ in range(n_sequences):
        length = int(rng.integers(2, 9))
        states = [int(rng.integers(k))]
        for _ in range(length - 1):
            states.append(int(rng.choice(k, p=transition[states[-1]])))
        states = np.array(states)
        if emission == "poisson":
            rates = 2.0 * 4.0 ** np.arange(k)
            sequences.append(rng.poisson(rates[states]).astype(float))
        else:
            means = 3.0 * np.arange(k)
            sequences.append(means[states] + rng.normal(size=length))
    # Random row covariates: emission weights in {0, 0.5, 1} and sequences
    # without an initial term, as the graph allows for time-step refits.
    covariates = None
    if draw(st.booleans()):
        values, _ = sequences_to_ragged(sequences)
        covariates = np.ones((values.size, 2))
        covariates[:, 0] = rng.choice([0.0, 0.5, 1.0], size=values.size, p=[0.15, 0.15, 0.7])
        covariates[:, 1] = rng.random(values.size) < 0.7
    return {"sequences": sequences, "k": k, "emission": emission, "covariates": covariates}


def fit(problem, tol):
    """Fit the problem's graph by the model's priors and CAVI, without failing on a ConvergenceWarning."""
    model = HiddenMarkovModel(problem["k"], emission=problem["emission"], tol=tol, max_iter=20000)
    values, offsets = sequences_to_ragged(problem["sequences"])
    priors = model.priors(values)
    graph = build_hmm_graph(values, offsets, emission=problem["emission"], covariates=problem["covariates"],
                            **priors)
    from fg_influence.inference import fit_cavi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_cavi(graph, tol=tol, max_iter=20000)


def refreshed(posterior):
    """The posterior with its chains recomputed from its globals, so every message is taken at g."""
    state = Posterior(posterior.graph, dict(posterior.globals), dict(posterior.locals), posterior.data)
    update_block(state, "states")
    return state


def cavi_iteration(system, coords, graph, data):
    """One CAVI iteration of the library (forward-backward, then the globals) from coordinates ``coords``."""
    state = Posterior(graph, system.to_globals(coords), {}, data)
    update_block(state, "states")
    for name in system.variables:
        update_global(state, name)
    natural = {name: state.globals[name].natural_params() for name in system.variables}
    initial, transition, emission = system.variables
    return system.layout.pack(natural[initial][0], natural[transition][0],
                              system.emission_coordinates.pack(natural[emission]))


def finite_difference_jacobian(function, coords, scale):
    """Central differences of ``function`` along each coordinate, step scale * 1e-6."""
    columns = []
    for j in range(coords.size):
        step = np.zeros_like(coords)
        step[j] = 1e-6 * scale[j]
        columns.append((function(coords + step) - function(coords - step)) / (2 * step[j]))
    return np.stack(columns, axis=1)


def reduced_problem(posterior, site):
    """The graph and data without one sequence."""
    graph = posterior.graph.without_sites([site])
    return graph, {"x": graph.variables["x"].data}


@settings(max_examples=12)
@given(problem=st.one_of(hmm_problems("poisson"), hmm_problems("gaussian")))
def test_jacobian_matches_finite_differences(problem):
    # J = dS/dg is exact at any g, but a loose fit can stop where J has an
    # eigenvalue above 1 (1 of 300 random problems at tol 1e-6, none of 300
    # at 1e-10), and the library then rejects it.
    posterior = fit(problem, tol=1e-10)
    system = lr_hmm.build_hidden_markov_response_system(posterior, warn=False)
    coords = system.coordinates
    scale = np.abs(coords) + 1.0
    numeric = finite_difference_jacobian(
        lambda g: cavi_iteration(system, g, posterior.graph, posterior.data), coords, scale)

    # Compare column by column in the scaled coordinates the steps were taken
    # in. Central differences with relative step 1e-6 have truncation error
    # near 1e-12 and rounding error near 1e-10 relative to |g| (the Psi
    # coordinates reach about 1e3), so 1e-6 of the largest scaled entry
    # leaves a wide margin while a wrong term of J shows at order 1.
    analytic = system.jacobian * scale[None, :]
    numeric = numeric * scale[None, :]
    tolerance = 1e-6 * max(1.0, np.abs(analytic).max())
    assert np.abs(numeric - analytic).max() <= tolerance


@settings(max_examples=12)
@given(problem=st.one_of(hmm_problems("poisson"), hmm_problems("gaussian")))
def test_jacobian_is_sum_of_sequence_terms(problem):
    posterior = fit(problem, tol=1e-10)
    system = lr_hmm.build_hidden_markov_response_system(posterior, warn=False)
    total = sum(system.site_jacobian(s) for s in range(system.n_sites))
    # The same kernel summed over one sequence at a time; only the order of
    # the floating-point sums differs.
    scale = max(1.0, np.abs(system.jacobian).max())
    np.testing.assert_allclose(total, system.jacobian, rtol=0, atol=1e-10 * scale)

    # J is similar to B = L^T V L, symmetric positive semi-definite, so its
    # eigenvalues are real and non-negative. They are below 1 at a stable fit.
    eigenvalues = np.sort(np.linalg.eigvals(system.jacobian).real)
    assert np.allclose(eigenvalues, system.eigenvalues, atol=1e-8)
    assert system.eigenvalues.min() > -1e-10


@settings(max_examples=10)
@given(problem=st.one_of(hmm_problems("poisson"), hmm_problems("gaussian")), pick=seeds)
def test_division_plus_response_is_newton_step(problem, pick):
    posterior = fit(problem, tol=1e-14)
    system = lr_hmm.build_hidden_markov_response_system(refreshed(posterior), warn=False)
    site = int(np.random.default_rng(pick).integers(system.n_sites))
    reduced_graph, reduced_data = reduced_problem(posterior, site)
    coords = system.coordinates

    def residual(g):
        return g - cavi_iteration(system, g, reduced_graph, reduced_data)

    # F(g) = g - prior - S_without_s(g). At the fitted g it equals s_s up to
    # how far the fit is from its fixed point.
    value = residual(coords)
    fixed_point_gap = np.abs(coords - cavi_iteration(system, coords, posterior.graph, posterior.data)).max()
    scale = np.abs(coords) + 1.0
    derivative = finite_difference_jacobian(residual, coords, scale)
    newton = coords - np.linalg.solve(derivative, value)

    # Division plus the response term with J - J_s is the same step.
    library = lr_hmm.newton_corrected_coordinates(system, site)
    step = np.abs(newton - coords).max()
    # Finite differences carry about 1e-8 relative error into the step, and a
    # fit that is off its fixed point by `gap` moves F by as much, amplified
    # by the condition number of I - J.
    tolerance = 1e-6 * step + 10 * system.condition_number * fixed_point_gap
    assert np.abs(library - newton).max() <= tolerance

    # Division (g - s_s) plus the response term -(I - J + J_s)^-1 (J - J_s) s_s.
    message = system.site_messages[site]
    without = system.jacobian - system.site_jacobian(site)
    response = -np.linalg.solve(np.eye(coords.size) - without, without @ message)
    # Two dense solves of the same system, rounding amplified by its condition.
    np.testing.assert_allclose(library, coords - message + response, rtol=0,
                               atol=1e-9 * system.condition_number * (np.abs(coords).max() + 1.0))


@settings(max_examples=10)
@given(problem=st.one_of(hmm_problems("poisson"), hmm_problems("gaussian")))
def test_corrected_kl_is_exact_kl_of_corrected_posterior(problem):
    posterior = fit(problem, tol=1e-10)
    summaries = lr_hmm.all_sequence_summaries(posterior, warn=False)
    system = summaries.system
    identity = np.eye(system.layout.size)
    for site in range(system.n_sites):
        # An independent dense LU solve of (I - J) delta = -s_s.
        delta = np.linalg.solve(identity - system.jacobian, -system.site_messages[site])
        coords = system.coordinates + delta
        try:
            corrected = system.to_globals(coords)
        except ValueError:
            assert summaries.improper[site]
            continue
        assert not summaries.improper[site]
        for name in system.variables:
            expected = float(np.sum(posterior.globals[name].kl(corrected[name])))
            # The batched KL and the per-site family objects round differently:
            # a KL is a difference of log-partition terms of order 1e2, so it
            # carries absolute rounding near 1e-14 besides 1e-8 relative.
            assert abs(summaries.kl_by_variable[name][site] - expected) <= 1e-8 * abs(expected) + 1e-12
            assert summaries.kl_by_variable[name][site] >= 0.0


@settings(max_examples=10)
@given(problem=hmm_problems("poisson"))
def test_one_state_response_equals_division(problem):
    problem = dict(problem, k=1)
    posterior = fit(problem, tol=1e-10)
    response = InfluenceResult(posterior, method="linear-response")
    division = InfluenceResult(posterior)
    # With one state every chain is deterministic, V = 0 and so J = 0: the
    # correction adds nothing.
    assert np.abs(response._response.system.jacobian).max() == 0.0
    # The corrected coordinates still pass through solves with the Cholesky
    # factor of H, which round at about 1e-16 cond(H) |g|, and a KL between
    # nearby posteriors cancels several digits of its terms (measured up to
    # 1.5e-12 relative).
    np.testing.assert_allclose(response.kl, division.kl, rtol=1e-9, atol=0)
