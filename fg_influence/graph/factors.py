"""Conjugate factors and the messages they send in natural-parameter coordinates.

A factor computes, for each neighbour, the message it sends given the other
neighbours' current posteriors. Messages into a global node are sums over
the site plate; their terms are the site messages, which ``site_messages``
returns for the sites requested without storing an N-long array of them.
"""

from __future__ import annotations

import numpy as np

from ..families import Dirichlet, NormalWishart
from ..families._linalg import multivariate_polygammas
from ..kernels import loo as loo_kernels
from ..kernels import mixture as mixture_kernels
from .errors import GraphError
from .nodes import GlobalVariable, LocalVariable, ObservedVariable


class Factor:
    """Base class of a factor connecting parent variables to child variables."""

    name: str

    def parents(self) -> tuple[str, ...]:
        raise NotImplementedError

    def children(self) -> tuple[str, ...]:
        raise NotImplementedError

    def neighbours(self) -> tuple[str, ...]:
        return self.parents() + self.children()

    def check(self, graph) -> None:
        """Raise GraphError unless the neighbours have the types and plates this factor needs."""
        raise NotImplementedError

    def message(self, target: str, state) -> tuple[np.ndarray, ...] | np.ndarray:
        """Message to ``target``: natural parameters for a global node, logits (N, K) or (K,) for a local one."""
        raise NotImplementedError

    def site_messages(self, target: str, state, sites: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return each requested site's term of the message to a global ``target``, site axis first."""
        raise NotImplementedError

    # Optional closed forms for all-site summaries. A factor that lacks one
    # returns None, and the influence code falls back to explicit division.

    def loo_kl(self, target: str, state, improper: np.ndarray) -> np.ndarray | None:
        """KL(q || q without site i) of global ``target`` for every site, shape (N,).

        Sites whose divided posterior is improper are flagged in ``improper``.
        """
        return None

    def loo_log_predictive(self, state, improper: np.ndarray) -> np.ndarray | None:
        """log p(observed_i | data without site i) for every site, shape (N,)."""
        return None

    def loo_shifts(self, state) -> dict:
        """Parameter shifts (without site minus with all sites), by name, as zero-argument callables."""
        return {}

    def expected_log_density(self, state) -> float:
        """E_q[log factor], needed in the ELBO only for factors with no local neighbour."""
        raise NotImplementedError

    def _node(self, graph, name: str, expected_type, rule: str):
        node = graph.variables[name]
        if not isinstance(node, expected_type):
            raise GraphError(
                f"factor {self.name!r}: node {name!r} must be {rule}, got a "
                f"{node.role} variable"
            )
        return node


class CategoricalFactor(Factor):
    """z_i ~ Categorical(pi) for every site i, with pi ~ Dirichlet a global node."""

    def __init__(self, name: str, assignment: str, weights: str):
        self.name = name
        self.assignment = assignment
        self.weights = weights

    def parents(self):
        return (self.weights,)

    def children(self):
        return (self.assignment,)

    def check(self, graph) -> None:
        local = self._node(graph, self.assignment, LocalVariable, "a local categorical variable")
        weights = self._node(graph, self.weights, GlobalVariable, "a global variable")
        if not isinstance(weights.prior, Dirichlet):
            raise GraphError(
                f"factor {self.name!r} is not conjugate: the categorical probabilities "
                f"{self.weights!r} need a Dirichlet prior, got {type(weights.prior).__name__}"
            )
        n_categories = graph.plates[local.categories].size
        if weights.prior.concentration.shape != (n_categories,):
            raise GraphError(
                f"factor {self.name!r}: plate mismatch, the Dirichlet prior of {self.weights!r} has "
                f"shape {weights.prior.concentration.shape} but {self.assignment!r} takes values on "
                f"plate {local.categories!r} of size {n_categories}"
            )

    def message(self, target, state):
        if target == self.assignment:
            return state.globals[self.weights].expected_log()
        resp = state.locals[self.assignment]
        return (resp.sum(axis=0),)

    def site_messages(self, target, state, sites):
        return (state.locals[self.assignment][sites],)

    def loo_kl(self, target, state, improper):
        fitted = state.globals[self.weights]
        resp = np.ascontiguousarray(state.locals[self.assignment])
        return loo_kernels.dirichlet_downdate_kl(fitted.concentration, resp, *fitted.polygammas(), improper)

    def loo_shifts(self, state):
        return {
            f"{self.weights}.mean": lambda: self.weight_mean_shift(state),
            f"{self.weights}.mode": lambda: self.weight_mode_shift(state),
        }

    def weight_mean_shift(self, state) -> np.ndarray:
        """E[pi_k] without site i minus E[pi_k], shape (N, K)."""
        alpha = state.globals[self.weights].concentration
        resp = state.locals[self.assignment]
        total = alpha.sum()
        return (alpha - resp) / (total - resp.sum(axis=1, keepdims=True)) - alpha / total

    def weight_mode_shift(self, state) -> np.ndarray:
        """Dirichlet mode without site i minus the fitted mode, shape (N, K).

        The mode (alpha_k - 1) / (sum alpha - K) exists only when every
        concentration exceeds 1, with and without each site.
        """
        alpha = state.globals[self.weights].concentration
        resp = state.locals[self.assignment]
        n_components = alpha.size
        divided = alpha - resp
        if np.any(divided <= 1.0):
            raise ValueError(
                "the Dirichlet mode shift is undefined: removing some site leaves a concentration "
                f"at or below 1 (minimum {divided.min():.4g}); use the expected weight shift instead"
            )
        fitted_mode = (alpha - 1.0) / (alpha.sum() - n_components)
        return (divided - 1.0) / (divided.sum(axis=1, keepdims=True) - n_components) - fitted_mode


class GaussianMixtureFactor(Factor):
    """x_i | z_i = k ~ N(mu_k, Lambda_k^-1), with (mu_k, Lambda_k) ~ Normal-Wishart per component."""

    def __init__(self, name: str, observed: str, assignment: str, components: str):
        self.name = name
        self.observed = observed
        self.assignment = assignment
        self.components = components

    def parents(self):
        return (self.assignment, self.components)

    def children(self):
        return (self.observed,)

    def check(self, graph) -> None:
        observed = self._node(graph, self.observed, ObservedVariable, "an observed variable")
        local = self._node(graph, self.assignment, LocalVariable, "a local categorical variable")
        components = self._node(graph, self.components, GlobalVariable, "a global variable")
        if not isinstance(components.prior, NormalWishart):
            raise GraphError(
                f"factor {self.name!r} is not conjugate: the Gaussian component parameters "
                f"{self.components!r} need a NormalWishart prior, got {type(components.prior).__name__}"
            )
        if observed.plate != local.plate:
            raise GraphError(
                f"factor {self.name!r}: plate mismatch, observed {self.observed!r} is on plate "
                f"{observed.plate!r} but assignment {self.assignment!r} is on plate {local.plate!r}"
            )
        if components.plates != (local.categories,):
            raise GraphError(
                f"factor {self.name!r}: plate mismatch, {self.components!r} must be repeated over "
                f"plate {local.categories!r} (the values of {self.assignment!r}), got plates "
                f"{components.plates}"
            )
        n_categories = graph.plates[local.categories].size
        prior = components.prior
        if prior.mean.shape[0] != n_categories:
            raise GraphError(
                f"factor {self.name!r}: plate mismatch, the prior of {self.components!r} has "
                f"{prior.mean.shape[0]} components but plate {local.categories!r} has size {n_categories}"
            )
        if observed.data.ndim != 2 or observed.data.shape[1] != prior.dim:
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} must have shape (N, {prior.dim}) "
                f"to match the prior of {self.components!r}, got {observed.data.shape}"
            )

    def expected_loglik(self, state) -> np.ndarray:
        """E_q[ln N(x_i | mu_k, Lambda_k^-1)], shape (N, K).

        The quadratic forms computed on the way are kept on ``state`` (see
        ``quadratic_forms``), so the all-site summaries after a fit reuse
        those of its final ELBO evaluation.
        """
        posterior = state.globals[self.components]
        return mixture_kernels.expected_loglik_from_quadratic_forms(
            self.quadratic_forms(state),
            posterior.beta,
            posterior.dof,
            posterior.wishart.expected_logdet(),
            float(posterior.dim),
        )

    def message(self, target, state):
        if target == self.assignment:
            return self.expected_loglik(state)
        X = state.data[self.observed]
        resp = state.locals[self.assignment]
        counts, sums, outer = mixture_kernels.weighted_gaussian_stats(X, np.ascontiguousarray(resp))
        return (sums, counts, outer, counts.copy())

    def site_messages(self, target, state, sites):
        X = state.data[self.observed][sites]
        resp = state.locals[self.assignment][sites]
        weighted = resp[:, :, None] * X[:, None, :]
        outer = weighted[:, :, :, None] * X[:, None, None, :]
        return (weighted, resp.copy(), outer, resp.copy())

    # Closed forms: removing site i from component k is a rank-one downdate
    # determined by q_ik = (x_i - m_k)^T W_k (x_i - m_k); see kernels.loo.

    def quadratic_forms(self, state, X: np.ndarray | None = None) -> np.ndarray:
        """q_ik = (x_i - m_k)^T W_k (x_i - m_k), shape (N, K); X defaults to the observed data.

        For the observed data the result is cached on ``state`` and reused
        while ``state`` contains the same component posterior and data objects
        (CAVI replaces the posterior object at every update). The cached
        array is shared: callers must not modify it.
        """
        components = state.globals[self.components]
        if X is not None:
            return self._compute_quadratic_forms(components, X)
        X = state.data[self.observed]
        cache = vars(state).setdefault("_quadratic_forms_cache", {})
        entry = cache.get(self.name)
        if entry is not None and entry[0] is components and entry[1] is X:
            return entry[2]
        q = self._compute_quadratic_forms(components, X)
        cache[self.name] = (components, X, q)
        return q

    @staticmethod
    def _compute_quadratic_forms(components, X: np.ndarray) -> np.ndarray:
        return mixture_kernels.quadratic_forms(
            np.ascontiguousarray(X, dtype=float), np.ascontiguousarray(components.mean),
            np.ascontiguousarray(components.wishart._chol),
        )

    def categorical_factor(self, state) -> "CategoricalFactor":
        for factor in state.graph.factors_of(self.assignment):
            if isinstance(factor, CategoricalFactor):
                return factor
        raise ValueError(
            f"factor {self.name!r} needs a CategoricalFactor on {self.assignment!r} for predictive "
            f"densities; the graph has none"
        )

    def loo_kl(self, target, state, improper):
        fitted = state.globals[self.components]
        resp = np.ascontiguousarray(state.locals[self.assignment])
        return loo_kernels.normal_wishart_downdate_kl(
            self.quadratic_forms(state), resp, fitted.beta, fitted.dof,
            multivariate_polygammas(0.5 * fitted.dof, fitted.dim), float(fitted.dim), improper,
        )

    def log_predictive(self, state, q: np.ndarray, resp: np.ndarray, improper: np.ndarray) -> np.ndarray:
        """log p(x_i | data without the weight resp_i), shape (N,).

        With ``resp`` all zero this is the posterior predictive density (a
        mixture of Student-t densities) at the points whose quadratic forms
        are ``q``.
        """
        components = state.globals[self.components]
        weights = state.globals[self.categorical_factor(state).weights]
        return loo_kernels.mixture_loo_log_predictive(
            q, np.ascontiguousarray(resp), components.beta, components.dof,
            components.wishart.logdet_scale(), weights.concentration, float(components.dim), improper,
        )

    def loo_log_predictive(self, state, improper):
        return self.log_predictive(state, self.quadratic_forms(state), state.locals[self.assignment], improper)

    def loo_shifts(self, state):
        return {
            f"{self.components}.mean": lambda: self.mean_shift(state),
            f"{self.components}.mean_norm": lambda: self.mean_shift_norm(state),
        }

    def mean_shift(self, state) -> np.ndarray:
        """m'_k - m_k = -r_ik (x_i - m_k) / (beta_k - r_ik), shape (N, K, D)."""
        components = state.globals[self.components]
        X = state.data[self.observed]
        resp = state.locals[self.assignment]
        factor = resp / (components.beta - resp)
        return -factor[:, :, None] * (X[:, None, :] - components.mean[None, :, :])

    def mean_shift_norm(self, state) -> np.ndarray:
        """Largest over components of the mean shift's length under E[Lambda_k], shape (N,).

        With shift -r u / (beta - r), the squared length is
        nu (r / (beta - r))^2 q.
        """
        components = state.globals[self.components]
        resp = np.ascontiguousarray(state.locals[self.assignment])
        return loo_kernels.mean_shift_norm(self.quadratic_forms(state), resp, components.beta, components.dof)
