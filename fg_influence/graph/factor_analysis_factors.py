"""Factors of factor analysis: continuous latent factors per example as a local block.

For example i with values x_i (D,) and latent factors z_i (L,), write
zeta_i = (z_i, 1) so that the loadings w_d (L + 1,) of column d include its
mean as the last entry:

    z_i ~ N(0, I_L)                                      LatentPriorFactor
    x_id | z_i ~ N(w_d^T zeta_i, 1 / psi_d)              LinearGaussianFactor

with w_d ~ N(0, diag(prior precisions)) (a MultivariateNormal batch of D
rows) and psi_d ~ Gamma (a batch of D). Under q(W) q(psi) prod_i q(z_i)
each q(z_i) is Gaussian, and example i's messages to the globals depend on
E[zeta_i] and E[zeta_i zeta_i^T]. With equal noise precisions this is
probabilistic PCA.
"""

from __future__ import annotations

import numpy as np

from ..families import Gamma, MultivariateNormal
from .blocks import BlockState, LocalBlock, loo_kl_by_division
from .errors import GraphError
from .factors import Factor
from .group_factors import current_global
from .nodes import GlobalVariable, ObservedVariable

LOG_2PI = float(np.log(2.0 * np.pi))


def _latent_moments(state, block: str) -> tuple[np.ndarray, np.ndarray]:
    """E[zeta_i] (N, L + 1) and E[zeta_i zeta_i^T] (N, L + 1, L + 1), with zeta_i = (z_i, 1)."""
    latent = state.locals[block]
    first, second = latent.stat0, latent.stat1
    n, dim = first.shape
    zeta = np.ones((n, dim + 1))
    zeta[:, :dim] = first
    outer = np.empty((n, dim + 1, dim + 1))
    outer[:, :dim, :dim] = second
    outer[:, :dim, dim] = first
    outer[:, dim, :dim] = first
    outer[:, dim, dim] = 1.0
    return zeta, outer


class LatentPriorFactor(Factor):
    """z_i ~ N(0, I) for every example i; no global parents."""

    def __init__(self, name: str, block: str):
        self.name = name
        self.block = block

    def parents(self):
        return ()

    def children(self):
        return (self.block,)

    def check(self, graph) -> None:
        block = self._node(graph, self.block, LocalBlock, "a local block")
        if block.family is not MultivariateNormal:
            raise GraphError(f"factor {self.name!r}: block {self.block!r} must have family MultivariateNormal")

    def block_message(self, target, state):
        dim = state.graph.plates["factors"].size
        n_sites = state.graph.n_sites
        return (np.zeros((n_sites, dim)), np.broadcast_to(-0.5 * np.eye(dim), (n_sites, dim, dim)))

    def site_expected_log_density(self, target, state):
        second = state.locals[self.block].stat1
        dim = second.shape[-1]
        return -0.5 * np.trace(second, axis1=1, axis2=2) - 0.5 * dim * LOG_2PI


class LinearGaussianFactor(Factor):
    """x_id ~ N(w_d^T (z_i, 1), 1 / psi_d) for every example i and column d."""

    def __init__(self, name: str, observed: str, block: str, loadings: str, noise: str):
        self.name = name
        self.observed = observed
        self.block = block
        self.loadings = loadings
        self.noise = noise

    def parents(self):
        return (self.block, self.loadings, self.noise)

    def children(self):
        return (self.observed,)

    def check(self, graph) -> None:
        block = self._node(graph, self.block, LocalBlock, "a local block")
        if block.family is not MultivariateNormal:
            raise GraphError(f"factor {self.name!r}: block {self.block!r} must have family MultivariateNormal")
        observed = self._node(graph, self.observed, ObservedVariable, "an observed variable")
        loadings = self._node(graph, self.loadings, GlobalVariable, "a global variable")
        noise = self._node(graph, self.noise, GlobalVariable, "a global variable")
        n_columns = observed.data.shape[1]
        n_factors = graph.plates["factors"].size
        if not isinstance(loadings.prior, MultivariateNormal) or loadings.prior.mean.shape != (
                n_columns, n_factors + 1):
            raise GraphError(
                f"factor {self.name!r}: the loadings {self.loadings!r} need a MultivariateNormal prior "
                f"with mean shape ({n_columns}, {n_factors + 1}) (one row per column, the factors and "
                f"the column mean), got {type(loadings.prior).__name__}"
            )
        if not isinstance(noise.prior, Gamma) or noise.prior.shape.shape != (n_columns,):
            raise GraphError(
                f"factor {self.name!r}: the noise precisions {self.noise!r} need a Gamma prior of batch "
                f"shape ({n_columns},)"
            )

    def _globals(self, state):
        loadings = current_global(state, self.loadings)
        mean, outer = loadings.expected_stats()
        log_noise, noise = current_global(state, self.noise).expected_stats()
        return mean, outer, log_noise, noise

    def squared_residuals(self, state) -> np.ndarray:
        """E[(x_id - w_d^T zeta_i)^2], shape (N, D)."""
        x = state.data[self.observed]
        zeta, zeta_outer = _latent_moments(state, self.block)
        mean, outer, _, _ = self._globals(state)
        cross = x * (zeta @ mean.T)
        quadratic = np.einsum("dab,iba->id", outer, zeta_outer)
        return x**2 - 2.0 * cross + quadratic

    def block_message(self, target, state):
        x = state.data[self.observed]
        mean, outer, _, noise = self._globals(state)
        dim = mean.shape[1] - 1
        weighted = np.einsum("d,dab->ab", noise, outer)
        linear = (x * noise) @ mean
        eta1 = linear[:, :dim] - weighted[:dim, dim]
        eta2 = np.broadcast_to(-0.5 * weighted[:dim, :dim], (x.shape[0], dim, dim))
        return (eta1, eta2)

    def site_expected_log_density(self, target, state):
        _, _, log_noise, noise = self._globals(state)
        return np.sum(0.5 * (log_noise - LOG_2PI) - 0.5 * noise * self.squared_residuals(state), axis=1)

    def site_messages(self, target, state, sites):
        sites = np.asarray(sites)
        if target == self.noise:
            residuals = self.squared_residuals(state)[sites]
            return (np.full_like(residuals, 0.5), -0.5 * residuals)
        x = state.data[self.observed][sites]
        zeta, zeta_outer = _latent_moments(state, self.block)
        _, _, _, noise = self._globals(state)
        eta1 = (x * noise)[:, :, None] * zeta[sites][:, None, :]
        eta2 = -0.5 * noise[None, :, None, None] * zeta_outer[sites][:, None, :, :]
        return (eta1, eta2)

    def message(self, target, state):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return tuple(m.sum(axis=0) for m in messages)

    def loo_kl(self, target, state, improper):
        messages = self.site_messages(target, state, np.arange(state.graph.n_sites))
        return loo_kl_by_division(state.globals[target], messages, improper)

    def initial_block(self, name, graph, data, rng) -> BlockState:
        """Start from the principal component scores (unit variance), with covariance 0.1 I.

        Zero prior loadings would send zero messages to the factors, and the
        factors zero messages to the loadings, so CAVI needs a start with
        some spread.
        """
        x = data[self.observed]
        dim = graph.plates["factors"].size
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        scores = centred @ vt[:dim].T
        scale = scores.std(axis=0)
        scores = scores / np.where(scale > 0, scale, 1.0)
        if scores.shape[1] < dim:
            scores = np.hstack([scores, rng.normal(size=(x.shape[0], dim - scores.shape[1]))])
        covariance = 0.1 * np.eye(dim)
        distribution = MultivariateNormal(scores, np.linalg.inv(covariance))
        from .blocks import family_block_state

        return family_block_state(distribution)
