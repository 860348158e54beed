"""Factors of the hierarchical normal model, whose sites are groups of rows.

Group j has coefficients b_j (a Gaussian local block) and rows
(x_ij, y_ij):

    b_j ~ N(mu, diag(tau)^-1)                      GroupPriorFactor
    y_ij | b_j ~ N(x_ij^T b_j, 1 / noise)          GroupRegressionFactor

with mu ~ MultivariateNormal, tau_d ~ Gamma and noise ~ Gamma global
nodes. Under the mean-field posterior q(mu) q(tau) q(noise) prod_j q(b_j)
every message is a function of E[b_j] and E[b_j b_j^T], so a group's
messages to the globals are formed from its block state. With one
coefficient (an intercept) this is the normal means model
theta_j ~ N(mu, 1/tau), y_ij ~ N(theta_j, 1/noise).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ..families import Gamma, MultivariateNormal
from .blocks import LocalBlock, RaggedObservedVariable, loo_kl_by_division, segment_sum
from .errors import GraphError
from .factors import Factor
from .nodes import GlobalVariable

LOG_2PI = float(np.log(2.0 * np.pi))


def current_global(state, name: str):
    """q of global ``name``, or its prior before the first update of that global.

    The globals of this model send each other messages through the block
    (mu's update reads E[tau] and tau's reads E[mu]), and CAVI's first
    global sweep reaches some of them before they have a posterior.
    """
    posterior = state.globals.get(name)
    return state.graph.variables[name].prior if posterior is None else posterior


def _block_moments(state, block: str) -> tuple[np.ndarray, np.ndarray]:
    """E[b_j] (J, D) and E[b_j b_j^T] (J, D, D) of a Gaussian block."""
    block_state = state.locals[block]
    return block_state.stat0, block_state.stat1


def _check_gaussian_block(factor, graph, name: str) -> LocalBlock:
    block = factor._node(graph, name, LocalBlock, "a local block")
    if block.family is not MultivariateNormal:
        raise GraphError(
            f"factor {factor.name!r} is not conjugate: block {name!r} must have family "
            f"MultivariateNormal, got {block.family}"
        )
    return block


def _check_gamma(factor, graph, name: str, shape: tuple) -> None:
    node = factor._node(graph, name, GlobalVariable, "a global variable")
    if not isinstance(node.prior, Gamma):
        raise GraphError(
            f"factor {factor.name!r} is not conjugate: precision {name!r} needs a Gamma prior, "
            f"got {type(node.prior).__name__}"
        )
    if node.prior.shape.shape != shape:
        raise GraphError(
            f"factor {factor.name!r}: the Gamma prior of {name!r} must have batch shape {shape}, "
            f"got {node.prior.shape.shape}"
        )


class GroupPriorFactor(Factor):
    """b_j ~ N(mu, diag(tau)^-1) for every group j, with global mu (D,) and tau (D,)."""

    def __init__(self, name: str, block: str, mean: str, precision: str):
        self.name = name
        self.block = block
        self.mean = mean
        self.precision = precision

    def parents(self):
        return (self.mean, self.precision)

    def children(self):
        return (self.block,)

    def check(self, graph) -> None:
        _check_gaussian_block(self, graph, self.block)
        mean = self._node(graph, self.mean, GlobalVariable, "a global variable")
        if not isinstance(mean.prior, MultivariateNormal):
            raise GraphError(
                f"factor {self.name!r} is not conjugate: the group mean {self.mean!r} needs a "
                f"MultivariateNormal prior, got {type(mean.prior).__name__}"
            )
        _check_gamma(self, graph, self.precision, (mean.prior.dim,))

    def _globals(self, state):
        mean = current_global(state, self.mean)
        mean_outer = mean.expected_stats()[1]
        tau = current_global(state, self.precision)
        log_tau, tau_mean = tau.expected_stats()
        return mean.mean, np.diagonal(mean_outer).copy(), log_tau, tau_mean

    def squared_deviation(self, state) -> np.ndarray:
        """E[(b_jd - mu_d)^2], shape (J, D)."""
        first, second = _block_moments(state, self.block)
        mu, mu_sq, _, _ = self._globals(state)
        return np.diagonal(second, axis1=1, axis2=2) - 2.0 * first * mu + mu_sq

    def block_message(self, target, state):
        mu, _, _, tau = self._globals(state)
        n_sites = state.graph.n_sites
        eta1 = np.broadcast_to(tau * mu, (n_sites, mu.size))
        eta2 = np.broadcast_to(-0.5 * np.diag(tau), (n_sites, mu.size, mu.size))
        return (eta1, eta2)

    def site_expected_log_density(self, target, state) -> np.ndarray:
        _, _, log_tau, tau = self._globals(state)
        deviation = self.squared_deviation(state)
        return 0.5 * np.sum(log_tau - LOG_2PI) - 0.5 * deviation @ tau

    def site_messages(self, target, state, sites):
        sites = np.asarray(sites)
        if target == self.mean:
            first, _ = _block_moments(state, self.block)
            _, _, _, tau = self._globals(state)
            eta1 = tau * first[sites]
            eta2 = np.broadcast_to(-0.5 * np.diag(tau), (sites.size, tau.size, tau.size)).copy()
            return (eta1, eta2)
        deviation = self.squared_deviation(state)[sites]
        return (np.full_like(deviation, 0.5), -0.5 * deviation)

    def message(self, target, state):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return tuple(m.sum(axis=0) for m in messages)

    def loo_kl(self, target, state, improper):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return loo_kl_by_division(state.globals[target], messages, improper)

    def loo_shifts(self, state):
        return {f"{self.mean}.mean": lambda: self.mean_shift(state)}

    def mean_shift(self, state) -> np.ndarray:
        """E[mu] without group j minus E[mu], shape (J, D); improper divisions give NaN."""
        fitted = state.globals[self.mean]
        eta1, eta2 = self.site_messages(self.mean, state, np.arange(state.graph.n_sites))
        natural = fitted.natural_params()
        precision = -2.0 * (natural[1][None] - eta2)
        shift = np.full(eta1.shape, np.nan)
        for site in range(eta1.shape[0]):
            try:
                divided_mean = np.linalg.solve(precision[site], natural[0] - eta1[site])
            except np.linalg.LinAlgError:
                continue
            shift[site] = divided_mean - fitted.mean
        return shift


class GroupRegressionFactor(Factor):
    """y_ij ~ N(x_ij^T b_j, 1 / noise) for the rows i of group j, with a Gamma noise precision.

    The observed variable is ragged (one site per group) and carries the
    design x_ij as its covariates.
    """

    def __init__(self, name: str, observed: str, block: str, noise: str):
        self.name = name
        self.observed = observed
        self.block = block
        self.noise = noise
        self._stats_cache = (None, None)

    def parents(self):
        return (self.block, self.noise)

    def children(self):
        return (self.observed,)

    def check(self, graph) -> None:
        block = _check_gaussian_block(self, graph, self.block)
        observed = self._node(graph, self.observed, RaggedObservedVariable,
                              "a ragged observed variable (add_ragged_observed)")
        if observed.plate != block.plate:
            raise GraphError(
                f"factor {self.name!r}: plate mismatch, observed {self.observed!r} is on plate "
                f"{observed.plate!r} but block {self.block!r} is on plate {block.plate!r}"
            )
        if observed.data.shape[1] != 1:
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} must have one column (the "
                f"response), got {observed.data.shape[1]}"
            )
        if observed.covariates is None:
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} needs covariates (the design "
                f"matrix); pass covariates= to add_ragged_observed, a column of ones for group means"
            )
        _check_gamma(self, graph, self.noise, ())
        for factor in graph.factors_of(self.block):
            if isinstance(factor, GroupPriorFactor):
                dim = graph.variables[factor.mean].prior.dim
                if observed.covariates.shape[1] != dim:
                    raise GraphError(
                        f"factor {self.name!r}: the design of {self.observed!r} has "
                        f"{observed.covariates.shape[1]} columns but the group coefficients "
                        f"{self.block!r} have dimension {dim}"
                    )

    def group_stats(self, state) -> dict[str, np.ndarray]:
        """Per-group counts n_j, X_j^T X_j (J, D, D), X_j^T y_j (J, D) and y_j^T y_j (J,)."""
        variable = state.graph.variables[self.observed]
        cached_variable, stats = self._stats_cache
        if cached_variable is variable:
            return stats
        y = variable.data[:, 0]
        X = variable.covariates
        offsets = variable.offsets
        stats = {
            "count": variable.lengths.astype(float),
            "xx": segment_sum(X[:, :, None] * X[:, None, :], offsets),
            "xy": segment_sum(X * y[:, None], offsets),
            "yy": segment_sum(y * y, offsets),
        }
        # The graph copies made by without_sites share this factor, so the
        # cache is keyed on the observed variable object.
        self._stats_cache = (variable, stats)
        return stats

    def squared_residuals(self, state) -> np.ndarray:
        """E[sum_i (y_ij - x_ij^T b_j)^2] under q(b_j), shape (J,)."""
        stats = self.group_stats(state)
        first, second = _block_moments(state, self.block)
        cross = np.einsum("jd,jd->j", first, stats["xy"])
        quadratic = np.einsum("jde,jed->j", stats["xx"], second)
        return stats["yy"] - 2.0 * cross + quadratic

    def block_message(self, target, state):
        stats = self.group_stats(state)
        noise = current_global(state, self.noise).mean()
        return (noise * stats["xy"], -0.5 * noise * stats["xx"])

    def site_expected_log_density(self, target, state) -> np.ndarray:
        stats = self.group_stats(state)
        log_noise, noise = current_global(state, self.noise).expected_stats()
        return 0.5 * stats["count"] * (log_noise - LOG_2PI) - 0.5 * noise * self.squared_residuals(state)

    def site_messages(self, target, state, sites):
        sites = np.asarray(sites)
        count = self.group_stats(state)["count"][sites]
        return (0.5 * count, -0.5 * self.squared_residuals(state)[sites])

    def message(self, target, state):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return tuple(m.sum(axis=0) for m in messages)

    def loo_kl(self, target, state, improper):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return loo_kl_by_division(state.globals[target], messages, improper)

    def loo_log_predictive(self, state, improper):
        """Plug-in estimate of log p(y_j | data without group j) for every group, shape (J,).

        Under the divided posterior, b_j ~ N(E[mu], Cov[mu] + diag(1/E[tau]))
        and y_j | b_j ~ N(X_j b_j, I / E[noise]), so y_j is Gaussian with
        covariance X_j (Cov[mu] + diag(1/E[tau])) X_j^T + I / E[noise]. The
        precisions enter through their divided means, so this is an estimate
        of the predictive density, not the exact integral over q(tau) q(noise).
        """
        prior = next(f for f in state.graph.factors_of(self.block) if isinstance(f, GroupPriorFactor))
        sites = np.arange(state.graph.n_sites)
        divided = {}
        for target, factor in ((prior.mean, prior), (prior.precision, prior), (self.noise, self)):
            fitted = state.globals[target]
            messages = factor.site_messages(target, state, sites)
            natural = tuple(p[None] - m for p, m in zip(fitted.natural_params(), messages))
            divided[target] = natural
        variable = state.graph.variables[self.observed]
        y, X, offsets = variable.data[:, 0], variable.covariates, variable.offsets
        values = np.zeros(sites.size)
        for j in sites:
            try:
                mean_part = MultivariateNormal.from_natural(*(n[j] for n in divided[prior.mean]))
                tau = Gamma.from_natural(*(n[j] for n in divided[prior.precision])).mean()
                noise = Gamma.from_natural(*(n[j] for n in divided[self.noise])).mean()
            except ValueError:
                improper[j] = True
                continue
            rows = slice(offsets[j], offsets[j + 1])
            design = X[rows]
            covariance = design @ (mean_part.covariance() + np.diag(1.0 / tau)) @ design.T
            covariance += np.eye(design.shape[0]) / noise
            factor, lower = cho_factor(covariance, lower=True)
            residual = y[rows] - design @ mean_part.mean
            values[j] = -0.5 * (residual @ cho_solve((factor, lower), residual)
                                + 2.0 * np.sum(np.log(np.diag(factor))) + residual.size * LOG_2PI)
        return values

