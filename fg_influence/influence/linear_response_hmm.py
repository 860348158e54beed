"""Linear-response correction for the hidden Markov model, one site per sequence.

Division removes sequence s's expected counts from the global posteriors
with every other sequence's chain q(z_r) held at its fitted value.
Refitting without the sequence also moves the other chains, which moves
the globals further. This module adds that response to first order, as
:mod:`fg_influence.influence.linear_response` does for mixtures.

Coordinates. g contains the natural parameters of the globals (see
:mod:`fg_influence.graph.hmm_factors`): the initial Dirichlet's (K), the
transition Dirichlet rows' (K x K, row major) and, state by state, the
emission posterior's Q count coordinates, so G = K + K^2 + K Q. For Poisson
emissions these are (shape - 1, -rate) of the Gamma (Q = 2), and for
Gaussian emissions (t, kappa, Psi, nu - 1) of the one-dimensional
Normal-Wishart (Q = 4). Each coordinate is paired with an expected
statistic of q, mu(g), the gradient of the globals' log-partition:
E[ln pi_k], E[ln A_ij], (E[ln lambda_k], E[lambda_k]) for Poisson and
(E[lambda mu], -E[lambda mu^2] / 2, -E[lambda] / 2, E[ln lambda] / 2) for
Gaussian emissions. The entries paired with the state occupancy,
-E[lambda] for Poisson and -E[lambda mu^2] / 2 and E[ln lambda] / 2 for
Gaussian emissions, make up the emission's expected negative
log-partition (up to a constant).

Fixed point. Sequence s's chain is q(z_s) = exp(<t_s(z), theta> - log Z_s(theta)),
where t_s(z) are its counts in g's layout (the first state, the
transitions, and each state's emission statistics f(x) = (x, -1) or
(x, 1, x^2, 1)) and theta = mu(g). Its message is E_q[t_s], the gradient
of log Z_s, so one CAVI iteration (forward-backward for every sequence,
then every global from the counts) maps g to prior + S(g),
S(g) = sum_s E_q[t_s], and

    J = dS/dg = V H,   V = sum_s Cov_q(t_s),   H = d mu / dg.

V is the sum of the chains' Hessians of log Z_s, computed exactly by
forward-mode differentiation of forward-backward
(:func:`fg_influence.kernels.hmm_response.chain_statistics_covariance`).
H is block-diagonal: the Dirichlet Hessians diag(psi'(alpha)) -
psi'(sum alpha) for the initial state and for each transition row, and the
emission log-partition Hessians per state. With H = L L^T, J is similar to
the symmetric positive semi-definite B = L^T V L, whose eigenvalues lie in
[0, 1) at a stable fixed point. The CAVI map updates every global from the
chains alone, so the library's own iteration has exactly this Jacobian.

Removing sequence s and linearising the fixed-point equation at the fit
gives delta_g_s = -(I - J)^-1 s_s, division (-s_s) plus the response term,
with one Cholesky factorisation of the G x G matrix I - B for every
sequence. G is small, so each sequence's corrected globals are built and
compared with the fit exactly.

Time steps of a single series. Removing time step t (its emission and the
transition into it, or the initial-state term for t = 0) cuts the chain
in two, so the cut model has its own statistic map S_t and the refit
solves g' = prior + S_t(g'). Linearising at the fit gives

    g' - g = (I - J)^-1 (S_t(g) - S(g)),

with the same J. The direct change S_t(g) - S(g) comes from one
forward-backward pass over the cut series at the fitted globals. It
contains minus step t's own counts (all that division keeps) and the
change of every other step's marginals caused by the cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.special import polygamma

from .._validation import check_site_indices
from ..families import Dirichlet, Gamma, NormalWishart
from ..graph.blocks import block_names
from ..graph.hmm_factors import GaussianHMMFactor, HiddenMarkovFactor, PoissonHMMFactor, row_weights
from ..inference.posterior import Posterior
from ..kernels.hmm import forward_backward
from ..kernels.hmm_response import chain_statistics_covariance
from .division import site_messages
from .linear_response import (  # noqa: F401  (the exception types are re-exported for callers)
    IllConditionedResponseWarning,
    SingularResponseError,
    check_conditioning,
    hessian_cholesky,
    normal_wishart_hessian,
)
from .linear_response_blocks import (  # noqa: F401  (newton_corrected_coordinates is re-exported)
    DenseResponseSystem,
    corrected_global_kl,
    newton_corrected_coordinates,
    symmetric_form,
)

__all__ = [
    "HiddenMarkovLayout",
    "HiddenMarkovResponseSystem",
    "HiddenMarkovLinearResponseSummaries",
    "TimeStepResponseSystem",
    "TimeStepLinearResponseSummaries",
    "all_sequence_summaries",
    "all_time_step_summaries",
    "build_time_step_response_system",
    "newton_time_step_coordinates",
    "build_hidden_markov_response_system",
    "hidden_markov_factor",
    "is_hidden_markov",
    "newton_corrected_coordinates",
]


# The emission families and their coordinates.


@dataclass(frozen=True)
class EmissionCoordinates:
    """Map between one emission family's natural parameters and its Q coordinates per state.

    Attributes
    ----------
    family : type
        The emission posterior's family.
    names : tuple of str
        Names of the Q coordinates.
    row_features : callable
        ``row_features(values)`` returns the statistics f(x) of each row,
        shape (n_rows, Q), paired with the coordinates.
    pack : callable
        Natural parameters (leading axes, then K) to coordinates (..., K, Q).
    unpack : callable
        Coordinates (..., K, Q) to the family's natural parameters.
    hessian : callable
        ``hessian(dist)`` returns d mu / dg per state, shape (K, Q, Q).
    """

    family: type
    names: tuple[str, ...]
    row_features: Callable
    pack: Callable
    unpack: Callable
    hessian: Callable


def _gamma_hessian(dist: Gamma) -> np.ndarray:
    """d(E[ln x], E[x]) / d(shape - 1, -rate) per state, shape (K, 2, 2)."""
    shape, rate = np.asarray(dist.shape, dtype=float), np.asarray(dist.rate, dtype=float)
    out = np.empty(shape.shape + (2, 2))
    out[..., 0, 0] = polygamma(1, shape)
    out[..., 0, 1] = out[..., 1, 0] = 1.0 / rate
    out[..., 1, 1] = shape / rate**2
    return out


POISSON_COORDINATES = EmissionCoordinates(
    family=Gamma,
    names=("shape_minus_one", "minus_rate"),
    row_features=lambda values: np.column_stack([values, -np.ones_like(values)]),
    pack=lambda natural: np.stack([natural[0], natural[1]], axis=-1),
    unpack=lambda coords: (coords[..., 0].copy(), coords[..., 1].copy()),
    hessian=_gamma_hessian,
)

# One-dimensional Normal-Wishart count coordinates (t, kappa, Psi, nu - 1),
# in the order of ``normal_wishart_hessian``.
GAUSSIAN_COORDINATES = EmissionCoordinates(
    family=NormalWishart,
    names=("t", "kappa", "psi", "dof_offset"),
    row_features=lambda values: np.column_stack([values, np.ones_like(values), values**2, np.ones_like(values)]),
    pack=lambda natural: np.stack([natural[0][..., 0], natural[1], natural[2][..., 0, 0], natural[3]], axis=-1),
    unpack=lambda coords: (coords[..., 0:1].copy(), coords[..., 1].copy(), coords[..., 2, None, None].copy(),
                           coords[..., 3].copy()),
    hessian=normal_wishart_hessian,
)

#: Coordinates of each HMM factor's emission family, looked up along the factor's class hierarchy.
EMISSION_COORDINATES: dict[type, EmissionCoordinates] = {
    PoissonHMMFactor: POISSON_COORDINATES,
    GaussianHMMFactor: GAUSSIAN_COORDINATES,
}


def _emission_coordinates(factor: HiddenMarkovFactor) -> EmissionCoordinates | None:
    for cls in type(factor).__mro__:
        if cls in EMISSION_COORDINATES:
            return EMISSION_COORDINATES[cls]
    return None


# The model's factor and its layout.


def is_hidden_markov(posterior: Posterior) -> bool:
    """Return True when the graph contains a hidden Markov factor."""
    return any(isinstance(f, HiddenMarkovFactor) for f in posterior.graph.factors.values())


def hidden_markov_factor(posterior: Posterior) -> tuple[HiddenMarkovFactor, EmissionCoordinates]:
    """Find the hidden Markov factor of the graph and its emission coordinates.

    Raises
    ------
    NotImplementedError
        If the graph is not a hidden Markov model this route supports: one
        ``PoissonHMMFactor`` or ``GaussianHMMFactor`` that owns the graph's
        only block, no local categorical variable, and no global beyond the
        initial-state, transition and emission parameters.
    """
    graph = posterior.graph
    factors = [f for f in graph.factors.values() if isinstance(f, HiddenMarkovFactor)]
    blocks = block_names(graph)
    locals_ = [v.name for v in graph.variables_of_role("local")]
    supported = len(factors) == 1 and len(graph.factors) == 1 and blocks == [factors[0].chain] and not locals_
    if supported:
        factor = factors[0]
        expected = {factor.initial, factor.transition, factor.emission}
        supported = {v.name for v in graph.variables_of_role("global")} == expected
    if not supported:
        raise NotImplementedError(
            f"the linear-response correction for hidden Markov models supports a graph with one hidden "
            f"Markov factor and nothing else (its chain block and its initial-state, transition and "
            f"emission globals); this graph has factors "
            f"{sorted(type(f).__name__ for f in graph.factors.values())}, blocks {blocks} and local "
            f"variables {locals_}. Use method='division'"
        )
    coordinates = _emission_coordinates(factor)
    if coordinates is None:
        supported_types = sorted(cls.__name__ for cls in EMISSION_COORDINATES)
        raise NotImplementedError(
            f"the linear-response correction is not available for hidden Markov factor {factor.name!r} "
            f"of type {type(factor).__name__}: its emission family has no coordinates registered "
            f"(supported: {supported_types}). Use method='division'"
        )
    return factor, coordinates


@dataclass(frozen=True)
class HiddenMarkovLayout:
    """Positions of each global's natural parameters in g, for K states and Q emission coordinates.

    g = (initial (K), transition (K * K, row major), emission (K * Q, state major)).
    """

    n_states: int
    n_emission: int

    @property
    def size(self) -> int:
        k = self.n_states
        return k + k * k + k * self.n_emission

    @property
    def initial(self) -> slice:
        return slice(0, self.n_states)

    @property
    def transition(self) -> slice:
        k = self.n_states
        return slice(k, k + k * k)

    @property
    def emission(self) -> slice:
        return slice(self.transition.stop, self.size)

    def names(self, initial: str, transition: str, emission: str, emission_names) -> tuple[str, ...]:
        k = self.n_states
        return (tuple(f"{initial}.concentration_minus_one[{i}]" for i in range(k))
                + tuple(f"{transition}.concentration_minus_one[{i},{j}]" for i in range(k) for j in range(k))
                + tuple(f"{emission}.{name}[{i}]" for i in range(k) for name in emission_names))

    def pack(self, initial: np.ndarray, transition: np.ndarray, emission: np.ndarray) -> np.ndarray:
        """Coordinates (..., G) from initial (..., K), transition (..., K, K) and emission (..., K, Q) parts."""
        lead = np.shape(initial)[:-1]
        return np.concatenate([np.asarray(initial, dtype=float),
                               np.reshape(transition, lead + (-1,)),
                               np.reshape(emission, lead + (-1,))], axis=-1)


def log_partition_hessian(layout: HiddenMarkovLayout, initial: Dirichlet, transition: Dirichlet,
                          emission_hessian: np.ndarray) -> np.ndarray:
    """H = d mu / dg, the Hessian of the globals' log-partition, shape (G, G).

    The Dirichlet blocks are diag(psi'(alpha)) - psi'(sum alpha), once for
    the initial state and once per transition row. Unlike in a mixture, the
    coupling term does not drop out of J: a sequence's transition counts out
    of state i do not sum to a constant.
    """
    k, q = layout.n_states, layout.n_emission
    hessian = np.zeros((layout.size, layout.size))

    def dirichlet_block(alpha):
        if alpha.size == 1:
            # With one state E[ln pi] = 0 whatever alpha is, so this block of
            # H is 0. The count it pairs with is constant, so V's row and
            # column are 0 as well, and J = V H does not depend on the value
            # put here. 1 keeps H invertible for the Cholesky factor.
            return np.ones((1, 1))
        return np.diag(polygamma(1, alpha)) - polygamma(1, alpha.sum())

    hessian[layout.initial, layout.initial] = dirichlet_block(initial.concentration)
    for i in range(k):
        rows = slice(layout.transition.start + i * k, layout.transition.start + (i + 1) * k)
        hessian[rows, rows] = dirichlet_block(transition.concentration[i])
    for i in range(k):
        rows = slice(layout.emission.start + i * q, layout.emission.start + (i + 1) * q)
        hessian[rows, rows] = emission_hessian[i]
    return 0.5 * (hessian + hessian.T)


# The response system.


@dataclass
class HiddenMarkovResponseSystem(DenseResponseSystem):
    """J = dS/dg at a fitted hidden Markov posterior, and (I - J)^-1 by Cholesky.

    Attributes
    ----------
    layout : HiddenMarkovLayout
    names : tuple of str
        Name of each of the G coordinates.
    variables : tuple of str
        Names of the initial-state, transition and emission globals.
    coordinates : ndarray, shape (G,)
        Fitted g.
    prior_coordinates : ndarray, shape (G,)
    site_messages : ndarray, shape (S, G)
        Each sequence's expected counts s_s at the fit (those division subtracts).
    hessian : ndarray, shape (G, G)
        H, the Hessian of the globals' log-partition.
    cholesky : ndarray, shape (G, G)
        Lower Cholesky factor L of H.
    missing_information : ndarray, shape (G, G)
        V = sum_s Cov_q(t_s), with the chains q(z_s) that the fitted globals induce.
    symmetric : ndarray, shape (G, G)
        B = L^T V L.
    eigenvalues : ndarray, shape (G,)
        Of J (equal to those of B), ascending.
    condition_number : float
        Of I - J, as (1 - smallest) / (1 - largest) eigenvalue.
    """

    layout: HiddenMarkovLayout
    names: tuple
    variables: tuple
    coordinates: np.ndarray
    prior_coordinates: np.ndarray
    site_messages: np.ndarray
    hessian: np.ndarray
    cholesky: np.ndarray
    missing_information: np.ndarray
    symmetric: np.ndarray
    eigenvalues: np.ndarray
    condition_number: float
    emission_coordinates: EmissionCoordinates = field(repr=False)
    chain_inputs: tuple = field(repr=False)

    def site_jacobian(self, site: int) -> np.ndarray:
        """J_s = Cov_q(t_s) H, sequence s's own term of J, shape (G, G)."""
        own = chain_statistics_covariance(*self.chain_inputs, np.array([site], dtype=np.int64))
        return 0.5 * (own + own.T) @ self.hessian

    def natural_params(self, coords: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        """Natural parameters of each global at coordinates of shape (..., G), by variable name."""
        coords = np.asarray(coords, dtype=float)
        layout = self.layout
        k, q = layout.n_states, layout.n_emission
        lead = coords.shape[:-1]
        initial, transition, emission = self.variables
        return {
            initial: (coords[..., layout.initial].copy(),),
            transition: (coords[..., layout.transition].reshape(lead + (k, k)).copy(),),
            emission: self.emission_coordinates.unpack(coords[..., layout.emission].reshape(lead + (k, q))),
        }

    def to_globals(self, coords: np.ndarray) -> dict:
        """Build the global posteriors at coordinates (G,); raise ValueError if one is improper."""
        natural = self.natural_params(coords)
        initial, transition, emission = self.variables
        return {initial: Dirichlet.from_natural(*natural[initial]),
                transition: Dirichlet.from_natural(*natural[transition]),
                emission: self.emission_coordinates.family.from_natural(*natural[emission])}


def chain_inputs(factor: HiddenMarkovFactor, coordinates: EmissionCoordinates, posterior: Posterior) -> tuple:
    """Arguments of the covariance kernel at the fitted globals, before the list of sequences.

    The chains are those the current globals induce (a fresh forward-backward
    pass), so J is dS/dg at the fitted g even when the stored chains are one
    iteration behind.
    """
    variable = posterior.graph.variables[factor.observed]
    values = variable.data[:, 0]
    log_initial, log_transition = factor._expected_logs(posterior)
    emission_weight, use_initial = row_weights(variable)
    log_emission = factor.log_emission(posterior, values) * emission_weight[:, None]
    features = coordinates.row_features(values) * emission_weight[:, None]
    return (np.ascontiguousarray(log_initial, dtype=float), np.ascontiguousarray(log_transition, dtype=float),
            np.ascontiguousarray(log_emission), np.ascontiguousarray(features),
            np.ascontiguousarray(variable.offsets, dtype=np.int64), np.ascontiguousarray(use_initial, dtype=bool))


#: Advice in the errors and warnings about I - J, for hidden Markov models.
ADVICE = {
    "singular": "Refit with a smaller tol or a larger max_iter, use fewer states or stronger priors "
                "(a larger transition_concentration), or use method='division'",
    "cause": "often a state that is barely visited or two states with nearly the same emissions",
    "ill_conditioned": "use fewer states or stronger priors, or check the estimates against exact refits",
}


def build_hidden_markov_response_system(posterior: Posterior, *, warn: bool = True) -> HiddenMarkovResponseSystem:
    """Assemble J at a fitted hidden Markov posterior and factorise I - B.

    Raises
    ------
    NotImplementedError
        If the graph is not a supported hidden Markov model.
    SingularResponseError
        If J has an eigenvalue of at least 1: the fit is not a stable fixed
        point of CAVI (not converged, or two states that CAVI cannot tell apart).

    Warns
    -----
    IllConditionedResponseWarning
        If the condition number of I - J exceeds CONDITION_WARN.
    """
    factor, coordinates = hidden_markov_factor(posterior)
    graph = posterior.graph
    variables = (factor.initial, factor.transition, factor.emission)
    initial, transition, emission = (posterior.globals[name] for name in variables)
    k = initial.concentration.shape[0]
    layout = HiddenMarkovLayout(k, len(coordinates.names))

    def coordinates_of(dists):
        first, rows, states = dists
        return layout.pack(first.natural_params()[0], rows.natural_params()[0],
                           coordinates.pack(states.natural_params()))

    all_sites = np.arange(posterior.n_sites)
    messages = layout.pack(site_messages(posterior, factor.initial, all_sites)[0],
                           site_messages(posterior, factor.transition, all_sites)[0],
                           coordinates.pack(site_messages(posterior, factor.emission, all_sites)))

    hessian = log_partition_hessian(layout, initial, transition, coordinates.hessian(emission))
    chol = hessian_cholesky(hessian, [factor.initial, factor.transition, factor.emission])
    inputs = chain_inputs(factor, coordinates, posterior)
    information = chain_statistics_covariance(*inputs, all_sites.astype(np.int64))
    information = 0.5 * (information + information.T)
    b_sym, eigenvalues = symmetric_form(chol, information)
    condition = check_conditioning(float(eigenvalues[-1]), float(eigenvalues[0]), warn, ADVICE)
    return HiddenMarkovResponseSystem(
        layout=layout,
        names=layout.names(*variables, coordinates.names),
        variables=variables,
        coordinates=coordinates_of((initial, transition, emission)),
        prior_coordinates=coordinates_of(tuple(graph.variables[name].prior for name in variables)),
        site_messages=messages,
        hessian=hessian,
        cholesky=chol,
        missing_information=information,
        symmetric=b_sym,
        eigenvalues=eigenvalues,
        condition_number=condition,
        emission_coordinates=coordinates,
        chain_inputs=inputs,
    )


# All-sequence summaries.


class HiddenMarkovLinearResponseSummaries:
    """Per-sequence summaries of the linear-response corrected global posteriors, sequence axis first.

    Each sequence's corrected coordinates g - (I - J)^-1 s_s are turned into
    Dirichlet and emission posteriors and compared with the fit exactly. A
    corrected posterior is improper when a concentration, a Gamma shape or
    rate, a Normal-Wishart kappa or degrees of freedom, or its scale leaves
    the family. Such a sequence is flagged in ``improper`` and its KL is
    left at 0 (the result object reports +inf).

    Division offers no parameter shifts and no LOO log predictive density
    for the hidden Markov model, and neither does this correction:
    ``shift_names`` is empty and ``loo_log_predictive`` raises ValueError.

    Attributes
    ----------
    system : HiddenMarkovResponseSystem
    corrected : ndarray, shape (S, G)
        Corrected coordinates of every sequence.
    kl_by_variable : dict of str to ndarray, shape (S,)
        KL(q || q corrected) of each global, 0 for improper sequences.
    improper : ndarray of bool, shape (S,)
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True):
        self.posterior = posterior
        self.system = build_hidden_markov_response_system(posterior, warn=warn)
        self.corrected, self.kl_by_variable, self.improper = corrected_global_kl(posterior, self.system)

    @property
    def shift_names(self) -> list[str]:
        return []

    @cached_property
    def shifts(self) -> dict[str, np.ndarray]:
        return {}

    @property
    def loo_log_predictive(self) -> np.ndarray:
        raise ValueError(
            "the LOO log predictive density is not available for the hidden Markov model: its factor "
            "has no closed form for it, under division or under the linear-response correction"
        )


def all_sequence_summaries(posterior: Posterior, *, warn: bool = True) -> HiddenMarkovLinearResponseSummaries:
    """Linear-response KL of every sequence of a fitted hidden Markov model."""
    return HiddenMarkovLinearResponseSummaries(posterior, warn=warn)


# Time steps of a single series.


def cut_series_inputs(inputs: tuple, step: int) -> tuple:
    """Kernel arguments for a single series with time step ``step`` removed.

    The emission of row ``step`` gets weight 0, and the chain splits there:
    rows before ``step`` keep the series' initial term, and a second chain
    starts at ``step`` with weight 1 for every state. For step 0 the series
    stays one chain without its initial term. These are the row covariates
    that the exact refit of ``HiddenMarkovModel.time_step_influence`` uses.
    """
    log_initial, log_transition, log_emission, features, offsets, use_initial = inputs
    n_rows = int(offsets[-1])
    log_emission = log_emission.copy()
    log_emission[step] = 0.0
    features = features.copy()
    features[step] = 0.0
    if step == 0:
        offsets, use_initial = np.array([0, n_rows], dtype=np.int64), np.zeros(1, dtype=bool)
    else:
        offsets = np.array([0, step, n_rows], dtype=np.int64)
        use_initial = np.array([use_initial[0], False])
    return log_initial, log_transition, log_emission, features, offsets, use_initial


def expected_counts(layout: HiddenMarkovLayout, inputs: tuple) -> np.ndarray:
    """Sum over the inputs' chains of their expected counts, in g's layout, shape (G,).

    At the kernel arguments of fitted globals g this is S(g), the statistics
    one CAVI iteration adds to the priors.
    """
    log_initial, log_transition, log_emission, features, offsets, use_initial = inputs
    gamma, initial, transitions, _ = forward_backward(log_initial, log_transition, log_emission, offsets,
                                                      use_initial)
    return layout.pack((initial * use_initial[:, None]).sum(axis=0), transitions.sum(axis=0),
                       gamma.T @ features)


@dataclass
class TimeStepResponseSystem:
    """First-order response of the globals to removing each time step of a single series.

    It offers what :func:`corrected_global_kl` reads (``n_sites``,
    ``coordinates``, ``variables``, ``natural_params`` and
    ``corrected_coordinates``), with one site per time step.

    Attributes
    ----------
    system : HiddenMarkovResponseSystem
        J and (I - J)^-1 of the fit, assembled from the one series.
    count_changes : ndarray, shape (T, G)
        S_t(g) - S(g) of each time step t at the fitted globals g.
    """

    system: HiddenMarkovResponseSystem
    count_changes: np.ndarray

    @property
    def n_sites(self) -> int:
        return self.count_changes.shape[0]

    @property
    def coordinates(self) -> np.ndarray:
        return self.system.coordinates

    @property
    def variables(self) -> tuple:
        return self.system.variables

    def natural_params(self, coords: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        return self.system.natural_params(coords)

    def corrected_coordinates(self, steps) -> np.ndarray:
        """Return g + (I - J)^-1 (S_t(g) - S(g)) for each given time step, shape (n, G)."""
        steps = np.asarray(steps)
        return self.coordinates[None] + self.system.solve(self.count_changes[steps])

    def step_jacobian(self, step: int) -> np.ndarray:
        """J_t = dS_t/dg at the fit, the Jacobian of the cut model's statistic map, shape (G, G)."""
        inputs = cut_series_inputs(self.system.chain_inputs, step)
        n_chains = inputs[4].size - 1
        covariance = chain_statistics_covariance(*inputs, np.arange(n_chains, dtype=np.int64))
        return 0.5 * (covariance + covariance.T) @ self.system.hessian


def build_time_step_response_system(posterior: Posterior, *, warn: bool = True) -> TimeStepResponseSystem:
    """Assemble J and the direct change S_t(g) - S(g) of every time step of a single series.

    Costs one forward-backward pass per time step, O(T^2 K^2) for a series
    of T steps and K states, besides the O(T K^2 G) of J.

    Raises
    ------
    ValueError
        If the posterior has more than one sequence.
    NotImplementedError, SingularResponseError
        As :func:`build_hidden_markov_response_system`.
    """
    if posterior.n_sites != 1:
        raise ValueError(
            f"the linear response of time steps needs a posterior of a single series, this one has "
            f"{posterior.n_sites} sequences; use all_sequence_summaries for one site per sequence"
        )
    system = build_hidden_markov_response_system(posterior, warn=warn)
    inputs = system.chain_inputs
    n_steps = int(inputs[4][-1])
    fitted = expected_counts(system.layout, inputs)
    changes = np.empty((n_steps, system.layout.size))
    for step in range(n_steps):
        changes[step] = expected_counts(system.layout, cut_series_inputs(inputs, step)) - fitted
    return TimeStepResponseSystem(system, changes)


def newton_time_step_coordinates(system: TimeStepResponseSystem, step: int) -> np.ndarray:
    """Take one Newton step from the fit towards the fixed point without time step t, shape (G,).

    The cut model's fixed-point equation is F(g) = g - prior - S_t(g) = 0.
    At the fit F = S(g) - S_t(g) and F' = I - J_t, so the Newton step is
    g + (I - J_t)^-1 (S_t(g) - S(g)). The all-step estimate uses J in place
    of J_t, so that one factorisation serves every step.
    """
    step = int(check_site_indices([step], system.n_sites, "step")[0])
    identity = np.eye(system.coordinates.size)
    return system.coordinates + np.linalg.solve(identity - system.step_jacobian(step), system.count_changes[step])


class TimeStepLinearResponseSummaries:
    """Per-step KL of the linear-response corrected global posteriors of a single series.

    Each time step's corrected coordinates g + (I - J)^-1 (S_t(g) - S(g))
    are turned into Dirichlet and emission posteriors and compared with the
    fit exactly, as for sequences. An improper corrected posterior is
    flagged in ``improper`` and its KL is left at 0.

    Attributes
    ----------
    system : TimeStepResponseSystem
    corrected : ndarray, shape (T, G)
        Corrected coordinates of every time step.
    kl_by_variable : dict of str to ndarray, shape (T,)
        KL(q || q corrected) of each global, 0 for improper time steps.
    improper : ndarray of bool, shape (T,)
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True):
        self.posterior = posterior
        self.system = build_time_step_response_system(posterior, warn=warn)
        self.corrected, self.kl_by_variable, self.improper = corrected_global_kl(posterior, self.system)


def all_time_step_summaries(posterior: Posterior, *, warn: bool = True) -> TimeStepLinearResponseSummaries:
    """Linear-response KL of every time step of a hidden Markov model fitted to a single series."""
    return TimeStepLinearResponseSummaries(posterior, warn=warn)
