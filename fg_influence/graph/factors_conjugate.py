"""A base class for conjugate likelihood factors, with or without a mixture assignment.

Every likelihood here has the conjugate form

    ln p(x_i | theta) = <T(x_i), S(theta)> + ln h(x_i),

where S(theta) are the sufficient statistics of theta's prior family and
T(x_i) is the site's natural-parameter message. Everything a factor sends
or summarises follows from T and h:

* the message to an assignment z_i is E_q[ln p(x_i | theta_k)] =
  <T(x_i), E_q[S(theta_k)]> + ln h(x_i);
* the message to theta_k is sum_i r_ik T(x_i), and site i's term is r_ik T(x_i);
* the divided posterior of component k is lambda_k - r_ik T(x_i), so the
  KL to it and the parameter shifts come from one batched family of shape
  (N, K, ...);
* the predictive density of x under a posterior with natural parameters
  lambda is h(x) exp(A(lambda + T(x)) - A(lambda)), with A the log-partition.

A subclass supplies ``prior_family``, ``site_statistics``,
``log_base_measure``, ``check_data`` and ``shift_quantities``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .errors import GraphError
from .factors import CategoricalFactor, Factor
from .nodes import GlobalVariable, LocalVariable, ObservedVariable


class ConjugateLikelihoodFactor(Factor):
    """x_i ~ p(x_i | theta), or x_i | z_i = k ~ p(x_i | theta_k) when ``assignment`` is given.

    Parameters
    ----------
    name : str
    observed : str
        Observed variable with one row per site.
    params : str or sequence of str
        Global variable(s) theta. With an assignment each must be repeated
        over the assignment's category plate (leading batch axis K).
    assignment : str, optional
        Local categorical variable z; without it the factor is a plain
        likelihood and the model has no latent variables.
    """

    #: Family the prior of every ``params`` variable must have.
    prior_family: type = None

    def __init__(self, name: str, observed: str, params, assignment: str | None = None):
        self.name = name
        self.observed = observed
        self.params = (params,) if isinstance(params, str) else tuple(params)
        if not self.params:
            raise GraphError(f"factor {name!r} needs at least one parameter variable")
        self.assignment = assignment

    # Subclass hooks

    def site_statistics(self, X: np.ndarray, index: int) -> tuple[np.ndarray, ...]:
        """T(x_i) for ``params[index]``: one array per natural parameter, shape (N,) + batch + event."""
        raise NotImplementedError

    def log_base_measure(self, X: np.ndarray) -> np.ndarray:
        """ln h(x_i), shape (N,)."""
        raise NotImplementedError

    def check_data(self, X: np.ndarray, priors: list) -> None:
        """Raise GraphError unless X and the priors (component axis removed) fit this likelihood."""
        raise NotImplementedError

    def shift_quantities(self, family, index: int) -> dict[str, np.ndarray]:
        """Named quantities of a posterior of ``params[index]`` whose shifts are reported."""
        return {}

    # Graph wiring

    def parents(self):
        return ((self.assignment,) if self.assignment is not None else ()) + self.params

    def children(self):
        return (self.observed,)

    def check(self, graph) -> None:
        observed = self._node(graph, self.observed, ObservedVariable, "an observed variable")
        priors = []
        for name in self.params:
            variable = self._node(graph, name, GlobalVariable, "a global variable")
            if not isinstance(variable.prior, self.prior_family):
                raise GraphError(
                    f"factor {self.name!r} is not conjugate: {name!r} needs a "
                    f"{self.prior_family.__name__} prior, got {type(variable.prior).__name__}"
                )
            priors.append(variable.prior)
        if self.assignment is not None:
            local = self._node(graph, self.assignment, LocalVariable, "a local categorical variable")
            if observed.plate != local.plate:
                raise GraphError(
                    f"factor {self.name!r}: plate mismatch, observed {self.observed!r} is on plate "
                    f"{observed.plate!r} but assignment {self.assignment!r} is on plate {local.plate!r}"
                )
            n_categories = graph.plates[local.categories].size
            for name, prior in zip(self.params, priors):
                variable = graph.variables[name]
                if variable.plates[:1] != (local.categories,):
                    raise GraphError(
                        f"factor {self.name!r}: plate mismatch, {name!r} must be repeated over plate "
                        f"{local.categories!r} (the values of {self.assignment!r}), got plates "
                        f"{variable.plates}"
                    )
                if prior.batch_shape[:1] != (n_categories,):
                    raise GraphError(
                        f"factor {self.name!r}: plate mismatch, the prior of {name!r} has batch shape "
                        f"{prior.batch_shape} but plate {local.categories!r} has size {n_categories}"
                    )
            priors = [_take_first_component(prior) for prior in priors]
        self.check_data(observed.data, priors)

    # Messages

    def _data(self, state) -> np.ndarray:
        return state.data[self.observed]

    def responsibilities(self, state) -> np.ndarray:
        """r_ik, shape (N, K); a column of ones (K = 1) without an assignment."""
        if self.assignment is None:
            return np.ones((self._data(state).shape[0], 1))
        return state.locals[self.assignment]

    def _with_component_axis(self, arrays):
        return tuple(arrays) if self.assignment is not None else tuple(a[None] for a in arrays)

    def expected_loglik(self, state, X: np.ndarray | None = None) -> np.ndarray:
        """E_q[ln p(x_i | theta_k)], shape (N, K) (K = 1 without an assignment)."""
        X = self._data(state) if X is None else X
        total = self.log_base_measure(X)[:, None]
        for index, name in enumerate(self.params):
            stats = self._with_component_axis(state.globals[name].expected_stats())
            for site_stat, expected in zip(self.site_statistics(X, index), stats):
                n, k = site_stat.shape[0], expected.shape[0]
                total = total + site_stat.reshape(n, -1) @ expected.reshape(k, -1).T
        return total

    def message(self, target, state):
        if target == self.assignment:
            return self.expected_loglik(state)
        index = self.params.index(target)
        resp = self.responsibilities(state)
        messages = tuple(
            np.tensordot(resp, stat, axes=(0, 0)) for stat in self.site_statistics(self._data(state), index)
        )
        return messages if self.assignment is not None else tuple(m[0] for m in messages)

    def site_messages(self, target, state, sites):
        index = self.params.index(target)
        resp = self.responsibilities(state)[sites]
        messages = []
        for stat in self.site_statistics(self._data(state)[sites], index):
            weights = resp.reshape(resp.shape + (1,) * (stat.ndim - 1))
            messages.append(weights * stat[:, None])
        return tuple(messages) if self.assignment is not None else tuple(m[:, 0] for m in messages)

    def expected_log_density(self, state) -> float:
        return float(np.sum(self.responsibilities(state) * self.expected_loglik(state)))

    # Closed forms: the divided posterior of every site as one batched family

    def divided(self, state, target: str, improper: np.ndarray):
        """Posterior of ``target`` without each site, as a family of batch shape (N,) + fitted batch.

        Sites whose divided posterior is improper are flagged in ``improper``
        and keep the fitted posterior in their slot.
        """
        fitted = state.globals[target]
        n_sites = self._data(state).shape[0]
        messages = self.site_messages(target, state, np.arange(n_sites))
        natural = tuple(p[None] - m for p, m in zip(fitted.natural_params(), messages))
        family = type(fitted)
        try:
            return family.from_natural(*natural)
        except ValueError:
            pass
        # Some site leaves an improper posterior: find them one by one.
        fitted_natural = fitted.natural_params()
        for site in range(n_sites):
            try:
                family.from_natural(*(p[site] for p in natural))
            except ValueError:
                improper[site] = True
                for p, value in zip(natural, fitted_natural):
                    p[site] = value
        return family.from_natural(*natural)

    def loo_kl(self, target, state, improper):
        flags = np.zeros_like(improper)
        divided = self.divided(state, target, flags)
        improper |= flags
        kl = state.globals[target].kl(divided)
        values = kl.reshape(kl.shape[0], -1).sum(axis=1)
        values[flags] = 0.0
        return values

    def component_log_predictive(self, state, X: np.ndarray, resp: np.ndarray,
                                 improper: np.ndarray) -> np.ndarray:
        """log p(x_i | theta_k) under the posterior without the weight resp_ik, shape (N, K)."""
        total = np.repeat(self.log_base_measure(X)[:, None], resp.shape[1], axis=1)
        for index, name in enumerate(self.params):
            fitted = state.globals[name]
            family = type(fitted)
            stats = self.site_statistics(X, index)
            fitted_natural = self._with_component_axis(fitted.natural_params())
            without, with_x = [], []
            for p, stat in zip(fitted_natural, stats):
                weights = resp.reshape(resp.shape + (1,) * (stat.ndim - 1))
                base = p[None] - weights * stat[:, None]
                without.append(base)
                with_x.append(base + stat[:, None])
            try:
                gain = family.from_natural(*with_x).log_partition() - family.from_natural(*without).log_partition()
            except ValueError:
                gain = self._log_partition_gain_by_site(family, without, with_x, improper)
            total = total + gain.reshape(gain.shape[0], gain.shape[1], -1).sum(axis=2)
        return total

    @staticmethod
    def _log_partition_gain_by_site(family, without, with_x, improper) -> np.ndarray:
        gains = None
        for site in range(without[0].shape[0]):
            try:
                gain = (family.from_natural(*(p[site] for p in with_x)).log_partition()
                        - family.from_natural(*(p[site] for p in without)).log_partition())
            except ValueError:
                improper[site] = True
                gain = None
            if gains is None and gain is not None:
                gains = np.zeros((without[0].shape[0],) + gain.shape)
            if gain is not None:
                gains[site] = gain
        if gains is None:
            raise ValueError("every site leaves an improper posterior when divided out")
        return gains

    def categorical_factor(self, state) -> CategoricalFactor:
        for factor in state.graph.factors_of(self.assignment):
            if isinstance(factor, CategoricalFactor):
                return factor
        raise ValueError(
            f"factor {self.name!r} needs a CategoricalFactor on {self.assignment!r} for predictive "
            f"densities; the graph has none"
        )

    def log_predictive(self, state, X: np.ndarray, resp: np.ndarray, improper: np.ndarray) -> np.ndarray:
        """log p(x_i | data without the weight resp_i), shape (N,).

        With ``resp`` all zero this is the posterior predictive density at the rows of X.
        """
        components = self.component_log_predictive(state, X, resp, improper)
        if self.assignment is None:
            return components[:, 0]
        alpha = state.globals[self.categorical_factor(state).weights].concentration
        divided = alpha[None, :] - resp
        with np.errstate(divide="ignore", invalid="ignore"):
            log_weights = np.log(np.maximum(divided, 0.0)) - np.log(divided.sum(axis=1, keepdims=True))
        improper |= np.any(divided <= 0.0, axis=1)
        return logsumexp(log_weights + components, axis=1)

    def loo_log_predictive(self, state, improper):
        return self.log_predictive(state, self._data(state), self.responsibilities(state), improper)

    def loo_shifts(self, state):
        shifts = {}
        for index, name in enumerate(self.params):
            fitted_values = self.shift_quantities(state.globals[name], index)
            for quantity in fitted_values:
                shifts[f"{name}.{quantity}"] = (
                    lambda name=name, index=index, quantity=quantity: self._shift(state, name, index, quantity)
                )
        return shifts

    def _shift(self, state, name: str, index: int, quantity: str) -> np.ndarray:
        improper = np.zeros(self._data(state).shape[0], dtype=bool)
        divided = self.shift_quantities(self.divided(state, name, improper), index)[quantity]
        fitted = self.shift_quantities(state.globals[name], index)[quantity]
        shift = divided - fitted[None]
        if improper.any():
            shift[improper] = np.nan
        return shift


def _take_first_component(prior):
    """The prior's first component along its leading batch axis, as the same family."""
    return type(prior).from_natural(*(p[0] for p in prior.natural_params()))
