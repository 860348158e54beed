"""Hidden Markov model factors: one site per sequence, the state chain as a local block.

For sequence s with rows x_s0 .. x_s(T-1) and states z_st in 1..K:

    z_s0 ~ Categorical(pi),  z_st | z_s(t-1) = i ~ Categorical(A_i)
    x_st | z_st = k ~ emission_k

with pi ~ Dirichlet (K,), each row A_i ~ Dirichlet (a (K, K) batch) and
conjugate emission parameters per state. Under q(pi) q(A) q(emission)
prod_s q(z_s) the optimal q(z_s) is a Markov chain found by forward-backward
with the weights exp(E[ln pi]), exp(E[ln A]) and exp(E[ln p(x | k)]), and the
site's ELBO term is the log-normaliser of that chain. The chain's expected
counts (first state, transitions, per-state occupancy and emission
statistics) are the block state, and each sequence's messages to the
globals are those counts.

Rows may carry covariates (n_rows, 2): column 0 weights the row's emission
term (0 removes it) and column 1, read at a sequence's first row, weights
its initial-state term (0 gives every first state weight 1). They let a
refit remove one time step of a long series.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, psi

from ..families import Dirichlet, Gamma, NormalWishart
from ..kernels.hmm import forward_backward
from .blocks import BlockState, LocalBlock, RaggedObservedVariable, loo_kl_by_division, segment_sum
from .errors import GraphError
from .factors import Factor
from .nodes import GlobalVariable

LOG_2PI = float(np.log(2.0 * np.pi))


def row_weights(variable: RaggedObservedVariable) -> tuple[np.ndarray, np.ndarray]:
    """Emission weight of each row (n_rows,) and whether each sequence has an initial term (S,)."""
    if variable.covariates is None:
        return np.ones(variable.data.shape[0]), np.ones(variable.offsets.size - 1, dtype=bool)
    emission = variable.covariates[:, 0]
    initial = variable.covariates[variable.offsets[:-1], 1] > 0
    return emission, initial


class HiddenMarkovFactor(Factor):
    """Base of the HMM factors; subclasses define the emission family.

    The factor owns the chain block ``chain`` (declare it with
    ``graph.add_block(chain, plate, owner=<this factor's name>)``).
    """

    emission_family: type = None
    emission_stat_names: tuple[str, ...] = ()

    def __init__(self, name: str, observed: str, chain: str, initial: str, transition: str,
                 emission: str):
        self.name = name
        self.observed = observed
        self.chain = chain
        self.initial = initial
        self.transition = transition
        self.emission = emission

    def parents(self):
        return (self.initial, self.transition, self.emission, self.chain)

    def children(self):
        return (self.observed,)

    # Checks

    def check(self, graph) -> None:
        chain = self._node(graph, self.chain, LocalBlock, "a local block")
        if chain.owner != self.name:
            raise GraphError(
                f"factor {self.name!r}: block {self.chain!r} must be declared with owner={self.name!r}, "
                f"because this factor runs its forward-backward update"
            )
        observed = self._node(graph, self.observed, RaggedObservedVariable,
                              "a ragged observed variable (add_ragged_observed)")
        if observed.plate != chain.plate:
            raise GraphError(
                f"factor {self.name!r}: plate mismatch, observed {self.observed!r} is on plate "
                f"{observed.plate!r} but chain {self.chain!r} is on plate {chain.plate!r}"
            )
        initial = self._dirichlet(graph, self.initial)
        n_states = initial.concentration.shape[-1]
        if initial.concentration.shape != (n_states,):
            raise GraphError(
                f"factor {self.name!r}: the initial-state prior {self.initial!r} must have shape (K,), "
                f"got {initial.concentration.shape}"
            )
        transition = self._dirichlet(graph, self.transition)
        if transition.concentration.shape != (n_states, n_states):
            raise GraphError(
                f"factor {self.name!r}: the transition prior {self.transition!r} must have shape "
                f"({n_states}, {n_states}) (one Dirichlet row per state), got "
                f"{transition.concentration.shape}"
            )
        emission = self._node(graph, self.emission, GlobalVariable, "a global variable")
        if not isinstance(emission.prior, self.emission_family):
            raise GraphError(
                f"factor {self.name!r} is not conjugate: the emission parameters {self.emission!r} need a "
                f"{self.emission_family.__name__} prior, got {type(emission.prior).__name__}"
            )
        if emission.prior.batch_shape != (n_states,):
            raise GraphError(
                f"factor {self.name!r}: the emission prior {self.emission!r} must have batch shape "
                f"({n_states},), got {emission.prior.batch_shape}"
            )
        if observed.data.shape[1] != 1:
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} must have one column, got "
                f"{observed.data.shape[1]}"
            )
        self.check_data(observed.data[:, 0])

    def _dirichlet(self, graph, name):
        node = self._node(graph, name, GlobalVariable, "a global variable")
        if not isinstance(node.prior, Dirichlet):
            raise GraphError(
                f"factor {self.name!r} is not conjugate: {name!r} needs a Dirichlet prior, got "
                f"{type(node.prior).__name__}"
            )
        return node.prior

    def check_data(self, values: np.ndarray) -> None:
        """Raise ValueError for values the emission family cannot produce."""

    # Emission model (subclasses)

    def log_emission(self, state, values: np.ndarray) -> np.ndarray:
        """E_q[ln p(x_t | z_t = k)], shape (n_rows, K)."""
        raise NotImplementedError

    def emission_row_stats(self, values: np.ndarray) -> tuple[np.ndarray, ...]:
        """Sufficient statistics of each row beyond the count, each shape (n_rows,)."""
        raise NotImplementedError

    def emission_site_messages(self, block: BlockState, sites) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def emission_expected_log(self, state, block: BlockState) -> np.ndarray:
        """Sum over rows of E_q(z)[weight * E[ln p(x_t | z_t)]] at the block's counts, shape (S,)."""
        raise NotImplementedError

    # Block update

    def _expected_logs(self, state):
        return (self._current(state, self.initial).expected_log(),
                self._current(state, self.transition).expected_log())

    def _current(self, state, name):
        posterior = state.globals.get(name)
        return state.graph.variables[name].prior if posterior is None else posterior

    def block_from_marginals(self, variable, gamma, initial, transitions) -> dict[str, np.ndarray]:
        """Per-sequence expected counts from the chain's marginals."""
        values = variable.data[:, 0]
        emission_weight, use_initial = row_weights(variable)
        weighted = gamma * emission_weight[:, None]
        arrays = {
            "initial": initial * use_initial[:, None],
            "transitions": transitions,
            "occupancy": segment_sum(weighted, variable.offsets),
        }
        for key, stat in zip(self.emission_stat_names, self.emission_row_stats(values)):
            arrays[key] = segment_sum(weighted * stat[:, None], variable.offsets)
        return arrays

    def expected_log_joint(self, state, block: BlockState) -> np.ndarray:
        """E_q[ln p(z_s, x_s | globals)] of each sequence at the block's counts, shape (S,)."""
        log_initial, log_transition = self._expected_logs(state)
        value = block.initial @ log_initial
        value = value + np.einsum("sij,ij->s", block.transitions, log_transition)
        return value + self.emission_expected_log(state, block)

    def update_block(self, name, state):
        variable = state.graph.variables[self.observed]
        log_initial, log_transition = self._expected_logs(state)
        emission_weight, use_initial = row_weights(variable)
        log_emission = self.log_emission(state, variable.data[:, 0]) * emission_weight[:, None]
        gamma, initial, transitions, log_norm = forward_backward(
            np.ascontiguousarray(log_initial), np.ascontiguousarray(log_transition),
            np.ascontiguousarray(log_emission), variable.offsets, use_initial,
        )
        block = BlockState(self.block_from_marginals(variable, gamma, initial, transitions))
        # log Z = E_q[ln p(z, x)] + H[q(z)] at the optimum, so the entropy
        # follows from the log-normaliser without another pass.
        block.arrays["entropy"] = log_norm - self.expected_log_joint(state, block)
        return block, log_norm

    def block_site_elbo(self, name, state) -> np.ndarray:
        block = state.locals[self.chain]
        return self.expected_log_joint(state, block) + block.entropy

    def initial_block(self, name, graph, data, rng) -> BlockState:
        """Start from hard states by quantile of the values (state 0 lowest), entropy 0."""
        variable = graph.variables[self.observed]
        values = variable.data[:, 0]
        n_states = graph.variables[self.initial].prior.concentration.shape[0]
        ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        labels = np.minimum(ranks * n_states // values.size, n_states - 1)
        gamma = np.eye(n_states)[labels]
        initial = gamma[variable.offsets[:-1]]
        pair = gamma[:-1, :, None] * gamma[1:, None, :]
        same_sequence = np.ones(values.size - 1, dtype=bool)
        same_sequence[variable.offsets[1:-1] - 1] = False
        pair_sites = variable.row_sites()[:-1]
        transitions = np.zeros((variable.offsets.size - 1, n_states, n_states))
        np.add.at(transitions, pair_sites[same_sequence], pair[same_sequence])
        block = BlockState(self.block_from_marginals(variable, gamma, initial, transitions))
        block.arrays["entropy"] = np.zeros(variable.offsets.size - 1)
        return block

    # Messages to the globals

    def site_messages(self, target, state, sites):
        block = state.locals[self.chain]
        sites = np.asarray(sites)
        if target == self.initial:
            return (block.initial[sites],)
        if target == self.transition:
            return (block.transitions[sites],)
        return self.emission_site_messages(block, sites)

    def message(self, target, state):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return tuple(m.sum(axis=0) for m in messages)

    def loo_kl(self, target, state, improper):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return loo_kl_by_division(state.globals[target], messages, improper)


class PoissonHMMFactor(HiddenMarkovFactor):
    """HMM with x_t | z_t = k ~ Poisson(lambda_k) and lambda_k ~ Gamma, batch shape (K,)."""

    emission_family = Gamma
    emission_stat_names = ("sum_x",)

    def check_data(self, values):
        if np.any(values < 0) or np.any(values != np.round(values)):
            bad = values[(values < 0) | (values != np.round(values))][:5]
            raise ValueError(
                f"Poisson emissions need non-negative integer counts, got {bad.tolist()}; "
                f"use Gaussian emissions for other values"
            )

    def log_emission(self, state, values):
        log_rate, rate = self._current(state, self.emission).expected_stats()
        return values[:, None] * log_rate[None, :] - rate[None, :] - gammaln(values + 1.0)[:, None]

    def emission_row_stats(self, values):
        return (values,)

    def emission_site_messages(self, block, sites):
        return (block.sum_x[sites], -block.occupancy[sites])

    def emission_expected_log(self, state, block):
        log_rate, rate = self._current(state, self.emission).expected_stats()
        return block.sum_x @ log_rate - block.occupancy @ rate - block.arrays.get("log_factorial", 0.0)

    def block_from_marginals(self, variable, gamma, initial, transitions):
        arrays = super().block_from_marginals(variable, gamma, initial, transitions)
        emission_weight, _ = row_weights(variable)
        arrays["log_factorial"] = segment_sum(
            emission_weight * gammaln(variable.data[:, 0] + 1.0), variable.offsets)
        return arrays


class GaussianHMMFactor(HiddenMarkovFactor):
    """HMM with x_t | z_t = k ~ N(mu_k, 1/lambda_k) and (mu_k, lambda_k) ~ Normal-Wishart, D = 1."""

    emission_family = NormalWishart
    emission_stat_names = ("sum_x", "sum_xx")

    def _moments(self, state):
        """E[lambda mu^2] + 1/beta, E[lambda mu], E[lambda], E[ln lambda], each shape (K,)."""
        params = self._current(state, self.emission)
        if params.dim != 1:
            raise GraphError(f"factor {self.name!r} models one column; the emission prior has dim {params.dim}")
        mean = params.mean[:, 0]
        precision = params.dof * params.scale[:, 0, 0]
        log_precision = psi(0.5 * params.dof) + np.log(2.0) + np.log(params.scale[:, 0, 0])
        return precision * mean**2 + 1.0 / params.beta, precision * mean, precision, log_precision

    def log_emission(self, state, values):
        quadratic, linear, precision, log_precision = self._moments(state)
        x = values[:, None]
        return 0.5 * (log_precision - LOG_2PI) - 0.5 * (precision * x**2 - 2.0 * linear * x + quadratic)

    def emission_row_stats(self, values):
        return (values, values**2)

    def emission_site_messages(self, block, sites):
        occupancy = block.occupancy[sites]
        return (block.sum_x[sites][..., None], occupancy, block.sum_xx[sites][..., None, None],
                occupancy.copy())

    def emission_expected_log(self, state, block):
        quadratic, linear, precision, log_precision = self._moments(state)
        constant = 0.5 * (log_precision - LOG_2PI) - 0.5 * quadratic
        return block.occupancy @ constant + block.sum_x @ linear - 0.5 * block.sum_xx @ precision
