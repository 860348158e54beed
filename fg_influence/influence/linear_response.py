"""Linear-response correction of division: the response of the CAVI fixed point.

Division removes site i's message with every other site's responsibilities
held fixed. When site i leaves, the other sites' responsibilities move,
which moves the global posterior further. Write the fitted global natural
(count) coordinates g as the fixed point of one CAVI iteration (an E-step
followed by an M-step),

    g = prior + S(g),   S(g) = sum_j s_j(r_j(g)),

where r_j(g) are the responsibilities the E-step computes from g and s_j
is site j's message. Removing site i and linearising the fixed-point
equation at the fit gives

    delta_g_i = -(I - J)^-1 s_i = -s_i - (I - J)^-1 J s_i,   J = dS/dg,

that is, division (-s_i) plus the response term. One factorisation of
I - J serves every site.

Structure of J for a mixture. Each site message is linear in the site's
responsibilities, s_j = Phi_j r_j, where column k of Phi_j holds the site's
sufficient statistics in category k's block of coordinates. Conjugacy makes
the E-step logits a_j = Phi_j^T mu(g) + const, with mu(g) the expected
sufficient statistics of q, so with C_j = diag(r_j) - r_j r_j^T (the
Jacobian of the softmax) and H = d mu / d g (the Hessian of the log-partition
of q, symmetric positive definite),

    J = V H,   V = sum_j Phi_j C_j Phi_j^T.

V is the VB counterpart of the missing information: the covariance of the
site statistics under q(z_j), summed over sites. With H = L L^T, J is
similar to the symmetric positive semi-definite B = L^T V L, whose
eigenvalues are the rates at which CAVI converges along each direction. At
a stable fixed point they lie in [0, 1), and I - B is factorised by
Cholesky.

Which factor types support this is a registry keyed by factor class: a
provider returns the factor's block of coordinates per category (features,
Hessian, fitted and prior coordinates, and how to summarise corrected
coordinates). Providers for ``CategoricalFactor`` and
``GaussianMixtureFactor`` are defined here; other factor types raise an
error that names the class and this registry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.special import gammaln, logsumexp, polygamma, psi

from .._validation import check_site_indices
from ..families._linalg import multivariate_digamma
from ..graph.factors import CategoricalFactor, GaussianMixtureFactor
from ..inference.posterior import Posterior
from ..kernels import linear_response as lr_kernels

#: Responsibilities r_ik (and softmax-Jacobian weights r_ik r_il) below this
#: value are skipped when assembling J and the response term; the division
#: part -s_i always uses every component. A skipped r_ik changes site i's
#: response by at most RESP_TOL ||M_k f_i||, about K * RESP_TOL relative to
#: the site's own message, far below the error of a first-order estimate. It
#: lets components that share no ambiguous sites cost nothing.
RESP_TOL = 1e-10

#: Condition number of I - J above which a warning is raised.
CONDITION_WARN = 1e8

#: Sites per chunk of the all-site pass; bounds memory at CHUNK_SITES x G floats.
CHUNK_SITES = 2048


class IllConditionedResponseWarning(UserWarning):
    """I - J is badly conditioned: the linear-response estimates amplify rounding and model error."""


class SingularResponseError(ValueError):
    """I - J is singular or indefinite: the fit is not a stable CAVI fixed point."""


# Registry of factor types that provide their block of the Jacobian.


@dataclass
class ResponseBlock:
    """One factor's per-category block of global coordinates and its response ingredients.

    Attributes
    ----------
    variable : str
        The global variable whose coordinates the block holds.
    names : tuple of str
        Names of the block's coordinates (length Q), for messages and tests.
    features : ndarray, shape (N, Q)
        Site statistics: site i's message to category k's block is
        ``r_ik * features[i]``.
    coordinates : ndarray, shape (K, Q)
        Fitted coordinates of each category's block.
    prior_coordinates : ndarray, shape (K, Q)
    hessian : ndarray, shape (K, Q, Q)
        d mu / d g per category, restricted to the block. Coupling between
        categories (the Dirichlet's -psi'(sum alpha) term) is left out,
        because it multiplies C_j 1 = 0 and so never reaches J.
    to_posterior : callable
        Maps coordinates of shape (K, Q) to the global variable's family
        object, for checking against the generic CAVI code.
    summarize : callable
        ``summarize(corrected, sites, improper)`` with ``corrected`` of shape
        (n, K, Q) returns a dict with ``"kl"`` (n,), and optionally
        ``"log_weights"`` or ``"log_density"`` (n, K) and named shifts.
    """

    variable: str
    names: tuple[str, ...]
    features: np.ndarray
    coordinates: np.ndarray
    prior_coordinates: np.ndarray
    hessian: np.ndarray
    to_posterior: Callable
    summarize: Callable

    @property
    def size(self) -> int:
        return self.features.shape[1]


RESPONSE_PROVIDERS: dict[type, Callable[[object, Posterior], ResponseBlock]] = {}


def register_response(factor_class: type):
    """Register ``provider(factor, posterior) -> ResponseBlock`` for a factor class (decorator)."""

    def decorate(provider):
        RESPONSE_PROVIDERS[factor_class] = provider
        return provider

    return decorate


def _provider_for(factor) -> Callable:
    for cls in type(factor).__mro__:
        if cls in RESPONSE_PROVIDERS:
            return RESPONSE_PROVIDERS[cls]
    supported = sorted(c.__name__ for c in RESPONSE_PROVIDERS)
    raise NotImplementedError(
        f"the linear-response correction is not available for factor {factor.name!r} of type "
        f"{type(factor).__name__}: no Jacobian block is registered for it (supported: {supported}). "
        f"Use method='division', or register a provider with "
        f"fg_influence.influence.linear_response.register_response"
    )


# Dirichlet weights: one coordinate alpha_k per category.


@register_response(CategoricalFactor)
def _categorical_block(factor: CategoricalFactor, posterior: Posterior) -> ResponseBlock:
    graph = posterior.graph
    alpha = posterior.globals[factor.weights].concentration
    prior_alpha = graph.variables[factor.weights].prior.concentration
    n_sites = posterior.n_sites

    def to_posterior(coords):
        from ..families import Dirichlet

        return Dirichlet(coords[:, 0])

    def summarize(corrected, sites, improper):
        alpha_new = corrected[:, :, 0]
        bad = np.any(alpha_new <= 0.0, axis=1)
        improper |= bad
        safe = np.where(bad[:, None], alpha[None, :], alpha_new)
        total, total_new = alpha.sum(), safe.sum(axis=1)
        expected_log = psi(alpha) - psi(total)
        kl = (gammaln(total) - gammaln(alpha).sum() - gammaln(total_new) + gammaln(safe).sum(axis=1)
              + ((alpha[None, :] - safe) * expected_log[None, :]).sum(axis=1))
        kl[bad] = 0.0
        mean_shift = safe / total_new[:, None] - alpha / total
        return {
            "kl": kl,
            "log_weights": np.log(safe) - np.log(total_new)[:, None],
            "shifts": {f"{factor.weights}.mean": mean_shift},
        }

    return ResponseBlock(
        variable=factor.weights,
        names=(f"{factor.weights}.concentration",),
        features=np.ones((n_sites, 1)),
        coordinates=alpha[:, None].copy(),
        prior_coordinates=np.broadcast_to(prior_alpha, alpha.shape)[:, None].copy(),
        hessian=polygamma(1, alpha)[:, None, None],
        to_posterior=to_posterior,
        summarize=summarize,
    )


# Normal-Wishart components: (t, kappa, upper(Psi), n) per category.


def normal_wishart_coordinates(dist) -> np.ndarray:
    """Count coordinates (t, kappa, upper triangle of Psi, nu - D) of a batch, shape (K, P).

    The upper triangle (``numpy.triu_indices`` order) parameterises the
    symmetric Psi, so a unit step in an off-diagonal coordinate moves both
    Psi_ab and Psi_ba; derivatives in these coordinates match finite
    differences.
    """
    t, kappa, psi_matrix, dof_offset = dist.natural_params()
    rows, cols = np.triu_indices(dist.dim)
    return np.concatenate([t, kappa[:, None], psi_matrix[:, rows, cols], dof_offset[:, None]], axis=1)


def normal_wishart_from_coordinates(coords: np.ndarray, dim: int):
    """Inverse of :func:`normal_wishart_coordinates`; raises ValueError if improper."""
    from ..families import NormalWishart

    rows, cols = np.triu_indices(dim)
    psi_matrix = np.zeros(coords.shape[:-1] + (dim, dim))
    upper = coords[..., dim + 1: -1]
    psi_matrix[..., rows, cols] = upper
    psi_matrix[..., cols, rows] = upper
    return NormalWishart.from_natural(coords[..., :dim], coords[..., dim], psi_matrix, coords[..., -1])


def normal_wishart_features(X: np.ndarray) -> np.ndarray:
    """Site statistics (x, 1, upper(x x^T), 1) in the coordinates above, shape (N, P)."""
    n, d = X.shape
    rows, cols = np.triu_indices(d)
    ones = np.ones((n, 1))
    return np.concatenate([X, ones, X[:, rows] * X[:, cols], ones], axis=1)


def normal_wishart_hessian(dist) -> np.ndarray:
    """d mu / d g for Normal-Wishart count coordinates, shape (K, P, P).

    mu are the expected statistics paired with the coordinates: E[Lambda mu],
    E[-mu^T Lambda mu / 2], d/dPsi_ab of the log-partition (-E[Lambda_ab] / 2
    on the diagonal, -E[Lambda_ab] off it) and E[ln|Lambda|] / 2. With
    m = t / kappa, S = W^-1 = Psi - t t^T / kappa, c = W m and gamma = m^T W m,
    the differentials are

        dm = (dt - m dkappa) / kappa
        dS = dPsi - dt m^T - m dt^T + m m^T dkappa
        d mu_t     = c dnu - nu W dS c + nu W dm
        d mu_kappa = D dkappa / (2 kappa^2) - gamma dnu / 2 - nu c^T dm + nu c^T dS c / 2
        d mu_Psi   = -W dnu / 2 + nu W dS W / 2
        d mu_n     = psi'_D(nu / 2) dnu / 4 - tr(W dS) / 2

    evaluated along each coordinate direction.
    """
    d = dist.dim
    k_count = dist.mean.shape[0]
    m, beta, W, nu = dist.mean, dist.beta, dist.scale, dist.dof
    rows, cols = np.triu_indices(d)
    n_upper = rows.size
    p = d + 1 + n_upper + 1

    # Coordinate directions (the identity), split into the parts of each coordinate.
    directions = np.eye(p)
    dt = np.broadcast_to(directions[:, :d], (k_count, p, d))
    dkappa = np.broadcast_to(directions[:, d], (k_count, p))
    dpsi = np.zeros((p, d, d))
    dpsi[:, rows, cols] = directions[:, d + 1: d + 1 + n_upper]
    dpsi[:, cols, rows] = directions[:, d + 1: d + 1 + n_upper]
    dnu = np.broadcast_to(directions[:, -1], (k_count, p))

    c = np.einsum("kab,kb->ka", W, m)
    gamma = np.einsum("ka,ka->k", m, c)
    dm = (dt - m[:, None, :] * dkappa[..., None]) / beta[:, None, None]
    outer_m = m[:, :, None] * m[:, None, :]
    ds = (dpsi[None] - dt[..., :, None] * m[:, None, None, :] - m[:, None, :, None] * dt[..., None, :]
          + outer_m[:, None] * dkappa[..., None, None])
    ds_c = np.einsum("kpab,kb->kpa", ds, c)
    trigamma_d = polygamma(1, 0.5 * nu[:, None] + (1.0 - np.arange(1, d + 1)) / 2.0).sum(axis=1)

    d_t = (c[:, None, :] * dnu[..., None] - nu[:, None, None] * np.einsum("kab,kpb->kpa", W, ds_c)
           + nu[:, None, None] * np.einsum("kab,kpb->kpa", W, dm))
    d_kappa = (0.5 * d * dkappa / beta[:, None] ** 2 - 0.5 * gamma[:, None] * dnu
               - nu[:, None] * np.einsum("ka,kpa->kp", c, dm)
               + 0.5 * nu[:, None] * np.einsum("ka,kpa->kp", c, ds_c))
    w_ds_w = np.einsum("kab,kpbc,kcd->kpad", W, ds, W)
    d_psi_matrix = -0.5 * W[:, None] * dnu[..., None, None] + 0.5 * nu[:, None, None, None] * w_ds_w
    off_diagonal_weight = np.where(rows == cols, 1.0, 2.0)
    d_psi = d_psi_matrix[:, :, rows, cols] * off_diagonal_weight
    d_n = 0.25 * trigamma_d[:, None] * dnu - 0.5 * np.einsum("kab,kpab->kp", W, ds)

    # Row p of each stack is the derivative along direction p; transpose to d mu / d g.
    stacked = np.concatenate([d_t, d_kappa[..., None], d_psi, d_n[..., None]], axis=2)
    return np.swapaxes(stacked, 1, 2)


@register_response(GaussianMixtureFactor)
def _gaussian_block(factor: GaussianMixtureFactor, posterior: Posterior) -> ResponseBlock:
    graph = posterior.graph
    fitted = posterior.globals[factor.components]
    prior = graph.variables[factor.components].prior
    X = np.ascontiguousarray(posterior.data[factor.observed])
    d = fitted.dim
    rows, cols = np.triu_indices(d)
    names = (tuple(f"{factor.components}.t[{a}]" for a in range(d)) + (f"{factor.components}.kappa",)
             + tuple(f"{factor.components}.psi[{a},{b}]" for a, b in zip(rows, cols))
             + (f"{factor.components}.dof_offset",))
    logdet_scale = fitted.wishart.logdet_scale()
    multi_digamma = multivariate_digamma(0.5 * fitted.dof, d)

    def summarize(corrected, sites, improper):
        weighted_mean = np.ascontiguousarray(corrected[:, :, :d])
        beta_new = np.ascontiguousarray(corrected[:, :, d])
        psi_upper = np.ascontiguousarray(corrected[:, :, d + 1: -1])
        dof_offset = np.ascontiguousarray(corrected[:, :, -1])
        kl, log_density = lr_kernels.corrected_normal_wishart_terms(
            np.ascontiguousarray(X[sites]), weighted_mean, beta_new, psi_upper, dof_offset,
            rows.astype(np.int64), cols.astype(np.int64), np.ascontiguousarray(fitted.mean),
            fitted.beta, np.ascontiguousarray(fitted.scale), logdet_scale, fitted.dof, multi_digamma,
            improper,
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_new = weighted_mean / np.where(beta_new > 0, beta_new, 1.0)[..., None]
        mean_shift = mean_new - fitted.mean[None]
        mean_shift[improper] = 0.0
        norm = np.sqrt(fitted.dof[None, :] * np.einsum("nka,kab,nkb->nk", mean_shift, fitted.scale,
                                                       mean_shift)).max(axis=1)
        return {
            "kl": kl.sum(axis=1),
            "log_density": log_density,
            "shifts": {f"{factor.components}.mean": mean_shift, f"{factor.components}.mean_norm": norm},
        }

    return ResponseBlock(
        variable=factor.components,
        names=names,
        features=normal_wishart_features(X),
        coordinates=normal_wishart_coordinates(fitted),
        prior_coordinates=normal_wishart_coordinates(prior),
        hessian=normal_wishart_hessian(fitted),
        to_posterior=lambda coords: normal_wishart_from_coordinates(coords, d),
        summarize=summarize,
    )


# Assembly and factorisation.


@dataclass
class ResponseSystem:
    """J = dS/dg at a fitted mixture posterior, factorised for all-site corrections.

    Coordinates g are laid out category by category: block k (of size Q,
    the sum of the factors' block sizes) holds category k's coordinates of
    every global variable, so G = K Q.

    Attributes
    ----------
    blocks : list of ResponseBlock
    local : str
        The local categorical variable whose responsibilities respond.
    resp : ndarray, shape (N, K)
    features : ndarray, shape (N, Q)
    hessian : ndarray, shape (K, Q, Q)
    missing_information : ndarray, shape (G, G)
        V = sum_j Phi_j C_j Phi_j^T.
    jacobian : ndarray, shape (G, G)
        J = V H.
    eigenvalues : ndarray, shape (G,)
        Eigenvalues of J (real, ascending), from the symmetric form L^T V L.
    condition_number : float
        Of I - J in the parameterisation-free sense (1 - min eig) / (1 - max eig).
    response : ndarray, shape (G, G)
        M = (I - J)^-1 J, so that delta_g = -s - M s.
    """

    blocks: list
    local: str
    resp: np.ndarray
    features: np.ndarray
    hessian: np.ndarray
    missing_information: np.ndarray
    jacobian: np.ndarray
    eigenvalues: np.ndarray
    condition_number: float
    response: np.ndarray

    @property
    def n_categories(self) -> int:
        return self.resp.shape[1]

    @property
    def block_size(self) -> int:
        return self.features.shape[1]

    @property
    def coordinates(self) -> np.ndarray:
        """Fitted g, shape (K, Q)."""
        return np.concatenate([b.coordinates for b in self.blocks], axis=1)

    @property
    def prior_coordinates(self) -> np.ndarray:
        return np.concatenate([b.prior_coordinates for b in self.blocks], axis=1)

    def site_messages(self, sites) -> np.ndarray:
        """s_i for the given sites, shape (n, K, Q)."""
        return self.resp[sites][:, :, None] * self.features[sites][:, None, :]

    def response_term(self, sites) -> np.ndarray:
        """-M s_i for the given sites, shape (n, K, Q).

        When few responsibilities exceed RESP_TOL, only those enter the product.
        """
        sites = np.asarray(sites)
        k_count, q = self.n_categories, self.block_size
        resp = self.resp[sites]
        features = self.features[sites]
        active_pairs = np.count_nonzero(resp > RESP_TOL)

        # One wide product is several times faster in BLAS than K narrow
        # ones, so the per-component products pay off only when few
        # (site, component) pairs are active.
        if active_pairs > 0.25 * resp.size:
            messages = (resp[:, :, None] * features[:, None, :]).reshape(sites.size, k_count * q)
            return -(messages @ self.response.T).reshape(sites.size, k_count, q)
        out = np.zeros((sites.size, k_count * q))
        for k in range(k_count):
            active = np.flatnonzero(resp[:, k] > RESP_TOL)
            if active.size == 0:
                continue
            weighted = resp[active, k, None] * features[active]
            out[active] -= weighted @ self.response[:, k * q:(k + 1) * q].T
        return out.reshape(sites.size, k_count, q)

    def corrected_coordinates(self, sites) -> np.ndarray:
        """g + delta_g_i = g - s_i - M s_i for each given site, shape (n, K, Q)."""
        return self.coordinates[None] - self.site_messages(sites) + self.response_term(sites)

    def group_corrected_coordinates(self, group) -> np.ndarray:
        """g - s_M - M s_M for a group of sites removed together, shape (K, Q)."""
        message = self.site_messages(group).sum(axis=0).reshape(-1)
        return self.coordinates - (message + self.response @ message).reshape(self.coordinates.shape)

    def site_jacobian(self, site: int) -> np.ndarray:
        """J_i = Phi_i C_i Phi_i^T H, site i's own term of J, shape (G, G)."""
        phi = self._phi(site)
        r = self.resp[site]
        c = np.diag(r) - np.outer(r, r)
        return phi @ c @ phi.T @ self.block_hessian()

    def block_hessian(self) -> np.ndarray:
        """H as a dense block-diagonal (G, G) matrix."""
        return linalg.block_diag(*self.hessian)

    def _phi(self, site: int) -> np.ndarray:
        k_count, q = self.n_categories, self.block_size
        phi = np.zeros((k_count * q, k_count))
        for k in range(k_count):
            phi[k * q:(k + 1) * q, k] = self.features[site]
        return phi

    def split(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Split (..., K, Q) coordinates into each global variable's (..., K, Q_f) part."""
        parts, start = {}, 0
        for block in self.blocks:
            parts[block.variable] = coords[..., start:start + block.size]
            start += block.size
        return parts


def response_blocks(posterior: Posterior) -> tuple[str, list[ResponseBlock]]:
    """Find the local variable that responds and build one ResponseBlock per message-sending factor."""
    graph = posterior.graph
    local_names = [v.name for v in graph.variables_of_role("local")]
    if len(local_names) != 1:
        raise NotImplementedError(
            f"the linear-response correction supports graphs with exactly one local categorical "
            f"variable, got {len(local_names)} ({local_names}); use method='division'"
        )
    local = local_names[0]
    blocks = []
    for variable in graph.variables_of_role("global"):
        senders = [f for f in graph.factors_of(variable.name) if variable.name in f.parents()]
        if len(senders) != 1:
            raise NotImplementedError(
                f"the linear-response correction needs exactly one factor sending messages to "
                f"global variable {variable.name!r}, got {len(senders)}; use method='division'"
            )
        blocks.append(_provider_for(senders[0])(senders[0], posterior))
    return local, blocks


def assemble_missing_information(resp: np.ndarray, features: np.ndarray,
                                  chunk_sites: int = CHUNK_SITES) -> np.ndarray:
    """Assemble V = sum_j Phi_j C_j Phi_j^T in category-block layout, shape (K Q, K Q).

    With C_j = diag(r_j) - r_j r_j^T this is the block-diagonal
    sum_j r_jk f_j f_j^T minus S^T S, where row j of S is s_j. Both are
    computed as wide matrix products over chunks of sites, because products
    with a long inner dimension and a small (Q, Q) output run far below peak
    in BLAS. Sites whose second-largest responsibility is at most RESP_TOL
    have every entry of C_j below about K * RESP_TOL and are skipped.
    """
    n_sites, k_count = resp.shape
    q = features.shape[1]
    size = k_count * q
    v = np.zeros((size, size))
    diagonal = np.zeros((q, size))
    second = np.sort(resp, axis=1)[:, -2] if k_count > 1 else np.zeros(n_sites)
    ambiguous = np.flatnonzero(second > RESP_TOL)
    for start in range(0, ambiguous.size, chunk_sites):
        rows = ambiguous[start:start + chunk_sites]
        messages = (resp[rows][:, :, None] * features[rows][:, None, :]).reshape(rows.size, size)
        v -= messages.T @ messages
        diagonal += features[rows].T @ messages
    for k in range(k_count):
        block = slice(k * q, (k + 1) * q)
        v[block, block] += diagonal[:, block]
    return 0.5 * (v + v.T)


def build_response_system(posterior: Posterior, *, warn: bool = True) -> ResponseSystem:
    """Assemble J at the fitted posterior and factorise I - J.

    Raises
    ------
    NotImplementedError
        If some factor type has no registered Jacobian block.
    SingularResponseError
        If I - J is singular or J has an eigenvalue of at least 1 (the fit is
        a saddle point or not converged).

    Warns
    -----
    IllConditionedResponseWarning
        If the condition number of I - J exceeds CONDITION_WARN.
    """
    local, blocks = response_blocks(posterior)
    resp = np.asarray(posterior.locals[local], dtype=float)
    features = np.concatenate([b.features for b in blocks], axis=1)
    k_count, q = resp.shape[1], features.shape[1]
    hessian = np.zeros((k_count, q, q))
    start = 0
    for b in blocks:
        hessian[:, start:start + b.size, start:start + b.size] = b.hessian
        start += b.size
    hessian = 0.5 * (hessian + np.swapaxes(hessian, 1, 2))

    # J = V H, and its symmetric similar form B = L^T V L with H = L L^T.
    v = assemble_missing_information(resp, features)
    h_dense = linalg.block_diag(*hessian)
    jacobian = v @ h_dense
    chol = np.linalg.cholesky(hessian)
    chol_dense = linalg.block_diag(*chol)
    b_sym = chol_dense.T @ v @ chol_dense
    b_sym = 0.5 * (b_sym + b_sym.T)
    eigenvalues = np.linalg.eigvalsh(b_sym)
    condition = _check_conditioning(eigenvalues, warn)

    # M = (I - J)^-1 J = L^-T (I - B)^-1 B L^T.
    factor = linalg.cho_factor(np.eye(b_sym.shape[0]) - b_sym, lower=True)
    inner = linalg.cho_solve(factor, b_sym)
    response = linalg.solve_triangular(chol_dense, inner @ chol_dense.T, lower=True, trans="T")
    return ResponseSystem(blocks, local, resp, features, hessian, v, jacobian, eigenvalues, condition,
                          response)


def _check_conditioning(eigenvalues: np.ndarray, warn: bool) -> float:
    largest = float(eigenvalues.max())
    gap = 1.0 - largest
    if not gap > 8 * np.finfo(float).eps:
        raise SingularResponseError(
            f"I - J is singular or indefinite: the CAVI map's Jacobian J has an eigenvalue of "
            f"{largest:.6g} (at least 1), so the fit is not a stable fixed point and the "
            f"linear-response correction is undefined. Refit with a tighter tol or more n_init, "
            f"use fewer components or a stronger prior, or use method='division'"
        )
    condition = float((1.0 - eigenvalues.min()) / gap)
    if warn and condition > CONDITION_WARN:
        warnings.warn(
            f"I - J is badly conditioned (condition number {condition:.3g}, largest eigenvalue of J "
            f"{largest:.6g}): CAVI barely pins down some direction of the posterior, often a "
            f"component that is barely used or two components that overlap. The linear-response "
            f"estimates may be inaccurate; use fewer components or a stronger prior, or check "
            f"them against exact refits",
            IllConditionedResponseWarning,
            stacklevel=3,
        )
    return condition


# All-site summaries.


@dataclass
class LinearResponseSummaries:
    """Per-site summaries of the linear-response corrected posterior, site axis first."""

    kl_by_variable: dict[str, np.ndarray]
    improper: np.ndarray
    loo_log_predictive: np.ndarray
    shifts: dict[str, np.ndarray]
    system: ResponseSystem


def all_site_summaries(posterior: Posterior, *, warn: bool = True,
                       chunk_sites: int = CHUNK_SITES) -> LinearResponseSummaries:
    """KL, LOO log predictive density and shifts under g + delta_g_i for every site i.

    Sites whose corrected posterior is improper are flagged; their KL is 0
    here (the result object reports +inf) and their predictive density -inf.
    """
    system = build_response_system(posterior, warn=warn)
    n_sites = posterior.n_sites
    improper = np.zeros(n_sites, dtype=bool)
    kl_by_variable = {b.variable: np.zeros(n_sites) for b in system.blocks}
    log_predictive = np.zeros(n_sites)
    shifts: dict[str, np.ndarray] = {}

    for start in range(0, n_sites, chunk_sites):
        sites = np.arange(start, min(n_sites, start + chunk_sites))
        corrected = system.corrected_coordinates(sites)
        parts = system.split(corrected)
        chunk_improper = np.zeros(sites.size, dtype=bool)
        log_terms = np.zeros((sites.size, system.n_categories))
        for block in system.blocks:
            summary = block.summarize(parts[block.variable], sites, chunk_improper)
            kl_by_variable[block.variable][sites] = summary["kl"]
            log_terms += summary.get("log_weights", 0.0) + summary.get("log_density", 0.0)
            for name, values in summary.get("shifts", {}).items():
                if name not in shifts:
                    shifts[name] = np.zeros((n_sites,) + values.shape[1:])
                shifts[name][sites] = values
        log_predictive[sites] = logsumexp(log_terms, axis=1)
        improper[sites] = chunk_improper

    for values in kl_by_variable.values():
        values[improper] = 0.0
    log_predictive[improper] = -np.inf
    return LinearResponseSummaries(kl_by_variable, improper, log_predictive, shifts, system)


def newton_corrected_coordinates(system: ResponseSystem, site: int) -> np.ndarray:
    """One Newton step for the fixed point without site i, from the fit, shape (K, Q).

    The fixed-point equation without site i is F(g) = g - prior - S_without_i(g) = 0.
    At the fit F = s_i and F' = I - (J - J_i), so the Newton step is
    g - (I - J + J_i)^-1 s_i = g - s_i - (I - J + J_i)^-1 (J - J_i) s_i: division
    plus a response term. The all-site estimate uses J in place of J - J_i,
    so it differs by site i's own term J_i. This function solves a dense
    G x G system per call and is meant for checks on small problems.
    """
    site = int(check_site_indices([site], system.resp.shape[0])[0])
    jacobian_without = system.jacobian - system.site_jacobian(site)
    message = system.site_messages([site])[0].reshape(-1)
    step = np.linalg.solve(np.eye(jacobian_without.shape[0]) - jacobian_without, message)
    return system.coordinates - step.reshape(system.coordinates.shape)
