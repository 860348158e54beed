"""Linear-response correction for the hierarchical normal model, whose sites are local blocks.

Division removes group j's messages from the global posteriors with every
other group's block q(b_k) held at its fitted value. Refitting without the
group also moves the other blocks towards the new population mean, which
moves the globals further. This module adds that response to first order,
as :mod:`fg_influence.influence.linear_response` does for mixtures.

The model (see :mod:`fg_influence.graph.group_factors`) is

    b_j ~ N(mu, diag(tau)^-1),   y_ij | b_j ~ N(x_ij^T b_j, 1 / noise),

with global posteriors q(mu) Gaussian, q(tau_d) and q(noise) Gamma, and a
Gaussian block q(b_j) for each of the J groups.

Coordinates. g contains the natural parameters of the globals, G = 4 D + 2
numbers. For mu they are eta1 = P m and the diagonal of eta2 = -P / 2, and
for each tau_d and for the noise (shape - 1, -rate). Every message to mu has a
diagonal eta2 (-diag(E[tau]) / 2), so CAVI keeps the off-diagonal entries
of mu's eta2 at the prior's values. They are held there and are not
coordinates. The expected statistics the messages read are

    u = (E[mu], E[mu_d^2], E[tau], E[noise]),   U = 3 D + 1 numbers,

and each is the gradient of the globals' log-partition A along one
coordinate (E[mu] along eta1, E[mu_d^2] along eta2_dd, E[tau_d] and
E[noise] along -rate). Write E for the U x G selection of those
coordinates, so du/dg = E H with H the Hessian of A (block-diagonal over
mu, tau and the noise, symmetric positive definite).

Fixed point. One Jacobi sweep of CAVI (update every block from g, then
every global from the blocks and the other globals at g) maps g to
prior + S(g), S(g) = sum_j s_j(u(g)), and the fit is a fixed point. Group
j's block is Gaussian with natural parameters

    lambda_j = (E[tau] * E[mu] + E[noise] X_j^T y_j,
                -diag(E[tau]) / 2 - E[noise] X_j^T X_j / 2),

a closed-form function of u. So with P_j = diag(E[tau]) + E[noise] X_j^T X_j,
Sigma_j = P_j^-1 and beta_j = Sigma_j (E[tau] * E[mu] + E[noise] X_j^T y_j),
a change du moves the block by

    dP_j = diag(dE[tau]) + dE[noise] X_j^T X_j
    dc_j = dE[tau] * E[mu] + E[tau] * dE[mu] + dE[noise] X_j^T y_j
    dbeta_j = Sigma_j (dc_j - dP_j beta_j),   dSigma_j = -Sigma_j dP_j Sigma_j
    dE[b_j b_j^T] = dSigma_j + dbeta_j beta_j^T + beta_j dbeta_j^T

and group j's messages (those to tau and noise that do not depend on g,
1/2 and n_j / 2, drop out) move by

    to eta1 of mu:      dE[tau] * beta_j + E[tau] * dbeta_j
    to eta2_dd of mu:   -dE[tau_d] / 2
    to -rate of tau_d:  -(dE[b_jd^2] - 2 dbeta_jd E[mu_d] - 2 beta_jd dE[mu_d] + dE[mu_d^2]) / 2
    to -rate of noise:  dbeta_j^T X_j^T y_j - tr(X_j^T X_j dE[b_j b_j^T]) / 2.

Each row is paired with one entry of u, so these derivatives form a U x U
matrix W_j, and

    J = dS/dg = V H,   V = E^T W E,   W = sum_j W_j.

W_j is symmetric: the messages are the gradient in u of group j's expected
log joint plus block entropy, maximised over q(b_j) (the envelope
theorem), and W_j is its Hessian. It is not positive semi-definite (unlike
the mixture's V), because the expected log joint couples E[tau] and
E[mu] directly. With H = L L^T, J is similar to the symmetric
B = L^T V L, and I - B is minus the Hessian of the ELBO, with the blocks
maximised out, in the coordinates L^T g. So I - B is positive definite
exactly when the fit is a strict local maximum. Every eigenvalue of B is
real and below 1 there, and some may be negative.

Removing group j and linearising the fixed-point equation at the fit gives

    delta_g_j = -(I - J)^-1 s_j = -L^-T (I - B)^-1 L^T s_j,

division (-s_j) plus the response term. One Cholesky factorisation of the
G x G matrix I - B serves every group. Because G is small, each group's
corrected global posteriors are then built and compared with the fit
exactly (KL, plug-in LOO predictive density, shift of E[mu]).

The library's own CAVI updates the globals one after another (a
Gauss-Seidel sweep), which has the same fixed points as the Jacobi sweep
above but a different Jacobian. The linearisation of the fixed-point
equation, and so delta_g_j, uses the Jacobi form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import linalg
from scipy.special import polygamma

from .._validation import check_site_indices
from ..families import Gamma, MultivariateNormal
from ..graph.blocks import block_names, loo_kl_by_division
from ..graph.group_factors import LOG_2PI, GroupPriorFactor, GroupRegressionFactor
from ..inference.posterior import Posterior
from .division import site_messages
from .linear_response import (  # noqa: F401  (the exception types are re-exported for callers)
    IllConditionedResponseWarning,
    SingularResponseError,
    check_conditioning,
    hessian_cholesky,
)

__all__ = [
    "DenseResponseSystem",
    "HierarchicalResponseSystem",
    "HierarchicalLinearResponseSummaries",
    "all_group_summaries",
    "build_hierarchical_response_system",
    "group_information",
    "newton_corrected_coordinates",
]


# The model's factors and its coordinates.


def hierarchical_factors(posterior: Posterior) -> tuple[GroupPriorFactor, GroupRegressionFactor]:
    """Find the group prior and regression factors of a hierarchical normal graph.

    Raises
    ------
    NotImplementedError
        If the graph is not the hierarchical normal model: one Gaussian
        block with a ``GroupPriorFactor`` and a ``GroupRegressionFactor``,
        no local categorical variable, and no global beyond the population
        mean, the between-group precisions and the noise precision.
    """
    graph = posterior.graph
    blocks = block_names(graph)
    locals_ = [v.name for v in graph.variables_of_role("local")]
    factors = graph.factors_of(blocks[0]) if len(blocks) == 1 else []
    priors = [f for f in factors if isinstance(f, GroupPriorFactor)]
    likelihoods = [f for f in factors if isinstance(f, GroupRegressionFactor)]
    supported = len(blocks) == 1 and not locals_ and len(factors) == 2 and len(priors) == len(likelihoods) == 1
    if supported:
        expected = {priors[0].mean, priors[0].precision, likelihoods[0].noise}
        supported = {v.name for v in graph.variables_of_role("global")} == expected
    if not supported:
        raise NotImplementedError(
            f"the linear-response correction for local blocks supports the hierarchical normal model "
            f"only (one Gaussian block with a GroupPriorFactor and a GroupRegressionFactor, no other "
            f"local variable or global); this graph has blocks {blocks}, local variables {locals_} and "
            f"factors {sorted(type(f).__name__ for f in graph.factors.values())}. Use method='division'"
        )
    return priors[0], likelihoods[0]


@dataclass(frozen=True)
class CoordinateLayout:
    """Positions of each global's natural parameters in g, for coefficient dimension D.

    g = (eta1 of mu (D), diagonal of eta2 of mu (D), shape - 1 of tau (D),
    -rate of tau (D), shape - 1 of the noise, -rate of the noise).
    """

    dim: int

    @property
    def size(self) -> int:
        return 4 * self.dim + 2

    @property
    def mean(self) -> slice:
        return slice(0, 2 * self.dim)

    @property
    def precision(self) -> slice:
        return slice(2 * self.dim, 4 * self.dim)

    @property
    def noise(self) -> slice:
        return slice(4 * self.dim, 4 * self.dim + 2)

    @property
    def statistics(self) -> np.ndarray:
        """Positions of the coordinates paired with u = (E[mu], E[mu_d^2], E[tau], E[noise]), shape (U,)."""
        d = self.dim
        return np.concatenate([np.arange(2 * d), np.arange(3 * d, 4 * d), [4 * d + 1]])

    def names(self, mean: str, precision: str, noise: str) -> tuple[str, ...]:
        d = self.dim
        return (tuple(f"{mean}.eta1[{a}]" for a in range(d)) + tuple(f"{mean}.eta2[{a},{a}]" for a in range(d))
                + tuple(f"{precision}.shape_minus_one[{a}]" for a in range(d))
                + tuple(f"{precision}.minus_rate[{a}]" for a in range(d))
                + (f"{noise}.shape_minus_one", f"{noise}.minus_rate"))


def global_coordinates(layout: CoordinateLayout, mean_natural, precision_natural, noise_natural) -> np.ndarray:
    """Pack natural parameters (site axes first, if any) into coordinates, shape (..., G)."""
    eta1, eta2 = (np.asarray(p, dtype=float) for p in mean_natural)
    shape_term, rate_term = (np.asarray(p, dtype=float) for p in precision_natural)
    noise_shape, noise_rate = (np.asarray(p, dtype=float) for p in noise_natural)
    return np.concatenate([eta1, np.diagonal(eta2, axis1=-2, axis2=-1), shape_term, rate_term,
                           noise_shape[..., None], noise_rate[..., None]], axis=-1)


def _mean_hessian(dist: MultivariateNormal) -> np.ndarray:
    """d(E[mu], E[mu_d^2]) / d(eta1, diagonal of eta2), shape (2 D, 2 D).

    With Sigma = (-2 eta2)^-1 and m = Sigma eta1, a step in eta2_dd moves
    Sigma by 2 Sigma e_d e_d^T Sigma, so dm = 2 Sigma[:, d] m_d and
    dE[mu_c^2] = 2 Sigma_cd^2 + 4 m_c Sigma_cd m_d.
    """
    sigma, m = dist.covariance(), dist.mean
    top = np.hstack([sigma, 2.0 * sigma * m[None, :]])
    bottom = np.hstack([2.0 * m[:, None] * sigma, 2.0 * sigma**2 + 4.0 * np.outer(m, m) * sigma])
    return np.vstack([top, bottom])


def _gamma_hessian(dist: Gamma) -> np.ndarray:
    """d(E[ln x], E[x]) / d(shape - 1, -rate) per element, shape batch + (2, 2)."""
    shape, rate = np.asarray(dist.shape, dtype=float), np.asarray(dist.rate, dtype=float)
    out = np.empty(shape.shape + (2, 2))
    out[..., 0, 0] = polygamma(1, shape)
    out[..., 0, 1] = out[..., 1, 0] = 1.0 / rate
    out[..., 1, 1] = shape / rate**2
    return out


def log_partition_hessian(layout: CoordinateLayout, mean: MultivariateNormal, precision: Gamma,
                          noise: Gamma) -> np.ndarray:
    """H = d(expected statistics) / dg, the Hessian of the globals' log-partition, shape (G, G)."""
    d = layout.dim
    hessian = np.zeros((layout.size, layout.size))
    hessian[layout.mean, layout.mean] = _mean_hessian(mean)
    tau = _gamma_hessian(precision)
    diagonal = np.arange(d)
    for row in range(2):
        for col in range(2):
            hessian[2 * d + row * d + diagonal, 2 * d + col * d + diagonal] = tau[:, row, col]
    hessian[layout.noise, layout.noise] = _gamma_hessian(noise)
    return 0.5 * (hessian + hessian.T)


# The Jacobian.


def group_information(mean: MultivariateNormal, precision: Gamma, noise: Gamma,
                      stats: dict[str, np.ndarray]) -> np.ndarray:
    """W_j = d s_j / du for every group, shape (J, U, U), U = 3 D + 1.

    Row r is the derivative of group j's message in the coordinate paired
    with u_r, and column c the direction u_c, with u = (E[mu], E[mu_d^2],
    E[tau], E[noise]). The block q(b_j) is the one the globals induce, so W_j is the
    total derivative through the block update (the formulas are in the
    module docstring). ``stats`` are the groups' ``count``, ``xx`` (J, D, D),
    ``xy`` (J, D) and ``yy`` (J,), as ``GroupRegressionFactor.group_stats``
    returns them.
    """
    xx, xy = stats["xx"], stats["xy"]
    d = mean.dim
    u_size = 3 * d + 1
    tau, mu, noise_mean = np.asarray(precision.mean(), dtype=float), mean.mean, float(noise.mean())

    # The blocks that the globals induce.
    block_precision = np.diag(tau)[None] + noise_mean * xx
    block_covariance = np.linalg.inv(block_precision)
    block_covariance = 0.5 * (block_covariance + np.swapaxes(block_covariance, 1, 2))
    beta = np.einsum("jab,jb->ja", block_covariance, tau * mu + noise_mean * xy)

    # Directions of u: dE[tau] (U, D), dE[mu], dE[mu^2], dE[noise] (U,).
    directions = np.eye(u_size)
    d_mu, d_mu_sq, d_tau, d_noise = (directions[:, :d], directions[:, d:2 * d],
                                     directions[:, 2 * d:3 * d], directions[:, 3 * d])

    # Block response along each direction, (J, U, D) and (J, U, D, D).
    d_precision = (d_tau[:, :, None] * np.eye(d)[None])[None] + d_noise[None, :, None, None] * xx[:, None]
    d_shift = (d_tau * mu + tau * d_mu)[None] + d_noise[None, :, None] * xy[:, None, :]
    d_beta = np.einsum("jab,jub->jua", block_covariance,
                       d_shift - np.einsum("juab,jb->jua", d_precision, beta))
    d_covariance = -np.einsum("jab,jubc,jcd->juad", block_covariance, d_precision, block_covariance)
    d_second = (d_covariance + d_beta[..., :, None] * beta[:, None, None, :]
                + beta[:, None, :, None] * d_beta[..., None, :])

    # Message derivatives, paired with u's entries in order.
    to_mean = d_tau[None] * beta[:, None, :] + tau * d_beta
    to_mean_sq = np.broadcast_to(-0.5 * d_tau[None], d_beta.shape)
    to_tau = -0.5 * (np.diagonal(d_second, axis1=2, axis2=3) - 2.0 * d_beta * mu
                     - 2.0 * beta[:, None, :] * d_mu[None] + d_mu_sq[None])
    to_noise = (np.einsum("jua,ja->ju", d_beta, xy) - 0.5 * np.einsum("jab,juba->ju", xx, d_second))[..., None]
    by_direction = np.concatenate([to_mean, to_mean_sq, to_tau, to_noise], axis=2)
    return np.swapaxes(by_direction, 1, 2)


class DenseResponseSystem:
    """Methods shared by response systems that hold J as a dense (G, G) matrix.

    A subclass provides ``layout`` (with ``size`` = G), ``coordinates``,
    ``site_messages`` (n, G), ``hessian``, its lower Cholesky factor
    ``cholesky``, ``missing_information`` V, ``symmetric`` B = L^T V L,
    ``eigenvalues`` (ascending) and ``site_jacobian(site)``.
    """

    @property
    def n_sites(self) -> int:
        return self.site_messages.shape[0]

    @property
    def largest_eigenvalue(self) -> float:
        return float(self.eigenvalues[-1])

    @cached_property
    def jacobian(self) -> np.ndarray:
        """J = V H, shape (G, G)."""
        return self.missing_information @ self.hessian

    @cached_property
    def _factor(self):
        return linalg.cho_factor(np.eye(self.layout.size) - self.symmetric, lower=True)

    def solve(self, vectors: np.ndarray) -> np.ndarray:
        """Apply (I - J)^-1 to each row of ``vectors`` (n, G), as L^-T (I - B)^-1 L^T."""
        inner = linalg.cho_solve(self._factor, self.cholesky.T @ np.asarray(vectors, dtype=float).T)
        return linalg.solve_triangular(self.cholesky, inner, lower=True, trans="T").T

    @cached_property
    def response(self) -> np.ndarray:
        """M = (I - J)^-1 J, shape (G, G): the response term of a message s is -M s."""
        return self.solve(self.jacobian.T).T

    def corrected_coordinates(self, sites) -> np.ndarray:
        """Return g + delta_g_i = g - (I - J)^-1 s_i for each given site, shape (n, G)."""
        sites = np.asarray(sites)
        return self.coordinates[None] - self.solve(self.site_messages[sites])


@dataclass
class HierarchicalResponseSystem(DenseResponseSystem):
    """J = dS/dg at a fitted hierarchical normal posterior, and (I - J)^-1 by Cholesky.

    Attributes
    ----------
    layout : CoordinateLayout
    names : tuple of str
        Name of each of the G coordinates.
    variables : tuple of str
        Names of the population mean, the between-group precision and the
        noise precision.
    coordinates : ndarray, shape (G,)
        Fitted g.
    prior_coordinates : ndarray, shape (G,)
    mean_eta2 : ndarray, shape (D, D)
        Fitted eta2 of mu, whose off-diagonal entries stay fixed.
    site_messages : ndarray, shape (J, G)
        Each group's messages s_j at the fit (those division subtracts).
    hessian : ndarray, shape (G, G)
        H, the Hessian of the globals' log-partition.
    cholesky : ndarray, shape (G, G)
        Lower Cholesky factor L of H.
    group_information : ndarray, shape (J, U, U)
        W_j of each group, symmetrised.
    missing_information : ndarray, shape (G, G)
        V = E^T (sum_j W_j) E.
    symmetric : ndarray, shape (G, G)
        B = L^T V L.
    eigenvalues : ndarray, shape (G,)
        Of J (equal to those of B), ascending.
    condition_number : float
        Of I - J, as (1 - smallest) / (1 - largest) eigenvalue.
    """

    layout: CoordinateLayout
    names: tuple
    variables: tuple
    coordinates: np.ndarray
    prior_coordinates: np.ndarray
    mean_eta2: np.ndarray
    site_messages: np.ndarray
    hessian: np.ndarray
    cholesky: np.ndarray
    group_information: np.ndarray
    missing_information: np.ndarray
    symmetric: np.ndarray
    eigenvalues: np.ndarray
    condition_number: float

    def site_jacobian(self, site: int) -> np.ndarray:
        """J_j = E^T W_j E H, group j's own term of J, shape (G, G)."""
        positions = self.layout.statistics
        own = np.zeros((self.layout.size, self.layout.size))
        own[np.ix_(positions, positions)] = self.group_information[site]
        return own @ self.hessian

    def natural_params(self, coords: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        """Natural parameters of each global at coordinates of shape (..., G), by variable name."""
        coords = np.asarray(coords, dtype=float)
        layout, d = self.layout, self.layout.dim
        eta2 = np.broadcast_to(self.mean_eta2, coords.shape[:-1] + (d, d)).copy()
        eta2[..., np.arange(d), np.arange(d)] = coords[..., d:2 * d]
        mean, precision, noise = self.variables
        return {
            mean: (coords[..., :d].copy(), eta2),
            precision: (coords[..., 2 * d:3 * d].copy(), coords[..., 3 * d:4 * d].copy()),
            noise: (coords[..., layout.noise.start].copy(), coords[..., layout.noise.start + 1].copy()),
        }

    def to_globals(self, coords: np.ndarray) -> dict:
        """Build the global posteriors at coordinates (G,); raise ValueError if one is improper."""
        families = dict(zip(self.variables, (MultivariateNormal, Gamma, Gamma)))
        return {name: families[name].from_natural(*natural) for name, natural in self.natural_params(coords).items()}


def build_hierarchical_response_system(posterior: Posterior, *, warn: bool = True) -> HierarchicalResponseSystem:
    """Assemble J at a fitted hierarchical normal posterior and factorise I - B.

    Raises
    ------
    NotImplementedError
        If the graph is not the hierarchical normal model.
    SingularResponseError
        If J has an eigenvalue of at least 1: the fit is not a strict local
        maximum of the ELBO (not converged, or a flat direction).

    Warns
    -----
    IllConditionedResponseWarning
        If the condition number of I - J exceeds CONDITION_WARN.
    """
    prior_factor, likelihood = hierarchical_factors(posterior)
    variables = (prior_factor.mean, prior_factor.precision, likelihood.noise)
    mean, precision, noise = (posterior.globals[name] for name in variables)
    graph = posterior.graph
    layout = CoordinateLayout(mean.dim)

    def coordinates_of(dists):
        return global_coordinates(layout, *(dist.natural_params() for dist in dists))

    all_sites = np.arange(posterior.n_sites)
    messages = global_coordinates(layout, *(site_messages(posterior, name, all_sites) for name in variables))

    hessian = log_partition_hessian(layout, mean, precision, noise)
    chol = hessian_cholesky(hessian, variables)
    information = group_information(mean, precision, noise, likelihood.group_stats(posterior))
    information = 0.5 * (information + np.swapaxes(information, 1, 2))
    positions = layout.statistics
    v = np.zeros((layout.size, layout.size))
    v[np.ix_(positions, positions)] = information.sum(axis=0)
    b_sym, eigenvalues = symmetric_form(chol, v)
    condition = check_conditioning(float(eigenvalues[-1]), float(eigenvalues[0]), warn, ADVICE)
    return HierarchicalResponseSystem(
        layout=layout,
        names=layout.names(*variables),
        variables=variables,
        coordinates=coordinates_of((mean, precision, noise)),
        prior_coordinates=coordinates_of(tuple(graph.variables[name].prior for name in variables)),
        mean_eta2=mean.natural_params()[1].copy(),
        site_messages=messages,
        hessian=hessian,
        cholesky=chol,
        group_information=information,
        missing_information=v,
        symmetric=b_sym,
        eigenvalues=eigenvalues,
        condition_number=condition,
    )


#: Advice in the errors and warnings about I - J, for the hierarchical normal model.
ADVICE = {
    "singular": "Refit with a smaller tol or a larger max_iter, or use stronger priors on the precisions, "
                "or use method='division'",
    "cause": "often a between-group precision that the data barely determine",
    "ill_conditioned": "use stronger priors on the precisions, or check the estimates against exact refits",
}


def symmetric_form(cholesky: np.ndarray, information: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return B = L^T V L, symmetrised, and its eigenvalues in ascending order."""
    b_sym = cholesky.T @ information @ cholesky
    b_sym = 0.5 * (b_sym + b_sym.T)
    return b_sym, np.linalg.eigvalsh(b_sym)


def newton_corrected_coordinates(system: DenseResponseSystem, site: int) -> np.ndarray:
    """Take one Newton step from the fit towards the fixed point without site i, shape (G,).

    The fixed-point equation without site i is F(g) = g - prior - S(g) + s_i(g) = 0.
    At the fit F = s_i and F' = I - (J - J_i), so the Newton step is
    g - (I - J + J_i)^-1 s_i = g - s_i - (I - J + J_i)^-1 (J - J_i) s_i: division
    plus a response term. The all-site estimate uses J in place of J - J_i.
    A site is a group of the hierarchical model or a row of factor analysis.
    """
    site = int(check_site_indices([site], system.n_sites)[0])
    without = system.jacobian - system.site_jacobian(site)
    step = np.linalg.solve(np.eye(system.layout.size) - without, system.site_messages[site])
    return system.coordinates - step


# All-group summaries.


def corrected_global_kl(posterior: Posterior, system) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Correct every site's global coordinates and take each global's KL to them.

    ``system`` offers ``corrected_coordinates``, ``natural_params``,
    ``coordinates``, ``variables`` and ``n_sites``, as the hierarchical and
    factor-analysis systems do. The KL goes through division's batched
    routine, with the corrected move as the "message". A site whose
    coordinates or KL are not finite is improper: its coordinates are reset
    to the fit and its KL to 0.

    Returns
    -------
    corrected : ndarray, shape (n, G)
    kl_by_variable : dict of str to ndarray, shape (n,)
    improper : ndarray of bool, shape (n,)
    """
    corrected = system.corrected_coordinates(np.arange(system.n_sites))
    improper = ~np.all(np.isfinite(corrected), axis=1)
    corrected[improper] = system.coordinates
    moved = system.natural_params(corrected)
    fitted = system.natural_params(system.coordinates)
    kl_by_variable = {}
    for name in system.variables:
        difference = tuple(f[None] - c for f, c in zip(fitted[name], moved[name]))
        kl_by_variable[name] = loo_kl_by_division(posterior.globals[name], difference, improper)
    for values in kl_by_variable.values():
        improper |= ~np.isfinite(values)
    for values in kl_by_variable.values():
        values[improper] = 0.0
    return corrected, kl_by_variable, improper


class HierarchicalLinearResponseSummaries:
    """Per-group summaries of the linear-response corrected global posteriors, group axis first.

    Each group's corrected coordinates g - (I - J)^-1 s_j are turned into
    Gaussian and Gamma posteriors and compared with the fit exactly. A
    corrected posterior is improper when a Gamma shape or rate is at most 0
    or the precision of mu is not positive definite. Such a group is flagged
    in ``improper``, and its KL, shift and predictive density are left at 0,
    0 and -inf.

    Attributes
    ----------
    system : HierarchicalResponseSystem
    corrected : ndarray, shape (J, G)
        Corrected coordinates of every group.
    kl_by_variable : dict of str to ndarray, shape (J,)
        KL(q || q corrected) of each global, 0 for improper groups.
    improper : ndarray of bool, shape (J,)
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True):
        self.posterior = posterior
        self.system = build_hierarchical_response_system(posterior, warn=warn)
        self.corrected, self.kl_by_variable, self.improper = corrected_global_kl(posterior, self.system)

    @property
    def shift_names(self) -> list[str]:
        return [f"{self.system.variables[0]}.mean"]

    @cached_property
    def _corrected_globals(self) -> list:
        """Corrected global posteriors of every group (None where improper)."""
        out = []
        for site in range(self.system.n_sites):
            if self.improper[site]:
                out.append(None)
                continue
            out.append(self.system.to_globals(self.corrected[site]))
        return out

    @cached_property
    def shifts(self) -> dict[str, np.ndarray]:
        """E[mu] corrected minus E[mu], shape (J, D), 0 where improper."""
        name = self.system.variables[0]
        fitted = self.posterior.globals[name].mean
        shift = np.zeros((self.system.n_sites, fitted.size))
        for site, corrected in enumerate(self._corrected_globals):
            if corrected is not None:
                shift[site] = corrected[name].mean - fitted
        return {f"{name}.mean": shift}

    @cached_property
    def loo_log_predictive(self) -> np.ndarray:
        """Plug-in log p(y_j | data without group j) under the corrected posteriors, shape (J,).

        The same estimate as division's (``GroupRegressionFactor.loo_log_predictive``):
        y_j is Gaussian with mean X_j E[mu] and covariance
        X_j (Cov[mu] + diag(1 / E[tau])) X_j^T + I / E[noise], here with the
        corrected posteriors. -inf where improper.
        """
        _, likelihood = hierarchical_factors(self.posterior)
        variable = self.posterior.graph.variables[likelihood.observed]
        y, design, offsets = variable.data[:, 0], variable.covariates, variable.offsets
        mean_name, precision_name, noise_name = self.system.variables
        values = np.full(self.system.n_sites, -np.inf)
        for site, corrected in enumerate(self._corrected_globals):
            if corrected is None:
                continue
            rows = slice(offsets[site], offsets[site + 1])
            x = design[rows]
            mean = corrected[mean_name]
            group_covariance = mean.covariance() + np.diag(1.0 / corrected[precision_name].mean())
            covariance = x @ group_covariance @ x.T + np.eye(x.shape[0]) / corrected[noise_name].mean()
            factor = linalg.cho_factor(covariance, lower=True)
            residual = y[rows] - x @ mean.mean
            values[site] = -0.5 * (residual @ linalg.cho_solve(factor, residual)
                                   + 2.0 * np.sum(np.log(np.diag(factor[0]))) + residual.size * LOG_2PI)
        return values


def all_group_summaries(posterior: Posterior, *, warn: bool = True) -> HierarchicalLinearResponseSummaries:
    """Linear-response KL of every group now, shifts and LOO predictive density on first access."""
    return HierarchicalLinearResponseSummaries(posterior, warn=warn)
