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
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from fg_influence.exceptions import ConvergenceWarning
from fg_influence.graph.blocks import update_block
from fg_influence.inference.cavi import update_global
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import InfluenceResult
from fg_influence.influence import linear_response_hmm as lr_hmm
from fg_influence.influence.linear_response import SingularResponseError
from fg_influence.kernels.hmm import pairwise_marginals
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


def numerical_newton_step(system, posterior, reduced_graph, reduced_data):
    """Return one Newton step from the fit on F(g) = g - CAVI(g) of the reduced model, and the fit's gap to its fixed point.

    The Jacobian of F comes from central finite differences.
    """
    coords = system.coordinates

    def residual(g):
        return g - cavi_iteration(system, g, reduced_graph, reduced_data)

    fixed_point_gap = np.abs(coords - cavi_iteration(system, coords, posterior.graph, posterior.data)).max()
    derivative = finite_difference_jacobian(residual, coords, np.abs(coords) + 1.0)
    return coords - np.linalg.solve(derivative, residual(coords)), fixed_point_gap


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
    # F(g) = g - prior - S_without_s(g). At the fitted g it equals s_s up to
    # how far the fit is from its fixed point.
    newton, fixed_point_gap = numerical_newton_step(system, posterior, reduced_graph, reduced_data)

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


# Time steps of a single series.


@st.composite
def series_problems(draw, emission):
    """One short series from a random K-state chain, short enough to sum over all K^T state paths."""
    seed = draw(seeds)
    k = draw(st.integers(1, 3))
    length = draw(st.integers(3, 7))
    stay = draw(st.floats(0.5, 0.95))
    rng = np.random.default_rng(seed)
    states = [int(rng.integers(k))]
    for _ in range(length - 1):
        stay_here = k == 1 or rng.random() < stay
        states.append(states[-1] if stay_here else int((states[-1] + rng.integers(1, k)) % k))
    states = np.array(states)
    if emission == "poisson":
        series = rng.poisson(2.0 * 4.0 ** states).astype(float)
    else:
        series = 3.0 * states + rng.normal(size=length)
    return {"sequences": [series], "k": k, "emission": emission, "covariates": None}


def time_step_system(posterior):
    """Build the time-step response system, skipping the example where the fit is a saddle point.

    A short series with more states than it can tell apart can stop where J
    has an eigenvalue of at least 1, for example [-1.7, 3.9, 6.5, 7.2] with 3
    states, two of them fitted with means 4.90 and 4.76. The library then
    raises SingularResponseError, which other tests check.
    """
    try:
        return lr_hmm.build_time_step_response_system(posterior, warn=False)
    except SingularResponseError:
        reject()


def cut_graph(posterior, problem, step):
    """The graph without time step ``step``, built with row covariates as the exact refit builds it."""
    values = posterior.graph.variables["x"].data[:, 0]
    covariates = np.ones((values.size, 2))
    covariates[step] = 0.0
    offsets = np.array([0, values.size] if step == 0 else [0, step, values.size])
    priors = HiddenMarkovModel(problem["k"], emission=problem["emission"]).priors(values)
    graph = build_hmm_graph(values, offsets, emission=problem["emission"], covariates=covariates, **priors)
    return graph, {"x": values}


def enumerated_log_normaliser(log_initial, log_transition, log_emission, removed=None):
    """Log of the sum over all state paths of the chain's weights, without time step ``removed``'s terms.

    Without step t the path keeps every term except t's emission and the
    transition into t (the initial-state term for t = 0).
    """
    length, k = log_emission.shape
    scores = []
    for path in itertools.product(range(k), repeat=length):
        score = 0.0 if removed == 0 else log_initial[path[0]]
        for step in range(length):
            if step == removed:
                continue
            score += log_emission[step, path[step]]
            if step > 0:
                score += log_transition[path[step - 1], path[step]]
        scores.append(score)
    return logsumexp(scores)


def enumerated_counts(system, removed=None):
    """Expected counts in g's layout as central differences of the enumerated log-normaliser.

    The counts are the gradient of log Z in the chain's natural parameters:
    the initial and transition log weights, and for emission coordinate
    (k, q) the log weights of state k moved by the rows' feature q.
    """
    log_initial, log_transition, log_emission, features = system.chain_inputs[:4]
    k, q = system.layout.n_states, system.layout.n_emission
    counts = np.empty(system.layout.size)
    for j in range(system.layout.size):
        pieces = [log_initial.copy(), log_transition.copy(), log_emission.copy()]
        direction = [np.zeros_like(piece) for piece in pieces]
        if j < k:
            direction[0][j] = 1.0
        elif j < k + k * k:
            direction[1].flat[j - k] = 1.0
        else:
            state, column = divmod(j - k - k * k, q)
            direction[2][:, state] = features[:, column]
        # A step of 1e-6 relative to the direction's size keeps the truncation
        # error of central differences near 1e-12 relative.
        h = 1e-6 / max(1.0, np.abs(direction[2]).max())
        up = enumerated_log_normaliser(*(p + h * d for p, d in zip(pieces, direction)), removed=removed)
        down = enumerated_log_normaliser(*(p - h * d for p, d in zip(pieces, direction)), removed=removed)
        counts[j] = (up - down) / (2 * h)
    return counts


@settings(max_examples=20)
@given(problem=st.one_of(series_problems("poisson"), series_problems("gaussian")), pick=seeds)
def test_time_step_count_change_matches_finite_differences(problem, pick):
    posterior = fit(problem, tol=1e-10)
    steps = time_step_system(posterior)
    step = int(np.random.default_rng(pick).integers(steps.n_sites))
    expected = enumerated_counts(steps.system, removed=step) - enumerated_counts(steps.system)
    # Central differences with step h carry rounding near 1e-16 |log Z| / h.
    # Over 60 random series of this kind the error was at most 6e-8 of the
    # largest count, so 1e-5 leaves a wide margin, while a missing or extra
    # marginal moves a count by a probability, usually 0.1 or more.
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(steps.count_changes[step], expected, rtol=0, atol=1e-5 * scale)


@settings(max_examples=10)
@given(problem=st.one_of(series_problems("poisson"), series_problems("gaussian")), pick=seeds)
@example(problem={"sequences": [np.array([28.0, 24.0, 30.0, 24.0, 48.0, 28.0])], "k": 3,
                  "emission": "poisson", "covariates": None}, pick=217)
def test_time_step_response_is_newton_step(problem, pick):
    posterior = fit(problem, tol=1e-14)
    steps = time_step_system(refreshed(posterior))
    system = steps.system
    step = int(np.random.default_rng(pick).integers(steps.n_sites))
    reduced_graph, reduced_data = cut_graph(posterior, problem, step)
    coords = system.coordinates
    # F(g) = g - prior - S_t(g) of the model without the step. At the fitted
    # g it equals S(g) - S_t(g) up to how far the fit is from its fixed point.
    newton, fixed_point_gap = numerical_newton_step(system, posterior, reduced_graph, reduced_data)

    library = lr_hmm.newton_time_step_coordinates(steps, step)
    size = np.abs(newton - coords).max()
    # As for sequences: finite differences carry about 1e-8 relative error
    # into the step. The gap to the fixed point moves F by as much, and the
    # step by up to ||(I - J_t)^-1|| times that. The norm reaches 4e3 when
    # the cut leaves two states nearly the same (the Poisson series
    # [28, 24, 30, 24, 48, 28] with 3 states, without the 48).
    jacobian = steps.step_jacobian(step)
    newton_matrix = np.eye(coords.size) - jacobian
    amplification = np.linalg.norm(np.linalg.inv(newton_matrix), 2)
    tolerance = 1e-6 * size + 10 * amplification * fixed_point_gap
    assert np.abs(library - newton).max() <= tolerance

    # Division removes step t's own counts m_t: the pairwise marginal into
    # t (the first marginal for t = 0) and t's emission statistics. The
    # response term is the cut's change of the other steps' counts plus
    # (I - J_t)^-1 J_t (S_t(g) - S(g)).
    log_initial, log_transition, log_emission, features = system.chain_inputs[:4]
    gamma, pairs, _ = pairwise_marginals(log_initial, log_transition, log_emission, True)
    k = system.layout.n_states
    own_initial = gamma[0] if step == 0 else np.zeros(k)
    own_transition = pairs[step - 1] if step > 0 else np.zeros((k, k))
    own = system.layout.pack(own_initial, own_transition, gamma[step][:, None] * features[step][None, :])
    change = steps.count_changes[step]
    response = (change + own) + np.linalg.solve(newton_matrix, jacobian @ change)
    # Two dense solves of the same system, rounding amplified by its condition.
    np.testing.assert_allclose(library, coords - own + response, rtol=0,
                               atol=1e-9 * np.linalg.cond(newton_matrix) * (np.abs(coords).max() + 1.0))


@settings(max_examples=10)
@given(problem=st.one_of(series_problems("poisson"), series_problems("gaussian")))
def test_time_step_kl_at_corrected_posterior(problem):
    posterior = fit(problem, tol=1e-10)
    time_step_system(posterior)
    summaries = lr_hmm.all_time_step_summaries(posterior, warn=False)
    steps = summaries.system
    system = steps.system
    identity = np.eye(system.layout.size)
    for step in range(steps.n_sites):
        # An independent dense LU solve of (I - J) delta = S_t(g) - S(g).
        delta = np.linalg.solve(identity - system.jacobian, steps.count_changes[step])
        try:
            corrected = system.to_globals(system.coordinates + delta)
        except ValueError:
            assert summaries.improper[step]
            continue
        assert not summaries.improper[step]
        for name in system.variables:
            expected = float(np.sum(posterior.globals[name].kl(corrected[name])))
            # As for sequences, the batched KL and the family objects round
            # differently. A KL is a difference of log-partition terms of up
            # to about 1e3, so besides 1e-8 relative it carries absolute
            # rounding, measured up to 1.4e-12 on a 3-step Gaussian series.
            assert abs(summaries.kl_by_variable[name][step] - expected) <= 1e-8 * abs(expected) + 1e-10
