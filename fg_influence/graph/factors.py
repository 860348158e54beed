"""Conjugate factors and the messages they send in natural-parameter coordinates.

A factor knows, for each neighbour, the message it sends given the other
neighbours' current posteriors. Messages into a global node are sums over
the site plate; their terms are the site messages, which ``site_messages``
returns for the sites requested without storing an N-long array of them.
"""

from __future__ import annotations

import numpy as np

from ..families import Dirichlet, NormalWishart
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
        """Each requested site's term of the message to a global ``target``; leading axis is the site."""
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
        """E_q[ln N(x_i | mu_k, Lambda_k^-1)], shape (N, K)."""
        posterior = state.globals[self.components]
        X = state.data[self.observed]
        return mixture_kernels.gaussian_expected_loglik(
            X,
            np.ascontiguousarray(posterior.mean),
            np.ascontiguousarray(posterior.wishart._chol),
            posterior.beta,
            posterior.dof,
            posterior.wishart.expected_logdet(),
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
