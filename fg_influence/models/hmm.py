"""Hidden Markov models with Poisson or Gaussian emissions, one site per sequence."""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from .._validation import as_float_array, check_int, check_real, check_site_indices
from ..exceptions import ImproperDivisionWarning
from ..families import Dirichlet, Gamma, NormalWishart
from ..graph import FactorGraph
from ..graph.blocks import loo_kl_by_division
from ..graph.hmm_factors import GaussianHMMFactor, PoissonHMMFactor
from ..inference import fit_cavi
from ..inference.posterior import Posterior
from ..influence import InfluenceResult, posterior_kl
from ..kernels.hmm import pairwise_marginals

EMISSIONS = ("poisson", "gaussian")
FACTORS = {"poisson": PoissonHMMFactor, "gaussian": GaussianHMMFactor}


def sequences_to_ragged(sequences) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate a list of 1-D sequences; return values (n_rows,) and offsets (S + 1,).

    One 1-D array, or a flat list of numbers, is a single sequence.

    Raises ValueError for a sequence with fewer than 2 values, because a
    sequence of one value has no transition and carries no information about the chain.
    """
    if (isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__iter__")
            or (isinstance(sequences, np.ndarray) and sequences.ndim == 0)):
        raise TypeError(
            f"sequences must be a list of 1-D arrays, or one 1-D array for a single series, got "
            f"{sequences!r} of type {type(sequences).__name__}; pass [x] for one series x"
        )
    if isinstance(sequences, np.ndarray) and sequences.ndim == 1:
        sequences = [sequences]
    elif not isinstance(sequences, np.ndarray):
        sequences = list(sequences)
        scalars = [_is_number(entry) for entry in sequences]
        if sequences and all(scalars):
            # A flat list of numbers (or a pandas Series) is one series, like a 1-D array.
            sequences = [np.asarray(sequences)]
        elif any(scalars):
            mixed = [i for i, flag in enumerate(scalars) if flag][:5]
            raise TypeError(
                f"sequences must be either one series (a flat list or 1-D array of numbers) or a "
                f"list of series, not a mix; entries {mixed} are single numbers while others are "
                f"sequences. Pass [x] for one series x, or [x1, x2, ...] for several"
            )
    arrays = []
    for index, sequence in enumerate(sequences):
        array = as_float_array(sequence, f"sequence {index}", ndim=1)
        if array.size < 2:
            raise ValueError(
                f"sequence {index} has {array.size} value(s), but every sequence needs at least 2 "
                f"(one transition); drop or merge the short sequences"
            )
        arrays.append(array)
    if not arrays:
        raise ValueError("sequences must contain at least one sequence, got none")
    offsets = np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)
    return np.concatenate(arrays), offsets


def _is_number(value) -> bool:
    return isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, (str, bytes))


def build_hmm_graph(values, offsets, *, emission: str, initial_prior, transition_prior, emission_prior,
                    covariates=None) -> FactorGraph:
    """Build the hidden Markov model as a factor graph with one site per sequence."""
    graph = FactorGraph()
    graph.add_plate("sequences", np.asarray(offsets).size - 1)
    graph.add_global("initial", initial_prior)
    graph.add_global("transition", transition_prior)
    graph.add_global("emission", emission_prior)
    graph.add_block("states", plate="sequences", owner="hmm")
    graph.add_ragged_observed("x", values, offsets, plate="sequences", covariates=covariates)
    graph.add_factor(FACTORS[emission]("hmm", "x", "states", "initial", "transition", "emission"))
    return graph


#: Series length above which ``time_step_influence(method="linear-response")`` warns, because its
#: cost (one forward-backward pass per time step) grows as T^2.
TIME_STEP_RESPONSE_WARN = 20_000


@dataclass
class TimeStepInfluence:
    """Influence of each time step of a single series.

    Time step t's terms are its emission p(x_t | z_t) and its transition
    p(z_t | z_{t-1}) (the initial-state term for t = 0). ``kl[t]`` is the
    estimate of KL(q || q without both terms) by ``method``, +inf where
    ``improper``.
    """

    kl: np.ndarray
    improper: np.ndarray
    exact_steps: np.ndarray
    exact_kl: np.ndarray
    method: str = "division"

    def top(self, k: int = 10) -> np.ndarray:
        return np.argsort(-self.kl, kind="stable")[:k]

    def spearman(self) -> float:
        """Return the Spearman correlation of the estimates with the exact KL over the refitted steps."""
        if self.exact_steps.size < 2:
            raise ValueError(
                f"spearman needs exact refits of at least 2 time steps, got {self.exact_steps.size}; "
                f"pass exact='all', a count or a list of steps to time_step_influence"
            )
        return float(spearmanr(self.kl[self.exact_steps], self.exact_kl).statistic)


class HiddenMarkovModel:
    """Bayesian hidden Markov model fitted by CAVI, with the influence of each sequence.

    The model is

        pi ~ Dirichlet(initial_concentration * ones(K))
        A_i ~ Dirichlet(transition_concentration * ones(K))      for each state i
        Poisson:  lambda_k ~ Gamma(rate_shape, rate_shape / mean(x))
        Gaussian: (mu_k, lambda_k) ~ Normal-Wishart(mean(x), 1, 1 / var(x), 1)
        z_s0 ~ Categorical(pi),  z_st | z_s(t-1) = i ~ Categorical(A_i)
        x_st | z_st = k ~ Poisson(lambda_k) or N(mu_k, 1 / lambda_k)

    Each sequence is one site, and its local block (the state chain) is
    updated exactly by forward-backward.

    Parameters
    ----------
    n_states : int, default 2
    emission : {"poisson", "gaussian"}, default "poisson"
    initial_concentration, transition_concentration : float, default 1.0
    rate_shape : float, default 1.0
        Shape of the Gamma prior of the Poisson rates.
    tol : float, default 1e-9
    max_iter : int, default 2000
    """

    def __init__(self, n_states=2, *, emission="poisson", initial_concentration=1.0,
                 transition_concentration=1.0, rate_shape=1.0, tol=1e-9, max_iter=2000):
        self.n_states = n_states
        self.emission = emission
        self.initial_concentration = initial_concentration
        self.transition_concentration = transition_concentration
        self.rate_shape = rate_shape
        self.tol = tol
        self.max_iter = max_iter

    def priors(self, values: np.ndarray) -> dict:
        """Prior distributions resolved against the concatenated values."""
        k = check_int(self.n_states, "n_states", minimum=1)
        if self.emission not in EMISSIONS:
            raise ValueError(f"emission must be one of {EMISSIONS}, got {self.emission!r}")
        if k > values.size:
            raise ValueError(f"n_states must be at most the number of values ({values.size}), got {k}")
        initial = check_real(self.initial_concentration, "initial_concentration", low=0.0)
        transition = check_real(self.transition_concentration, "transition_concentration", low=0.0)
        if self.emission == "poisson":
            shape = check_real(self.rate_shape, "rate_shape", low=0.0)
            mean = max(float(values.mean()), 1e-3)
            emission_prior = Gamma(np.full(k, shape), np.full(k, shape / mean))
        else:
            variance = float(values.var()) or 1.0
            emission_prior = NormalWishart(np.full((k, 1), values.mean()), np.ones(k),
                                           np.full((k, 1, 1), 1.0 / variance), np.ones(k))
        return {
            "initial_prior": Dirichlet(np.full(k, initial)),
            "transition_prior": Dirichlet(np.full((k, k), transition)),
            "emission_prior": emission_prior,
        }

    def fit(self, sequences) -> "HiddenMarkovModel":
        """Fit a list of 1-D sequences, or a single series given as one 1-D array or flat list of numbers.

        Parameters
        ----------
        sequences : list of array_like, each shape (T_s,), or array_like, shape (T,)
            One entry per sequence, each of at least 2 values; a flat list
            or 1-D array of numbers is one series.
        """
        values, offsets = sequences_to_ragged(sequences)
        self._priors = self.priors(values)
        graph = build_hmm_graph(values, offsets, emission=self.emission, **self._priors)
        try:
            self.posterior_ = fit_cavi(graph, tol=self.tol, max_iter=self.max_iter)
        except ValueError as error:
            if "positive definite" not in str(error):
                raise
            # As for the Gaussian mixture, the count coordinates cancel when the
            # values sit far from 0 compared with their spread.
            raise ValueError(
                f"fitting the sequences failed because a state's posterior lost positive definiteness "
                f"({error}). Usual causes: the values are far from 0 relative to their spread, so "
                f"centre and scale them first, for example (x - mean) / sd over all sequences; or "
                f"too few distinct values per state, so use fewer states or longer sequences"
            ) from None
        posterior = self.posterior_
        self.initial_ = posterior.globals["initial"].mean()
        self.transition_ = posterior.globals["transition"].mean()
        emission = posterior.globals["emission"]
        if self.emission == "poisson":
            self.means_ = emission.mean()
        else:
            self.means_ = emission.mean[:, 0].copy()
            self.sds_ = 1.0 / np.sqrt(emission.dof * emission.scale[:, 0, 0])
        self.lower_bound_ = posterior.elbo
        self.n_iter_ = posterior.n_iter
        self.converged_ = posterior.converged
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "posterior_"):
            raise ValueError("this HiddenMarkovModel is not fitted yet; call fit(sequences) first")

    def influence(self, method: str = "division") -> InfluenceResult:
        """Estimate the leave-one-sequence-out influence of every sequence.

        Parameters
        ----------
        method : {"division", "linear-response"}, default "division"
            "division" subtracts the sequence's expected counts (first
            state, transitions, occupancies and emission statistics) from
            the global posteriors, holding every other sequence's chain
            fixed. "linear-response" adds the first-order response of the
            other chains, delta_g = -(I - J)^-1 s (see
            :mod:`fg_influence.influence.linear_response_hmm`), which tracks
            exact refits much more closely when the states overlap; it costs
            a forward-mode pass through forward-backward and one G x G
            factorisation, G = K + K^2 + K Q.

        Returns
        -------
        InfluenceResult
            With ``kl`` and ``kl_by_variable`` per sequence. Neither method
            offers parameter shifts or a LOO log predictive density for this model.

        Raises
        ------
        SingularResponseError
            With "linear-response", if the fit is not a stable fixed point of
            CAVI (for example two states with the same emissions).
        """
        self._check_fitted()
        return InfluenceResult(self.posterior_, method=method)

    def state_probabilities(self) -> np.ndarray:
        """q(z_t = k) of every row, in the order of the fitted sequences, shape (n_rows, K)."""
        self._check_fitted()
        factor = self.posterior_.graph.factors["hmm"]
        variable = self.posterior_.graph.variables["x"]
        gamma, _, _ = self._marginals(factor, variable)
        return gamma

    def _marginals(self, factor, variable):
        state = self.posterior_
        log_initial, log_transition = factor._expected_logs(state)
        log_emission = factor.log_emission(state, variable.data[:, 0])
        return pairwise_marginals(np.ascontiguousarray(log_initial), np.ascontiguousarray(log_transition),
                                  np.ascontiguousarray(log_emission), True)

    # A single long series: one site per time step.

    def time_step_influence(self, exact=None, method: str = "division") -> TimeStepInfluence:
        """Influence of each time step of a model fitted to one series.

        Time step t's terms are its emission and the transition into it
        (the initial-state term for t = 0). Division subtracts those
        terms' expected counts from the global posteriors. The exact
        counterpart refits the model with both terms removed: the series
        splits at t into the steps before t and a second chain that starts
        at z_t with no initial term and no emission at t.

        Parameters
        ----------
        exact : None, "all", int or sequence of int
            Time steps to refit: "all", the n of largest estimated KL, or
            the listed steps.
        method : {"division", "linear-response"}, default "division"
            "division" holds every other step's state marginals fixed.
            "linear-response" also adds the change of the other steps'
            marginals that cutting the chain at t causes at the fitted
            globals, and the first-order response of the globals,
            g' - g = (I - J)^-1 (S_t(g) - S(g)) (see
            :mod:`fg_influence.influence.linear_response_hmm`). It costs one
            forward-backward pass per time step, O(T^2 K^2) for T steps and
            K states: about 5 s for T = 10,000 and K = 2 on two shared cores,
            and it warns above ``TIME_STEP_RESPONSE_WARN`` steps.

        Returns
        -------
        TimeStepInfluence

        Raises
        ------
        ValueError
            If the model was fitted to more than one sequence, or for an
            unknown method.
        SingularResponseError
            With "linear-response", if the fit is not a stable fixed point of
            CAVI (for example two states with the same emissions).

        Warns
        -----
        ImproperDivisionWarning
            If a time step's estimated posterior is improper. Its KL is +inf.
        UserWarning
            With "linear-response", if the series has more than
            ``TIME_STEP_RESPONSE_WARN`` steps, because the cost grows as T^2.
        """
        if method not in ("division", "linear-response"):
            raise ValueError(
                f"method must be 'division' or 'linear-response' for time steps, got {method!r}; "
                f"for exact refits pass exact='all'"
            )
        self._check_fitted()
        graph = self.posterior_.graph
        if graph.n_sites != 1:
            raise ValueError(
                f"time_step_influence needs a model fitted to a single series, this one has "
                f"{graph.n_sites} sequences; use influence() for one site per sequence"
            )
        if method == "division":
            kl, improper = self._divided_step_kl()
        else:
            kl, improper = self._response_step_kl()
        if improper.any():
            first_steps = np.flatnonzero(improper)[:10].tolist()
            estimate = "when divided out" if method == "division" else "under the linear-response correction"
            warnings.warn(
                f"{int(improper.sum())} time steps leave an improper posterior {estimate} (first "
                f"positions: {first_steps}); their KL is +inf. Check them with exact refits (exact=[...])",
                ImproperDivisionWarning,
                stacklevel=2,
            )
        steps = self._exact_steps(exact, kl)
        exact_values = np.array([self._refit_without_step(int(t)) for t in steps])
        return TimeStepInfluence(kl, improper, steps, exact_values, method)

    def _divided_step_kl(self) -> tuple[np.ndarray, np.ndarray]:
        graph = self.posterior_.graph
        factor = graph.factors["hmm"]
        variable = graph.variables["x"]
        values = variable.data[:, 0]
        gamma, pairs, _ = self._marginals(factor, variable)
        n_steps, k = gamma.shape
        initial_messages = np.zeros((n_steps, k))
        initial_messages[0] = gamma[0]
        transition_messages = np.zeros((n_steps, k, k))
        transition_messages[1:] = pairs
        emission_messages = self._step_emission_messages(gamma, values)
        improper = np.zeros(n_steps, dtype=bool)
        globals_ = self.posterior_.globals
        kl = (loo_kl_by_division(globals_["initial"], (initial_messages,), improper)
              + loo_kl_by_division(globals_["transition"], (transition_messages,), improper)
              + loo_kl_by_division(globals_["emission"], emission_messages, improper))
        kl[improper] = np.inf
        return kl, improper

    def _response_step_kl(self) -> tuple[np.ndarray, np.ndarray]:
        from ..influence.linear_response_hmm import all_time_step_summaries

        n_steps = self.posterior_.graph.variables["x"].data.shape[0]
        if n_steps > TIME_STEP_RESPONSE_WARN:
            warnings.warn(
                f"the linear response of time steps runs one forward-backward pass per step, so its "
                f"cost grows as T^2; this series has T = {n_steps} steps (above "
                f"TIME_STEP_RESPONSE_WARN = {TIME_STEP_RESPONSE_WARN}) and may take minutes. Use "
                f"method='division' for a quick ranking",
                UserWarning,
                stacklevel=3,
            )
        summaries = all_time_step_summaries(self.posterior_)
        kl = sum(summaries.kl_by_variable.values())
        improper = summaries.improper.copy()
        kl[improper] = np.inf
        return kl, improper

    def _step_emission_messages(self, gamma, values):
        if self.emission == "poisson":
            return (gamma * values[:, None], -gamma)
        return (gamma[..., None] * values[:, None, None], gamma,
                (gamma * values[:, None] ** 2)[..., None, None], gamma.copy())

    def _exact_steps(self, exact, kl) -> np.ndarray:
        if exact is None:
            return np.zeros(0, dtype=np.int64)
        if isinstance(exact, str):
            if exact != "all":
                raise ValueError(f'exact must be "all", a count or a list of steps, got {exact!r}')
            return np.arange(kl.size)
        if isinstance(exact, (int, np.integer)) and not isinstance(exact, bool):
            count = check_int(exact, "exact", minimum=1, maximum=kl.size)
            return np.argsort(-kl, kind="stable")[:count]
        return check_site_indices(exact, kl.size, "exact")

    def _refit_without_step(self, step: int) -> float:
        graph = self.posterior_.graph
        values = graph.variables["x"].data[:, 0]
        n_steps = values.size
        covariates = np.ones((n_steps, 2))
        covariates[step, 0] = 0.0
        covariates[step, 1] = 0.0
        offsets = [0, step, n_steps] if step > 0 else [0, n_steps]
        reduced = build_hmm_graph(values, np.array(offsets), emission=self.emission,
                                  covariates=covariates, **self._priors)
        # Warm start: the chains' update under the fitted globals.
        start = Posterior(reduced, dict(self.posterior_.globals), {}, {"x": values})
        block, _ = reduced.factors["hmm"].update_block("states", start)
        refit = fit_cavi(reduced, tol=1e-12, max_iter=5000, init_locals={"states": block}, warn=False)
        return posterior_kl(self.posterior_.globals, refit.globals)
