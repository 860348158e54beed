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

import concurrent.futures
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np
from scipy import linalg, sparse
from scipy.linalg import blas, lapack
from scipy.sparse import csgraph
from scipy.sparse import linalg as sparse_linalg
from scipy.special import gammaln, polygamma, psi

from .._validation import check_site_indices
from ..families._linalg import multivariate_digamma
from ..graph.blocks import block_names
from ..graph.factors import CategoricalFactor, GaussianMixtureFactor
from ..inference.posterior import Posterior
from ..kernels import linear_response as lr_kernels
from ..kernels import loo as loo_kernels

#: Responsibilities r_ik below this value are left out of J and of the
#: response term (division always uses every component). In J, a left-out
#: r_jk removes a term of size about r_jk |f_j|^2 from V, which matters only
#: for sites with very large statistics; in the response, it changes site
#: i's correction by about K * RESP_TOL relative to its message. Both are
#: far below the error of a first-order estimate, and components that share
#: no ambiguous sites then cost nothing.
RESP_TOL = 1e-8

#: Eigen-directions of J whose gain lambda / (1 - lambda) is at most this
#: value are left out of the all-site passes in the eigenbasis (the KL's
#: moments route keeps every direction). Leaving them out changes the
#: corrected coordinates by at most RANK_TOL relative to the site's message
#: (in the norm of the Hessian H), and so the KL by about 2 RANK_TOL
#: relative. On 100,000 points in ten overlapping clusters this kept 69 of
#: 680 directions and moved no site's KL by more than 6e-4 relative, against
#: keeping every direction with gain above 1e-6.
RANK_TOL = 1e-3

#: Components whose share w_ik of a site's divided predictive density is
#: below this value are left out of the predictive density's correction,
#: because their part of the gradient is smaller than that share. The part
#: of component k's response that comes through a category l with w_ik r_il
#: below this value is left out too. At 100,000 points in ten overlapping
#: clusters, that drops 43% of the (site, k, l) terms.
PREDICTIVE_SHARE_TOL = 1e-10

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
    size : int
        Number of coordinates Q_f per category.
    features : callable
        ``features(sites)`` returns the site statistics, shape (n, Q_f): site
        i's message to category k's block is ``r_ik * features([i])[0]``.
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
        Exact evaluation at given corrected coordinates, for checks:
        ``summarize(corrected, sites, improper)`` with ``corrected`` of shape
        (n, K, Q) returns a dict with ``"kl"`` (n,), and optionally
        ``"log_weights"`` or ``"log_density"`` (n, K) and named shifts.
    shifts : callable
        ``shifts(sites, response, improper)`` returns the named shifts (site
        axis first) of the posterior with coordinates g - s_i + response,
        where ``response`` (n, K, len(shift_coordinates)) holds the response
        term in the coordinates listed in ``shift_coordinates``. It sets
        ``improper`` where those coordinates leave the family.
    shift_coordinates : tuple of int
        Positions within the block that ``shifts`` needs.
    shift_names : tuple of str
        Names of the shifts that ``shifts`` returns.
    predictive_correction : callable
        ``predictive_correction(sites, weights, term, response)`` returns,
        shape (n,), the first-order change of the divided LOO log predictive
        density when the block's coordinates move by the response term.
        ``term(rows, k, shares)`` returns that term for category k at the
        sites ``sites[rows]``, in all of the block's coordinates, shape
        (len(rows), Q_f). Given the sites' shares w_ik of the predictive
        density, it may leave out the part that comes from a category l with
        w_ik r_il at most PREDICTIVE_SHARE_TOL, whose effect on the density
        is that product times a gradient against one category's message.
        ``weights`` (n, K) are the components' shares of the divided
        predictive density and ``response`` is the response term in the
        shift coordinates, as passed to ``shifts``.
    lower_bounds : dict of int to float
        Positions within the block whose corrected value must exceed the
        given bound for the posterior to stay in its family.
    base, monomials : callable and tuple, optional
        When every feature is a product of entries of a per-site vector,
        ``base(sites)`` (n, B) returns that vector and ``monomials[p]`` lists
        the entries whose product is feature p (an empty tuple for 1). J is
        then assembled from the distinct products of two features, which is
        cheaper where many sites are ambiguous.
    predictive_weights : callable or None
        For the block of the emission factor: ``predictive_weights(improper)``
        returns the shares (N, K) of the divided predictive density.
    """

    variable: str
    names: tuple[str, ...]
    size: int
    features: Callable
    coordinates: np.ndarray
    prior_coordinates: np.ndarray
    hessian: np.ndarray
    to_posterior: Callable
    summarize: Callable
    shifts: Callable
    shift_coordinates: tuple[int, ...]
    shift_names: tuple[str, ...]
    predictive_correction: Callable
    lower_bounds: dict[int, float]
    predictive_weights: Callable | None = None
    base: Callable | None = None
    monomials: tuple | None = None


RESPONSE_PROVIDERS: dict[type, Callable[[object, Posterior, str], ResponseBlock]] = {}


def register_response(factor_class: type):
    """Register ``provider(factor, posterior, variable) -> ResponseBlock`` for a factor class (decorator).

    The provider returns the block of the global variable named ``variable``,
    one of the factor's parents.
    """

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
def _categorical_block(factor: CategoricalFactor, posterior: Posterior, variable: str) -> ResponseBlock:
    graph = posterior.graph
    alpha = posterior.globals[factor.weights].concentration
    prior_alpha = graph.variables[factor.weights].prior.concentration

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

    def shifts(sites, response, improper):
        alpha_new = alpha[None, :] - resp[sites] + response[:, :, 0]
        bad = np.any(alpha_new <= 0.0, axis=1)
        improper |= bad
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_shift = alpha_new / alpha_new.sum(axis=1, keepdims=True) - alpha / alpha.sum()
        mean_shift[bad] = 0.0
        return {f"{factor.weights}.mean": mean_shift}

    def predictive_correction(sites, weights, term, response):
        # d/d alpha'_l of ln sum_k (alpha'_k / sum alpha') p_k = w_l / alpha'_l - 1 / sum alpha'.
        divided = alpha[None, :] - resp[sites]
        with np.errstate(divide="ignore", invalid="ignore"):
            gradient = weights / divided - 1.0 / divided.sum(axis=1, keepdims=True)
        gradient = np.where(np.isfinite(gradient), gradient, 0.0)
        return (gradient * response[:, :, 0]).sum(axis=1)

    resp = posterior.locals[factor.assignment]
    return ResponseBlock(
        variable=factor.weights,
        names=(f"{factor.weights}.concentration",),
        size=1,
        features=lambda sites: np.ones((np.asarray(sites).size, 1)),
        coordinates=alpha[:, None].copy(),
        prior_coordinates=np.broadcast_to(prior_alpha, alpha.shape)[:, None].copy(),
        hessian=polygamma(1, alpha)[:, None, None],
        to_posterior=to_posterior,
        summarize=summarize,
        shifts=shifts,
        shift_coordinates=(0,),
        shift_names=(f"{factor.weights}.mean",),
        predictive_correction=predictive_correction,
        lower_bounds={0: 0.0},
        base=lambda sites: np.zeros((np.asarray(sites).size, 0)),
        monomials=((),),
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
    X = np.ascontiguousarray(X, dtype=float)
    n, d = X.shape
    rows, cols = np.triu_indices(d)
    out = np.empty((n, d + 2 + rows.size))
    return lr_kernels.normal_wishart_features(X, rows.astype(np.int64), cols.astype(np.int64), out)


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
    w_ds_w = np.matmul(W[:, None], np.matmul(ds, W[:, None]))
    d_psi_matrix = -0.5 * W[:, None] * dnu[..., None, None] + 0.5 * nu[:, None, None, None] * w_ds_w
    off_diagonal_weight = np.where(rows == cols, 1.0, 2.0)
    d_psi = d_psi_matrix[:, :, rows, cols] * off_diagonal_weight
    d_n = 0.25 * trigamma_d[:, None] * dnu - 0.5 * np.einsum("kab,kpab->kp", W, ds)

    # Row p of each stack is the derivative along direction p; transpose to d mu / d g.
    stacked = np.concatenate([d_t, d_kappa[..., None], d_psi, d_n[..., None]], axis=2)
    return np.swapaxes(stacked, 1, 2)


@register_response(GaussianMixtureFactor)
def _gaussian_block(factor: GaussianMixtureFactor, posterior: Posterior, variable: str) -> ResponseBlock:
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

    resp = posterior.locals[factor.assignment]
    scale_chol = np.linalg.cholesky(fitted.scale)

    def shifts(sites, response, improper):
        # With t' = beta m - r x + u_t and kappa' = beta - r + u_kappa,
        # m' - m = (u_t - u_kappa m - r (x - m)) / kappa', free of cancellation.
        r = resp[sites]
        beta_new = fitted.beta[None, :] - r + response[:, :, d]
        bad = np.any(beta_new <= 0.0, axis=1)
        improper |= bad
        numerator = (response[:, :, :d] - response[:, :, d, None] * fitted.mean[None]
                     - r[:, :, None] * (X[sites][:, None, :] - fitted.mean[None]))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_shift = numerator / beta_new[..., None]
        mean_shift[bad] = 0.0
        # Length under E[Lambda_k] = nu_k W_k, with W_k = C C^T: sqrt(nu_k) |C^T shift|.
        lengths = np.linalg.norm(np.matmul(np.swapaxes(mean_shift, 0, 1), scale_chol), axis=2)
        norm = (np.sqrt(fitted.dof)[:, None] * lengths).max(axis=0)
        return {f"{factor.components}.mean": mean_shift, f"{factor.components}.mean_norm": norm}

    def predictive_weights(improper):
        return loo_kernels.mixture_loo_predictive_weights(
            factor.quadratic_forms(posterior), np.ascontiguousarray(resp), fitted.beta, fitted.dof,
            logdet_scale, posterior.globals[factor.categorical_factor(posterior).weights].concentration,
            float(d), improper,
        )

    def predictive_correction(sites, weights, term, response):
        # Pairs whose share of the predictive density is negligible move it negligibly.
        pair_sites, comps = np.nonzero(weights > PREDICTIVE_SHARE_TOL)
        out = np.zeros(sites.size)
        if pair_sites.size == 0:
            return out
        gaps = lr_kernels.predictive_statistic_gaps(
            X, sites[pair_sites].astype(np.int64), comps.astype(np.int64), np.ascontiguousarray(resp),
            np.ascontiguousarray(fitted.mean), fitted.beta, np.ascontiguousarray(fitted.scale), scale_mean,
            fitted.dof, upper_rows, upper_cols,
        )
        for k in np.unique(comps):
            pairs = np.flatnonzero(comps == k)
            rows = pair_sites[pairs]
            change = np.einsum("nq,nq->n", gaps[pairs], term(rows, k, weights[rows, k]))
            out += np.bincount(rows, weights=weights[rows, k] * change, minlength=sites.size)
        return out

    scale_mean = np.einsum("kab,kb->ka", fitted.scale, fitted.mean)
    upper_rows, upper_cols = rows.astype(np.int64), cols.astype(np.int64)
    return ResponseBlock(
        variable=factor.components,
        names=names,
        size=fitted.dim + 2 + rows.size,
        features=lambda sites: normal_wishart_features(X[sites]),
        coordinates=normal_wishart_coordinates(fitted),
        prior_coordinates=normal_wishart_coordinates(prior),
        hessian=normal_wishart_hessian(fitted),
        to_posterior=lambda coords: normal_wishart_from_coordinates(coords, d),
        summarize=summarize,
        shifts=shifts,
        shift_coordinates=tuple(range(d + 1)),
        shift_names=(f"{factor.components}.mean", f"{factor.components}.mean_norm"),
        predictive_correction=predictive_correction,
        # kappa' > 0 and nu' > D - 1, that is n' = nu' - D > -1.
        lower_bounds={d: 0.0, d + 1 + rows.size: -1.0},
        predictive_weights=predictive_weights,
        base=lambda sites: X[sites],
        monomials=(tuple((a,) for a in range(d)) + ((),) + tuple(zip(rows.tolist(), cols.tolist())) + ((),)),
    )


# Assembly and factorisation.


@dataclass
class ResponseSystem:
    """J = dS/dg at a fitted mixture posterior, with its eigen-decomposition for all-site corrections.

    Coordinates g are laid out category by category: block k (of size Q,
    the sum of the factors' block sizes) holds category k's coordinates of
    every global variable, so G = K Q.

    With H = L L^T (L block-diagonal over categories), J = V H is similar to
    the symmetric B = L^T V L. The all-site pass keeps the eigenvectors of B
    whose gain lambda / (1 - lambda) exceeds RANK_TOL; the per-site and group
    methods below use the full response matrix.

    Attributes
    ----------
    blocks : list of ResponseBlock
    local : str
        The local categorical variable whose responsibilities respond.
    resp : ndarray, shape (N, K)
    hessian : ndarray, shape (K, Q, Q)
    cholesky : ndarray, shape (K, Q, Q)
        Lower Cholesky factors L_k of the Hessian blocks.
    missing_information : ndarray, shape (G, G)
        V = sum_j Phi_j C_j Phi_j^T.
    symmetric : ndarray, shape (G, G)
        B = L^T V L.
    largest_eigenvalue : float
        Of J (equal to that of B).
    condition_number : float
        Of I - J, as (1 - smallest) / (1 - largest) eigenvalue of J.
    groups : list of ndarray
        Positions in g of each connected group of categories whose B has a
        trace above RANK_TOL / (1 + RANK_TOL). B is block-diagonal over the
        connected groups; the other groups have every gain at most RANK_TOL
        and are left out of the all-site pass.
    moments : tuple or None
        ``(base, table)`` when every site statistic is a product of entries
        of a per-site vector (see ResponseBlock), else None.
    """

    blocks: list
    local: str
    resp: np.ndarray
    hessian: np.ndarray
    cholesky: np.ndarray
    missing_information: np.ndarray
    symmetric: np.ndarray
    largest_eigenvalue: float
    condition_number: float
    groups: list
    moments: tuple | None = None

    @property
    def n_categories(self) -> int:
        return self.resp.shape[1]

    def extreme_eigenvalues(self) -> tuple[float, float]:
        """Return J's largest eigenvalue and a lower bound on its smallest (see _extreme_eigenvalues)."""
        if "_coupled" not in self.__dict__:
            self.__dict__["_coupled"] = _coupled_groups(self.symmetric, self.n_categories, self.block_size)[1]
        return _extreme_eigenvalues(self.symmetric, self._coupled)

    def check_eigenvalues(self, largest: float, smallest: float, warn: bool) -> None:
        """Set largest_eigenvalue and condition_number, raising or warning as check_conditioning does."""
        self.condition_number = check_conditioning(largest, smallest, warn)
        self.largest_eigenvalue = largest

    @property
    def block_size(self) -> int:
        return self.hessian.shape[1]

    def features(self, sites) -> np.ndarray:
        """Site statistics f_i of every block, shape (n, Q)."""
        return np.concatenate([b.features(sites) for b in self.blocks], axis=1)

    @cached_property
    def category_groups(self) -> np.ndarray:
        """Index in ``groups`` of each category's coupled group, -1 for a category in none, shape (K,)."""
        out = np.full(self.n_categories, -1)
        for g, index in enumerate(self.groups):
            out[np.unique(index // self.block_size)] = g
        return out

    @cached_property
    def pair_activity(self) -> tuple[np.ndarray, np.ndarray]:
        """Pairs of categories and sites with some r_k r_l above RESP_TOL (see pair_activity)."""
        return pair_activity(self.resp)

    @cached_property
    def base_values(self) -> np.ndarray | None:
        """Base entries of every site, shape (N, B), when ``moments`` is set, else None."""
        if self.moments is None:
            return None
        return np.ascontiguousarray(self.moments[0](np.arange(self.resp.shape[0])), dtype=float)

    @cached_property
    def _directions(self) -> tuple[np.ndarray, np.ndarray]:
        k_count, q = self.n_categories, self.block_size
        columns, rates = [], []
        for index in self.groups:
            values, vectors = linalg.eigh(self.symmetric[np.ix_(index, index)], driver="evd")
            keep = np.flatnonzero(values / np.maximum(1.0 - values, np.finfo(float).tiny) > RANK_TOL)
            full = np.zeros((k_count * q, keep.size))
            full[index] = vectors[:, keep]
            columns.append(full)
            rates.append(values[keep])
        basis = np.concatenate(columns, axis=1) if columns else np.zeros((k_count * q, 0))
        return basis.reshape(k_count, q, -1), (np.concatenate(rates) if rates else np.zeros(0))

    @property
    def basis(self) -> np.ndarray:
        """Eigenvectors of B with gain above RANK_TOL, split by category, shape (K, Q, r).

        Computed on first access, by one eigen-decomposition per group.
        """
        return self._directions[0]

    @property
    def rates(self) -> np.ndarray:
        """Eigenvalues lambda of the kept directions, shape (r,)."""
        return self._directions[1]

    @property
    def rank(self) -> int:
        """Number of eigen-directions the all-site pass keeps."""
        return self.rates.size

    @cached_property
    def symmetric_response(self) -> np.ndarray:
        """(I - B)^-1 B on the groups, 0 elsewhere, shape (G, G).

        In the coordinates y = L^T s this maps a site's message to its
        response term, L^T M s = (I - B)^-1 B y. Each group's R is
        (I - B)^-1 - I, the inverse taken from one Cholesky factor of I - B.
        """
        return self._over_groups(self._group_response)

    @cached_property
    def kl_form(self) -> np.ndarray:
        """R + R^2 / 2 with R the symmetric response, shape (G, G).

        The all-site pass adds y^T (R + R^2 / 2) y to division's KL, with
        y = L^T s the site's message in the coordinates of B.
        """
        response = self.symmetric_response

        def group_form(index):
            whole = index.size == response.shape[0]
            part = response if whole else np.ascontiguousarray(response[np.ix_(index, index)])
            # R is symmetric, so R^2 = R R^T, one symmetric rank-k update. On
            # the Fortran-ordered view it fills the lower triangle of the C-ordered result.
            with _one_blas_thread():
                square = blas.dsyrk(1.0, part.T)
            return lr_kernels.kl_form_from_square(part, square.T)

        return self._over_groups(group_form)

    def _over_groups(self, part_of: Callable) -> np.ndarray:
        """Return a (G, G) matrix that is ``part_of(index)`` on each group's positions and 0 elsewhere."""
        size = self.symmetric.shape[0]
        if len(self.groups) == 1 and self.groups[0].size == size:
            return part_of(self.groups[0])
        out = np.zeros((size, size))
        for index in self.groups:
            out[np.ix_(index, index)] = part_of(index)
        return out

    def _group_response(self, index: np.ndarray) -> np.ndarray:
        """Return R = (I - B)^-1 - I on one group's positions, from one Cholesky factor of I - B."""
        whole = index.size == self.symmetric.shape[0]
        sub = np.negative(self.symmetric if whole else self.symmetric[np.ix_(index, index)])
        sub[np.diag_indices(index.size)] += 1.0
        # I - B is symmetric, so its transpose, a Fortran-ordered view, goes
        # to LAPACK without a copy. dpotri leaves (I - B)^-1 in that view's
        # lower triangle, which is the upper triangle of the C-ordered array.
        # One BLAS thread: this follows Numba's parallel kernels, whose idle
        # threads still spin. On 2 cores two BLAS threads took 0.045 s here
        # against 0.02 s for one (G = 680).
        with _one_blas_thread():
            factor, info = lapack.dpotrf(sub.T, lower=1, overwrite_a=1)
            if info == 0:
                inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
        if info != 0:
            # The eigenvalues may not be known yet (see LinearResponseSummaries).
            largest = self.largest_eigenvalue
            if not np.isfinite(largest):
                largest, smallest = self.extreme_eigenvalues()
                check_conditioning(largest, smallest, warn=False)
            raise SingularResponseError(
                f"I - J is not positive definite (largest eigenvalue of J "
                f"{largest:.6g}), so the linear-response correction is undefined. "
                f"{MIXTURE_ADVICE['singular']}"
            )
        return lr_kernels.response_from_inverse(inverse.T)

    def kl_blocks(self, pairs) -> np.ndarray:
        """Return blocks of the response's second-order KL as a form in the message s, shape (P, Q, Q).

        Block (k, l) is L_k (R + R^2 / 2)_kl L_l^T (see kl_form), so the
        added KL is s^T L (R + R^2 / 2) L^T s. ``pairs`` lists the P pairs
        (k, l) to return.
        """
        q = self.block_size
        pairs = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
        if pairs.shape[0] == 0:
            return np.zeros((0, q, q))
        rows, columns = pairs[:, 0], pairs[:, 1]
        k_count = self.n_categories
        blocks = self.kl_form.reshape(k_count, q, k_count, q)[rows, :, columns, :]
        return np.matmul(self.cholesky[rows], np.matmul(blocks, np.swapaxes(self.cholesky[columns], 1, 2)))

    @property
    def gains(self) -> np.ndarray:
        """lambda / (1 - lambda) for the kept directions, shape (r,)."""
        return self.rates / (1.0 - self.rates)

    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """All eigenvalues of J, ascending (real, from the symmetric form B)."""
        return np.linalg.eigvalsh(self.symmetric)

    @cached_property
    def jacobian(self) -> np.ndarray:
        """J = V H, shape (G, G)."""
        return self.missing_information @ linalg.block_diag(*self.hessian)

    @cached_property
    def projection(self) -> np.ndarray:
        """P_k = L_k U_k, shape (K, Q, r): the kept coordinates of B's eigenbasis are c = U^T L^T s."""
        return np.matmul(self.cholesky, self.basis)

    @cached_property
    def lift(self) -> np.ndarray:
        """A_k = L_k^-T U_k, shape (K, Q, r): the response term is -A (gains * c)."""
        return np.linalg.solve(np.swapaxes(self.cholesky, 1, 2), self.basis)

    @cached_property
    def response(self) -> np.ndarray:
        """M = (I - J)^-1 J = L^-T (I - B)^-1 B L^T, shape (G, G), from all eigen-directions."""
        size = self.symmetric.shape[0]
        factor = linalg.cho_factor(np.eye(size) - self.symmetric, lower=True)
        inner = linalg.cho_solve(factor, self.symmetric)
        chol_dense = linalg.block_diag(*self.cholesky)
        return linalg.solve_triangular(chol_dense, inner @ chol_dense.T, lower=True, trans="T")

    @property
    def coordinates(self) -> np.ndarray:
        """Fitted g, shape (K, Q)."""
        return np.concatenate([b.coordinates for b in self.blocks], axis=1)

    @property
    def prior_coordinates(self) -> np.ndarray:
        return np.concatenate([b.prior_coordinates for b in self.blocks], axis=1)

    def site_messages(self, sites) -> np.ndarray:
        """s_i for the given sites, shape (n, K, Q)."""
        return self.resp[sites][:, :, None] * self.features(sites)[:, None, :]

    def response_term(self, sites) -> np.ndarray:
        """-M s_i for the given sites, shape (n, K, Q), from the full response matrix."""
        sites = np.asarray(sites)
        messages = self.site_messages(sites).reshape(sites.size, -1)
        return -(messages @ self.response.T).reshape(sites.size, self.n_categories, self.block_size)

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
        return phi @ c @ phi.T @ linalg.block_diag(*self.hessian)

    def _phi(self, site: int) -> np.ndarray:
        k_count, q = self.n_categories, self.block_size
        phi = np.zeros((k_count * q, k_count))
        for k in range(k_count):
            phi[k * q:(k + 1) * q, k] = self.features([site])[0]
        return phi

    def block_slices(self) -> dict[str, slice]:
        """Map each global variable to its positions within a category's block of Q coordinates."""
        slices, start = {}, 0
        for block in self.blocks:
            slices[block.variable] = slice(start, start + block.size)
            start += block.size
        return slices

    def split(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Split (..., K, Q) coordinates into each global variable's (..., K, Q_f) part."""
        return {name: coords[..., part] for name, part in self.block_slices().items()}


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
        blocks.append(_provider_for(senders[0])(senders[0], posterior, variable.name))
    return local, blocks


def pair_activity(resp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the pairs of categories k < l and the sites with some r_k r_l above RESP_TOL.

    Returns ``(together, ambiguous)``: a (K, K) boolean array set at [k, l]
    where some site has r_k r_l above RESP_TOL, and an (N,) boolean array
    set at the sites with such a pair.
    """
    together, ambiguous = lr_kernels.pair_activity(np.ascontiguousarray(resp, dtype=float), RESP_TOL,
                                                   _n_parts())
    return together.any(axis=0), ambiguous


def assemble_missing_information(resp: np.ndarray, features: Callable, moments=None,
                                 activity=None) -> np.ndarray:
    """Assemble V = sum_j Phi_j C_j Phi_j^T in category-block layout, shape (K Q, K Q).

    Block (k, l) is sum_j C_j[k, l] f_j f_j^T with C_j[k, k] = r_jk (1 - r_jk)
    and C_j[k, l] = -r_jk r_jl. The rows of C_j sum to zero, so only the
    blocks k != l are summed and V_kk = -sum_{l != k} V_kl. Only pairs with
    r_jk r_jl above RESP_TOL enter. The pairs left out add up to at most
    K^2 RESP_TOL / 2 in C_j, and a site with no pair above it costs nothing.
    ``features(sites)`` returns the site statistics, shape (n, Q), and
    ``activity`` the result of pair_activity(resp) if already known.

    Two routes give the same V. The direct one costs one matrix product per
    pair of categories over the sites where the pair enters, about Q^2
    multiply-adds per (site, pair). With ``moments = (base, table)``
    (see ResponseBlock and _MomentTable), every entry of f_j f_j^T is a
    product of entries of base_j, and V's blocks are read from
    sum_j r_jk r_jl m_j, where m_j contains the S distinct products: one
    kernel pass costing S multiply-adds per (site, pair), taken when S is
    below Q^2. There ``moments`` may carry a third entry, the base entries
    of every site as one array.
    """
    return _missing_information(resp, features, moments, activity)[0]


def _missing_information(resp, features, moments, activity):
    """Return assemble_missing_information's V and pair_activity(resp).

    With the base entries of every site at hand (``moments`` of length 3)
    and ``activity`` None, the pass that sums the pairs also finds the
    active pairs and sites, and pair_activity's own pass is not needed.
    """
    n_sites, k_count = resp.shape
    resp = np.ascontiguousarray(resp, dtype=float)
    table = moments[1] if moments is not None else None
    if table is not None and table.fast and table.n_moments < table.size ** 2:
        q = table.size
        every_pair_floats = _n_parts() * (k_count * (k_count - 1) // 2) * table.n_moments
        if activity is None and len(moments) > 2 and every_pair_floats <= MOMENT_CHUNK_FLOATS:
            # Every pair k < l gets a sum, and the kernel marks those that get a
            # term. With many categories those sums would take too much memory,
            # so the other branch finds the active pairs first with pair_activity.
            upper = np.triu_indices(k_count, 1)
            every_pair = list(zip(*upper))
            pair_of = np.full((k_count, k_count), -1, dtype=np.int64)
            pair_of[upper] = np.arange(len(every_pair))
            parts, together, ambiguous = lr_kernels.pair_moment_sums(
                moments[2], resp, np.arange(n_sites), RESP_TOL, pair_of, len(every_pair), table.runs,
                table.n_moments, _n_parts(), table.block_rows)
            activity = (together.any(axis=0), ambiguous)
            pairs = [(int(k), int(l)) for k, l in every_pair]
        else:
            activity = pair_activity(resp) if activity is None else activity
            pairs = [(int(k), int(l)) for k, l in zip(*np.nonzero(activity[0]))]
            pair_of = np.full((k_count, k_count), -1, dtype=np.int64)
            for index, (k, l) in enumerate(pairs):
                pair_of[k, l] = index
            rows = np.flatnonzero(activity[1])
            if len(moments) > 2:
                base, sites = moments[2], resp
            else:
                base = np.ascontiguousarray(moments[0](rows), dtype=float)
                sites, rows = resp[rows], np.arange(rows.size)
            parts = lr_kernels.pair_moment_sums(base, sites, rows, RESP_TOL, pair_of, len(pairs), table.runs,
                                                table.n_moments, _n_parts(), table.block_rows)[0]
        sums = parts.sum(axis=0)
        v = np.zeros((k_count, q, k_count, q))
        for index, (k, l) in enumerate(pairs):
            if not activity[0][k, l]:
                continue
            block = -sums[index][table.lookup]
            v[k, :, l, :] = block
            v[l, :, k, :] = block.T
        _fill_diagonal_blocks(v)
        # ``lookup`` is symmetric, so every block, and V, is exactly symmetric.
        return v.reshape(k_count * q, k_count * q), activity
    together, ambiguous = pair_activity(resp) if activity is None else activity
    pairs = [(int(k), int(l)) for k, l in zip(*np.nonzero(together))]
    ambiguous = np.flatnonzero(ambiguous)
    f = features(ambiguous)
    r = resp[ambiguous]
    q = f.shape[1]
    v = np.zeros((k_count, q, k_count, q))
    with _one_blas_thread():
        for k, l in pairs:
            weights = r[:, k] * r[:, l]
            rows = np.flatnonzero(weights > RESP_TOL)
            block = -(f[rows].T @ (f[rows] * weights[rows, None]))
            v[k, :, l, :] = block
            v[l, :, k, :] = block.T
    _fill_diagonal_blocks(v)
    v = v.reshape(k_count * q, k_count * q)
    return 0.5 * (v + v.T), (together, ambiguous)


def _fill_diagonal_blocks(v: np.ndarray) -> None:
    """Set V_kk = -sum_{l != k} V_kl in place, for V in block layout (K, Q, K, Q), because C_j's rows sum to 0."""
    for k in range(v.shape[0]):
        v[k, :, k, :] = -(v[k].sum(axis=1) - v[k, :, k, :])


def _n_parts() -> int:
    """Return the number of parts the pair kernels split the sites into, one per Numba thread."""
    return numba.get_num_threads()


#: Floats per chunk of monomial products; bounds the memory of the moment routes.
MOMENT_CHUNK_FLOATS = 1 << 22

#: Floats of products each thread of pair_moment_sums keeps (512 KiB, within a core's L2 cache).
BLOCK_FLOATS = 1 << 16


class _MomentTable:
    """Distinct products of two features, each feature a product of base entries.

    A product is a sorted tuple of base columns. Products are in graded
    order: by degree, then by their last (largest) column, then likewise by
    the rest. Each product of degree at least 1 whose leading factors form
    another product is that product times one base entry (``parents`` and
    ``lasts``), and in this order the products of degree n + 1 ending in
    column c are column c times a run of consecutive products of degree n,
    all of them ending in a column up to c when every product up to that
    degree is present. ``runs`` lists these runs (see
    kernels.linear_response._fill_products), or is None when some product
    of degree at least 1 has no parent.
    """

    def __init__(self, monomials):
        self.size = len(monomials)
        pair_keys = {}
        for p, left in enumerate(monomials):
            for q, right in enumerate(monomials):
                pair_keys[p, q] = tuple(sorted(left + right))
        keys = sorted(set(pair_keys.values()), key=lambda key: (len(key), key[::-1]))
        index = {key: s for s, key in enumerate(keys)}
        self.lookup = np.empty((self.size, self.size), dtype=np.int64)
        for (p, q), key in pair_keys.items():
            self.lookup[p, q] = index[key]
        width = max(1, max(len(key) for key in keys))
        self.slots = np.full((len(keys), width), -1, dtype=np.int64)
        self.parents = np.full(len(keys), -1, dtype=np.int64)
        self.lasts = np.zeros(len(keys), dtype=np.int64)
        for s, key in enumerate(keys):
            self.slots[s, :len(key)] = key
            if key and key[:-1] in index:
                self.parents[s] = index[key[:-1]]
                self.lasts[s] = key[-1]
        self.n_moments = len(keys)
        self.runs = self._runs(keys)
        # A constant feature f_c = 1 makes each feature a product f_q f_c,
        # so linear functions of f are combinations of the products too.
        constants = [p for p, monomial in enumerate(monomials) if not monomial]
        self.linear_map = None
        if constants:
            slots_of = self.lookup[:, constants[0]]
            self.linear_map = np.zeros((self.size, int(slots_of.max()) + 1))
            self.linear_map[np.arange(self.size), slots_of] = 1.0
        for array in (self.lookup, self.slots, self.parents, self.lasts, self.runs, self.linear_map):
            if array is not None:
                array.flags.writeable = False

    def _runs(self, keys):
        """Return rows (start, source, length, column) covering products 1.. (see the class), or None."""
        if not keys or keys[0] != () or np.any(self.parents[1:] < 0):
            return None
        runs = []
        for s in range(1, len(keys)):
            start, source, length, column = runs[-1] if runs else (-1, -1, 0, -1)
            if (column == self.lasts[s] and start + length == s and source + length == self.parents[s]):
                runs[-1] = (start, source, length + 1, column)
            else:
                runs.append((s, int(self.parents[s]), 1, int(self.lasts[s])))
        return np.array(runs, dtype=np.int64).reshape(-1, 4)

    @property
    def block_rows(self) -> int:
        """Sites whose products pair_moment_sums keeps at once: up to 64, within BLOCK_FLOATS floats, at least 4."""
        return max(4, min(64, BLOCK_FLOATS // self.n_moments))

    @property
    def chunk_rows(self) -> int:
        """Sites per chunk, so that a chunk's products take at most MOMENT_CHUNK_FLOATS floats."""
        return max(1, min(CHUNK_SITES, MOMENT_CHUNK_FLOATS // self.n_moments))

    def products(self, base: np.ndarray) -> np.ndarray:
        """Return the distinct products for each row of ``base``, shape (n, n_moments)."""
        return lr_kernels.monomial_moments(np.ascontiguousarray(base, dtype=float), self.slots, self.parents,
                                           self.lasts)

    def coefficients(self, matrix: np.ndarray) -> np.ndarray:
        """Return c with f^T matrix f = c . products for every f, from (size, size) matrices, shape (..., n_moments)."""
        matrix = np.asarray(matrix, dtype=float)
        flat = matrix.reshape(-1, self.size * self.size)
        return (self._gather.T @ flat.T).T.reshape(matrix.shape[:-2] + (self.n_moments,))

    @functools.cached_property
    def _gather(self):
        """Sparse (size^2, n_moments) matrix with a 1 at (entry, its product), the sum that coefficients takes."""
        entries = self.size * self.size
        return sparse.csr_matrix((np.ones(entries), (np.arange(entries), self.lookup.ravel())),
                                 shape=(entries, self.n_moments))

    @property
    def fast(self) -> bool:
        """Tell whether the pair kernels apply: products built by runs, linear forms through a constant feature."""
        return self.runs is not None and self.linear_map is not None


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread():
    """Limit BLAS to one thread, for the small dense problems of the linear response.

    Each product of a chunk of sites with a Q x Q block, and each product
    with the G x G matrix B, is too small to gain from BLAS threads, and
    waking them cost more than it saved. They also compete with the Numba
    kernels' threads between calls. On 2 cores, with one core busy with
    another job, the all-site pass of 100,000 sites in ten clusters took
    0.35 s with one BLAS thread and 0.63 s with two.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=16)
def _moment_table(monomials: tuple) -> _MomentTable:
    """Build the _MomentTable of a tuple of monomials once per process (its arrays are read-only)."""
    return _MomentTable(monomials)


def build_response_system(posterior: Posterior, *, warn: bool = True) -> ResponseSystem:
    """Assemble J at the fitted posterior and find the extreme eigenvalues of its symmetric form.

    Only B's extreme eigenvalues are computed here (see _coupled_groups).
    The eigen-decomposition and the Cholesky solve that the all-site pass
    needs are computed on first use.

    Raises
    ------
    NotImplementedError
        If some factor type has no registered Jacobian block.
    SingularResponseError
        If J has an eigenvalue of at least 1 (the fit is a saddle point or
        not converged).

    Warns
    -----
    IllConditionedResponseWarning
        If the condition number of I - J exceeds CONDITION_WARN.
    """
    with _one_blas_thread():
        return _build_response_system(posterior, warn)


def _build_response_system(posterior: Posterior, warn: bool) -> ResponseSystem:
    return _finish_response_system(_assemble_response_system(posterior), warn)


def _assemble_response_system(posterior: Posterior) -> tuple:
    """Assemble V and the pieces of a ResponseSystem that come before B (see _finish_response_system)."""
    local, blocks = response_blocks(posterior)
    resp = np.asarray(posterior.locals[local], dtype=float)
    k_count, q = resp.shape[1], sum(b.size for b in blocks)
    hessian = np.zeros((k_count, q, q))
    start = 0
    for b in blocks:
        hessian[:, start:start + b.size, start:start + b.size] = b.hessian
        start += b.size
    hessian = 0.5 * (hessian + np.swapaxes(hessian, 1, 2))
    chol = hessian_cholesky(hessian, [b.variable for b in blocks])

    # B = L^T V L, block (k, l) = L_k^T V_kl L_l.
    moments = None
    if all(b.monomials is not None for b in blocks):
        monomials, offset = [], 0
        probe = [b.base(np.zeros(0, dtype=np.int64)).shape[1] for b in blocks]
        for b, width in zip(blocks, probe):
            monomials.extend(tuple(offset + i for i in m) for m in b.monomials)
            offset += width
        table = _moment_table(tuple(monomials))
        if table.fast:
            moments = (lambda sites: np.concatenate([b.base(sites) for b in blocks], axis=1), table)
    base_values = None
    if moments is not None:
        # Blocks without base entries (the mixing weights) add no columns, so
        # where one block has them its array is used without a concatenated copy.
        sites = np.arange(resp.shape[0])
        wide = [b.base(sites) for b, width in zip(blocks, probe) if width]
        if not wide:
            wide = [np.zeros((sites.size, 0))]
        joined = wide[0] if len(wide) == 1 else np.concatenate(wide, axis=1)
        base_values = np.ascontiguousarray(joined, dtype=float)
    v, activity = _missing_information(
        resp, lambda sites: np.concatenate([b.features(sites) for b in blocks], axis=1),
        None if moments is None else moments + (base_values,), None)
    return blocks, local, resp, hessian, chol, v, moments, activity, base_values


def _finish_response_system(assembled: tuple, warn: bool, eigenvalues: bool = True) -> ResponseSystem:
    """Form B from _assemble_response_system's output, find its groups and extreme eigenvalues, and check them.

    With ``eigenvalues`` False, the eigenvalues and their check are left to
    the caller (ResponseSystem.extreme_eigenvalues and check_eigenvalues),
    and largest_eigenvalue and condition_number stay NaN until then.
    """
    blocks, local, resp, hessian, chol, v, moments, activity, base_values = assembled
    k_count, q = hessian.shape[:2]
    # Only blocks k <= l are multiplied out. Block (l, k) is the transpose of
    # block (k, l), so B comes out exactly symmetric once the diagonal blocks are.
    upper_k, upper_l = np.triu_indices(k_count)
    v_upper = v.reshape(k_count, q, k_count, q)[upper_k, :, upper_l, :]
    b_upper = np.matmul(np.swapaxes(chol, 1, 2)[upper_k], np.matmul(v_upper, chol[upper_l]))
    b_blocks = np.empty((k_count, q, k_count, q))
    b_blocks[upper_k, :, upper_l, :] = b_upper
    b_blocks[upper_l, :, upper_k, :] = np.swapaxes(b_upper, 1, 2)
    diagonal = np.arange(k_count)
    within = b_blocks[diagonal, :, diagonal, :]
    b_blocks[diagonal, :, diagonal, :] = 0.5 * (within + np.swapaxes(within, 1, 2))
    b_sym = b_blocks.reshape(k_count * q, k_count * q)

    groups, coupled = _coupled_groups(b_sym, k_count, q)
    system = ResponseSystem(blocks, local, resp, hessian, chol, v, b_sym, np.nan, np.nan, groups, moments)
    # The all-site pass reads these again, so keep what was computed above.
    system.__dict__.update(pair_activity=activity, base_values=base_values, _coupled=coupled)
    if eigenvalues:
        system.check_eigenvalues(*system.extreme_eigenvalues(), warn)
    return system


#: Groups up to this size get their extreme eigenvalues from a dense solver, larger ones from Lanczos.
DENSE_EIGENVALUES_UP_TO = 256


def _coupled_groups(b_sym: np.ndarray, k_count: int, q: int):
    """Find the groups of coordinates that matter in the all-site pass, and those that bound B's spectrum.

    Categories that share no ambiguous site have no coupling block in B,
    so B is block-diagonal over the connected groups of the coupling graph.
    A group whose trace is at most RANK_TOL / (1 + RANK_TOL) has every gain
    at most RANK_TOL and is left out. Returns ``(groups, coupled)``: the
    positions of each remaining group, and ``(positions, uncoupled)`` for
    _extreme_eigenvalues, with the positions of every group that has a
    coupling block and whether some category has none (B is 0 there).
    """
    blocks = b_sym.reshape(k_count, q, k_count, q)
    coupling = np.abs(blocks).max(axis=(1, 3)) > 0.0
    n_groups, labels = csgraph.connected_components(coupling, directed=False)
    groups, positions, uncoupled = [], [], False
    for group in range(n_groups):
        members = np.flatnonzero(labels == group)
        if not coupling[members][:, members].any():
            uncoupled = True
            continue
        index = (members[:, None] * q + np.arange(q)[None, :]).reshape(-1)
        positions.append(index)
        # B[index, index] is the group's diagonal.
        if b_sym[index, index].sum() > RANK_TOL / (1.0 + RANK_TOL):
            groups.append(index)
    return groups, (positions, uncoupled)


def _extreme_eigenvalues(b_sym: np.ndarray, coupled) -> tuple[float, float]:
    """Return B's largest eigenvalue and a lower bound on its smallest, from _coupled_groups' ``coupled``.

    The bound is the smallest eigenvalue itself when every coupled group is
    small enough for the dense solver, else 0.
    """
    positions, uncoupled = coupled
    largest, smallest = 0.0, (0.0 if uncoupled else np.inf)
    for index in positions:
        whole = index.size == b_sym.shape[0]
        sub = b_sym if whole else b_sym[np.ix_(index, index)]
        if index.size <= DENSE_EIGENVALUES_UP_TO:
            values = linalg.eigvalsh(sub)
            largest, smallest = max(largest, float(values[-1])), min(smallest, float(values[0]))
        else:
            largest, smallest = max(largest, _largest_eigenvalue(sub)), min(smallest, 0.0)
    return largest, (0.0 if not np.isfinite(smallest) else smallest)


def _largest_eigenvalue(matrix: np.ndarray) -> float:
    """Largest eigenvalue of a symmetric matrix by Lanczos iteration, with a dense fallback."""
    try:
        value = sparse_linalg.eigsh(matrix, k=1, which="LA", return_eigenvectors=False, tol=1e-10,
                                    v0=np.ones(matrix.shape[0]))
        return float(value[0])
    except (sparse_linalg.ArpackNoConvergence, ValueError):
        return float(np.linalg.eigvalsh(matrix)[-1])


def hessian_cholesky(hessian: np.ndarray, variables) -> np.ndarray:
    """Return the lower Cholesky factor of H = d mu / d g (one matrix or a batch).

    Raises
    ------
    ValueError
        If H is not numerically positive definite, which happens when
        columns of the data lie far from the origin compared with their
        spread and the rounding of the posterior's coordinates swamps their
        curvature.
    """
    try:
        return np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the Hessian of the log-partition of {sorted(variables)} is not numerically positive "
            f"definite, so the linear-response correction cannot be computed. This happens when "
            f"columns of the data lie far from the origin compared with their spread, or when a "
            f"component's data are nearly degenerate (a nearly constant or duplicated column, or a "
            f"component with very few rows). Centre and scale the columns (subtract the mean, divide by "
            f"the standard deviation), drop constant or duplicated columns, and refit, or use "
            f"method='division'"
        ) from None


#: Advice in the errors and warnings about I - J, for mixtures.
MIXTURE_ADVICE = {
    "singular": "Refit with a tighter tol or more n_init, use fewer components or a stronger prior, "
                "or use method='division'",
    "cause": "often a component that is barely used or two components that overlap",
    "ill_conditioned": "use fewer components or a stronger prior, or check them against exact refits",
}


def check_conditioning(largest: float, smallest: float, warn: bool, advice: dict | None = None) -> float:
    """Return the condition number (1 - smallest) / (1 - largest) of I - J, or raise if it is singular.

    ``largest`` and ``smallest`` are J's extreme eigenvalues. ``advice`` has
    the keys of MIXTURE_ADVICE (the default) and words the remedies for the
    model at hand.

    Raises
    ------
    SingularResponseError
        If the largest eigenvalue is at least 1.

    Warns
    -----
    IllConditionedResponseWarning
        If ``warn`` and the condition number exceeds CONDITION_WARN.
    """
    advice = MIXTURE_ADVICE if advice is None else advice
    gap = 1.0 - largest
    if not gap > 8 * np.finfo(float).eps:
        raise SingularResponseError(
            f"I - J is singular or indefinite: the CAVI map's Jacobian J has an eigenvalue of "
            f"{largest:.6g} (at least 1), so the fit is not a stable fixed point and the "
            f"linear-response correction is undefined. {advice['singular']}"
        )
    condition = float((1.0 - smallest) / gap)
    if warn and condition > CONDITION_WARN:
        warnings.warn(
            f"I - J is badly conditioned (condition number {condition:.3g}, largest eigenvalue of J "
            f"{largest:.6g}): CAVI barely pins down some direction of the posterior, "
            f"{advice['cause']}. The linear-response estimates may be inaccurate; "
            f"{advice['ill_conditioned']}",
            IllConditionedResponseWarning,
            stacklevel=3,
        )
    return condition


# All-site summaries.


class _SecondThread:
    """Run tasks in order on one more thread where that is safe, else on the thread that takes their results.

    The all-site pass takes its dense steps (the factorisation of I - B and
    the like) on one BLAS thread, so a second core would idle. Tasks
    submitted here run on that core, in a thread with one Numba thread. This
    needs a thread-safe Numba threading layer (OpenMP or TBB) and at least
    two Numba threads; otherwise no thread is started. ``take(task)`` returns
    a task's result, and runs the task on the calling thread if it has not
    started (always so without the second thread), so that neither thread
    waits for work the other has not begun. Leaving the ``with`` block drops
    the tasks not started and waits for the one running.
    """

    def __init__(self):
        try:
            layer = numba.threading_layer()
        except ValueError:
            # No parallel kernel has run yet in this process, so no layer is chosen.
            layer = None
        self._pool = None
        if numba.get_num_threads() >= 2 and layer in ("omp", "tbb"):
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, initializer=numba.set_num_threads, initargs=(1,))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, function: Callable):
        future = concurrent.futures.Future() if self._pool is None else self._pool.submit(function)
        return future, function

    @staticmethod
    def take(task):
        future, function = task
        return function() if future.cancel() else future.result()


class LinearResponseSummaries:
    """Per-site summaries of the linear-response corrected posterior, site axis first.

    Each summary is division's closed form plus the response term's
    contribution, so no site needs its own corrected posterior:

    * KL. To second order KL(q || q') = delta^T H delta / 2. With
      y_i = L^T s_i and c_i = U^T y_i in the kept eigenbasis U of B,
      L^T delta_g_i = -(y_i + U z_i) with z_i = gains * c_i, so the response
      adds, for variable v, c_iv . z_i + |U_v z_i|^2 / 2 to division's exact
      KL, where c_iv is c_i's part from v's coordinates. The added total,
      c_i . z_i + |z_i|^2 / 2, is never negative.
    * LOO log predictive density: division's exact value plus its gradient
      in g, at the divided posterior, times the response term -A z_i.
    * Shifts: exact functions of the corrected coordinates they depend on
      (means and weights need only t, kappa and alpha).

    The KL is computed on construction, by one of two routes
    (``kl_route``). Where every site statistic is a product of entries of a
    per-site vector (the Gaussian mixture), the "moments" route keeps every
    direction: the added total is the quadratic form s_i^T A s_i of
    ResponseSystem.kl_blocks, read off as one matrix product of the
    distinct products of each site's entries with a coefficient column per
    pair of categories, at no eigen-decomposition. Otherwise the
    "eigenbasis" route makes one pass over the (site, category) pairs with
    responsibility above RESP_TOL using matrix products of width r, the
    number of directions with gain above RANK_TOL. The moments route splits
    the total by variable on first access of ``kl_by_variable``. The LOO
    predictive density and the shifts take an eigenbasis pass on first
    access. Division's KL runs on a second thread while this one takes the
    dense steps (see _SecondThread). Sites that division flags as improper
    stay flagged, and so does a site whose corrected weights, kappa or
    degrees of freedom leave the family.

    NOTE: constraints that are not lower bounds on single coordinates are
    not checked, because no site's corrected posterior is built. These are a
    positive definite W'^-1 for the Gaussian mixture and a positive definite
    precision for Normal-Gamma blocks. A site that breaks one keeps a finite KL.

    Parameters
    ----------
    posterior : Posterior
    warn : bool
        Warn when I - J is badly conditioned.
    chunk_sites : int
        Sites per chunk of the passes over the data.
    kl_route : {None, "moments", "eigenbasis"}
        Route of the KL pass; None takes "moments" where the blocks allow it.

    Attributes
    ----------
    system : ResponseSystem
    kl : ndarray, shape (N,)
        The KL of every site, 0 for improper sites (the result object
        reports +inf).
    kl_by_variable : dict of str to ndarray, shape (N,)
        The KL split by global variable, 0 for improper sites. The moments
        route computes it on first access.
    improper : ndarray of bool, shape (N,)
    kl_route : str
        The route the KL pass took.
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True, chunk_sites: int = CHUNK_SITES,
                 kl_route: str | None = None):
        if kl_route not in (None, "moments", "eigenbasis"):
            raise ValueError(
                f"kl_route must be None, 'moments' or 'eigenbasis', got {kl_route!r}; use None to let the "
                f"blocks decide"
            )
        with _one_blas_thread():
            self._compute_kl(posterior, warn, chunk_sites, kl_route)

    def _compute_kl(self, posterior, warn, chunk_sites, kl_route):
        """Build the response system and add the response's KL to division's, site by site."""
        from . import closed_form

        self.posterior = posterior
        self.chunk_sites = chunk_sites
        assembled = _assemble_response_system(posterior)
        moments = assembled[6]
        if kl_route is None:
            kl_route = "moments" if moments is not None else "eigenbasis"
        if kl_route == "moments" and moments is None:
            raise ValueError(
                "kl_route='moments' needs every block's statistics to be products of per-site entries "
                "(ResponseBlock.base and monomials), and some block here has none; use "
                "kl_route='eigenbasis' or None"
            )
        self.kl_route = kl_route
        self._split = None

        # Division's KL, B's extreme eigenvalues and the parts of the KL
        # pass's inputs that need only R run on a second thread where they
        # can, while this one forms B and factorises I - B.
        with _SecondThread() as second:
            division_task = second.submit(lambda: closed_form.all_site_kl(posterior))
            self.system = system = _finish_response_system(assembled, warn, eigenvalues=False)
            extremes_task = second.submit(system.extreme_eigenvalues)
            self._slices = system.block_slices()
            self._largest = max(system.blocks, key=lambda b: b.size).variable
            inputs = None
            if system.groups and kl_route == "moments":
                try:
                    inputs = self._moment_inputs(second)
                except SingularResponseError:
                    # The factorisation of I - B failed before the eigenvalues
                    # were checked. Check them now, because they may warn first.
                    system.check_eigenvalues(*second.take(extremes_task), warn)
                    raise
            division, self.improper = second.take(division_task)
            system.check_eigenvalues(*second.take(extremes_task), warn)
        self._division_kl = division
        if inputs is not None:
            added = self._add_kl_from_moments(inputs)
            kl = sum(division.values()) + added
            np.maximum(kl, 0.0, out=kl)
            kl[self.improper] = 0.0
            self.kl = kl
            return
        if system.groups and system.rank:
            for sites, f, projected, z in self._chunks():
                self._add_kl(sites, projected, z)
                self._check_bounds(sites, f, z)
        # The eigenbasis route has the split already, so it fills the cached property.
        self.__dict__["kl_by_variable"] = self._clamped(division)
        self.kl = sum(self.kl_by_variable.values())

    def _clamped(self, parts: dict) -> dict:
        for values in parts.values():
            np.maximum(values, 0.0, out=values)
            values[self.improper] = 0.0
        return parts

    @cached_property
    def kl_by_variable(self) -> dict:
        """KL of each global variable's factor, shape (N,) each; 0 for improper sites.

        The moments route computes the split on first access, with one
        more pass over the sites (about 0.03 s for 100,000 sites in ten
        clusters, against about 0.14 s for the whole construction).

        NOTE: each part is clamped at 0, while ``kl`` clamps the total. The
        parts add up to ``kl`` unless some part is negative before clamping,
        which was not seen on the shipped data or the benchmark's.
        """
        parts = self._division_kl
        if self._split is not None:
            added, arguments = self._split
            names = [b.variable for b in self.system.blocks if b.variable != self._largest]
            small = np.empty((added.size, len(names)))
            with _one_blas_thread():
                lr_kernels.pair_linear_parts(*arguments, _n_parts(), small)
            for column, name in enumerate(names):
                parts[name] += small[:, column]
            parts[self._largest] += added - small.sum(axis=1)
            self._split = None
        return self._clamped(parts)

    def _chunks(self):
        """Yield (sites, features, per-variable c_v, z) for consecutive chunks of sites."""
        system, rank, k_count = self.system, self.system.rank, self.system.n_categories
        small = [b.variable for b in system.blocks if b.variable != self._largest]
        n_sites = system.resp.shape[0]
        for start in range(0, n_sites, self.chunk_sites):
            sites = np.arange(start, min(n_sites, start + self.chunk_sites))
            r = system.resp[sites]
            f = system.features(sites)
            projected = {}
            if rank:
                # Small blocks: one product over all categories. The largest:
                # one product per category over the rows where it is active.
                for name in small:
                    part = self._slices[name]
                    weighted = (r[:, :, None] * f[:, None, part]).reshape(sites.size, -1)
                    projected[name] = weighted @ system.projection[:, part, :].reshape(-1, rank)
                part = self._slices[self._largest]
                largest = np.zeros((sites.size, rank))
                for k in range(k_count):
                    rows = np.flatnonzero(r[:, k] > RESP_TOL)
                    if rows.size == 0:
                        continue
                    product = f[rows, part] @ system.projection[k, part]
                    lr_kernels.scatter_add_scaled(largest, rows, r[rows, k], product)
                projected[self._largest] = largest
                z = sum(projected.values())
                z *= system.gains
            else:
                projected = {name: np.zeros((sites.size, 0)) for name in self._slices}
                z = np.zeros((sites.size, 0))
            yield sites, f, projected, z

    def _response(self, sites, z, name, positions) -> np.ndarray:
        """Response term -A z_i in the given positions of variable ``name``'s block, shape (n, K, len)."""
        system = self.system
        coords = self._slices[name].start + np.asarray(positions, dtype=int)
        lift = system.lift[:, coords, :].reshape(system.n_categories * coords.size, system.rank)
        return -(z @ lift.T).reshape(sites.size, system.n_categories, coords.size)

    def _add_kl(self, sites, projected, z):
        # c_v . z + |U_v z|^2 / 2, with the largest block's norm taken from
        # |z|^2 minus the others' (the rows of U are orthonormal).
        system = self.system
        rest = 0.5 * np.einsum("nr,nr->n", z, z)
        for block in system.blocks:
            name = block.variable
            if name == self._largest:
                continue
            if system.rank:
                rows_v = system.basis[:, self._slices[name], :].reshape(-1, system.rank)
                in_block = z @ rows_v.T
                half_norm = 0.5 * np.einsum("nc,nc->n", in_block, in_block)
            else:
                half_norm = np.zeros(sites.size)
            rest -= half_norm
            self._division_kl[name][sites] += np.einsum("nr,nr->n", projected[name], z) + half_norm
        self._division_kl[self._largest][sites] += np.einsum("nr,nr->n", projected[self._largest], z) + rest

    def _moment_inputs(self, second: "_SecondThread"):
        """Prepare the inputs of the moments route, the response's second-order KL through distinct products.

        Every direction is kept. The total added to site i's KL is s_i^T A s_i
        (ResponseSystem.kl_blocks) with s_i = r_i (x) f_i, that is
        sum_kl r_ik r_il f_i^T A_kl f_i.

        Each f^T A_kl f is a fixed combination c_kl . m_i of the distinct
        products m_i of the site's base entries (ResponseBlock.monomials),
        and one kernel pass sums r_ik r_il c_kl . m_i over the pairs k <= l
        with r_ik r_il above RESP_TOL: one pair for most sites of
        well-separated clusters.

        A smaller block v gets y_v . e_v + |e_v|^2 / 2, with y = L^T s_i and
        e_v = (R y)_v linear in s_i (and so in the products of degree up to
        that of f), and the largest block gets the rest of the total.

        Returns the arguments of the KL kernel and of the split's kernel, and
        the lower bounds to check (see _bound_rows).
        """
        system = self.system
        table = system.moments[1]
        k_count, q = system.n_categories, system.block_size
        raw = np.ascontiguousarray(system.resp, dtype=float)
        group_of = system.category_groups
        together, _ = system.pair_activity
        # Only pairs of categories in one group that some site has above RESP_TOL add anything.
        pairs = [(k, l) for k in range(k_count) for l in range(k, k_count)
                 if group_of[k] >= 0 and group_of[k] == group_of[l] and (k == l or together[k, l])]
        pair_of = np.full((k_count, k_count), -1, dtype=np.int64)
        for column, (k, l) in enumerate(pairs):
            pair_of[k, l] = column
        # A pair k < l stands for both blocks (k, l) and (l, k) of the form.
        doubled = np.array([1.0 if k == l else 2.0 for k, l in pairs])
        # R first, so that the steps that need only R can run on the second
        # thread while this one squares R for the KL form.
        system.symmetric_response
        small_task = second.submit(self._small_block_forms)
        bounds_task = second.submit(self._bound_rows)
        coefficients = np.ascontiguousarray(table.coefficients(system.kl_blocks(pairs)) * doubled[:, None])
        norm = table.coefficients(np.eye(q))
        norm_slots = np.flatnonzero(norm)
        kernel = (system.base_values, raw, np.arange(raw.shape[0]), RESP_TOL, pair_of, coefficients,
                  norm_slots.astype(np.int64), norm[norm_slots], table.runs, _n_parts())
        split = (system.base_values, raw, RESP_TOL) + second.take(small_task)
        return kernel, split, second.take(bounds_task)

    def _small_block_forms(self) -> tuple:
        """Return the split kernel's arguments after ``tol``: the smaller blocks' linear forms in the products."""
        system = self.system
        table = system.moments[1]
        k_count, q = system.n_categories, system.block_size
        # Smaller blocks v, as linear forms in the products: output (k, p)
        # of block v has e = (R y)_(k, p) = sum_l r_l linear[l, (k, p)] . m,
        # from R_{(k, p), l} L_l^T, and y = r_k own[(k, p)] . m, from L_k^T.
        response = system.symmetric_response.reshape(k_count, q, k_count, q)
        small, linear, own, owner = [], [], [], []
        for block in system.blocks:
            if block.variable == self._largest:
                continue
            part = self._slices[block.variable]
            width = part.stop - part.start
            maps = np.einsum("kplm,ljm->lkpj", response[:, part], system.cholesky)
            linear.append((maps @ table.linear_map).reshape(k_count, k_count * width, -1))
            own_f = np.zeros((k_count, width, q))
            own_f[:, :, part] = np.swapaxes(system.cholesky[:, part, part], 1, 2)
            own.append((own_f @ table.linear_map).reshape(k_count * width, -1))
            owner.append(np.repeat(np.arange(k_count), width))
            small.append(np.full(k_count * width, len(small)))
        n_linear = table.linear_map.shape[1]
        linear = np.ascontiguousarray(np.concatenate(linear, axis=1) if linear else np.zeros((k_count, 0, n_linear)))
        own = np.concatenate(own) if own else np.zeros((0, n_linear))
        # y reads few products (one for the mixing weights), so pass only the nonzero ones.
        width = max(1, int(np.count_nonzero(own, axis=1).max(initial=0)))
        own_slots = np.zeros((own.shape[0], width), dtype=np.int64)
        own_values = np.zeros((own.shape[0], width))
        for o, row in enumerate(own):
            nonzero = np.flatnonzero(row)
            own_slots[o, :nonzero.size] = nonzero
            own_values[o, :nonzero.size] = row[nonzero]
        owner = np.concatenate(owner).astype(np.int64) if owner else np.zeros(0, dtype=np.int64)
        small_of = np.concatenate(small).astype(np.int64) if small else np.zeros(0, dtype=np.int64)
        # The linear forms read only the products of degree up to that of f,
        # which come first, so the split fills only the runs that reach them.
        runs = table.runs[table.runs[:, 0] < n_linear]
        n_products = int((runs[:, 0] + runs[:, 2]).max(initial=1))
        return linear, own_slots, own_values, owner, small_of, np.ascontiguousarray(runs), n_products

    def _add_kl_from_moments(self, inputs) -> np.ndarray:
        """Return the response's second-order KL of every site from the inputs of _moment_inputs.

        Also flags the sites whose corrected coordinates cross a lower bound,
        and keeps what the split by variable needs (see kl_by_variable).
        """
        kernel, split, bounds = inputs
        _, raw, rows = kernel[:3]
        n_sites = rows.size
        total, norms, resp_norms = np.empty(n_sites), np.empty(n_sites), np.empty(n_sites)
        lr_kernels.pair_quadratic_forms(*kernel, total, norms, resp_norms)
        self._split = (total, split)
        f_norm = np.sqrt(np.maximum(norms, 0.0))
        self._check_bounds_by_norms(rows, raw, f_norm, f_norm * np.sqrt(resp_norms), bounds)
        return total

    def _bound_rows(self) -> list:
        """Collect, for each block with lower bounds, its positions in g, the bounds, M's rows there and their norms."""
        system = self.system
        k_count, q = system.n_categories, system.block_size
        response = system.symmetric_response.reshape(k_count, q, k_count, q)
        out = []
        for block in system.blocks:
            positions = sorted(block.lower_bounds)
            if not positions:
                continue
            columns = self._slices[block.variable].start + np.asarray(positions, dtype=int)
            # Row (k, p) of M = L^-T R L^T is (L_k^-1 e_p)^T R_k L^T, shape (K, len, G).
            unit = np.zeros((q, columns.size))
            unit[columns, np.arange(columns.size)] = 1.0
            left = np.stack([linalg.solve_triangular(system.cholesky[k], unit, lower=True)
                             for k in range(k_count)])
            width = columns.size
            rows_m = np.matmul(np.swapaxes(left, 1, 2), response.reshape(k_count, q, k_count * q))
            by_category = rows_m.reshape(k_count * width, k_count, q).transpose(1, 0, 2)
            rows_m = np.matmul(by_category, np.swapaxes(system.cholesky, 1, 2)).transpose(1, 0, 2)
            rows_m = rows_m.reshape(k_count, width, -1)
            out.append((block.coordinates[:, positions], columns,
                        np.array([block.lower_bounds[p] for p in positions]), rows_m,
                        np.linalg.norm(rows_m, axis=2)))
        return out

    def _check_bounds_from_moments(self, rows, f, r, bounds):
        """Flag sites whose corrected coordinates cross a block's lower bound (moments route).

        The response in coordinate (k, p) is row (k, p) of M = L^-T R L^T
        times s_i, at most |M row| |s_i| in size (Cauchy-Schwarz), and
        division moves it by at most |f_i| (r <= 1); a chunk is checked site
        by site only when that reach comes near a bound, and then only the
        sites near one.
        """
        s_norm = np.sqrt(np.einsum("nk,nk->n", r, r) * np.einsum("na,na->n", f, f))
        for coordinates, columns, lower, rows_m, reach in bounds:
            lowest = coordinates - np.abs(f[:, columns]).max(axis=0)[None] - reach * s_norm.max()
            if np.all(lowest > lower):
                continue
            divided = coordinates[None] - self.system.resp[rows][:, :, None] * f[:, None, columns]
            near = np.flatnonzero(np.any(divided - reach[None] * s_norm[:, None, None] <= lower, axis=(1, 2)))
            if near.size == 0:
                continue
            messages = (r[near][:, :, None] * f[near][:, None, :]).reshape(near.size, -1)
            corrected = divided[near] - np.einsum("kpg,ng->nkp", rows_m, messages)
            self.improper[rows[near]] |= np.any(corrected <= lower, axis=(1, 2))

    def _check_bounds_by_norms(self, rows, r, f_norm, s_norm, bounds):
        """Flag sites whose corrected coordinates cross a block's lower bound, from |f_i| and |s_i|.

        This is _check_bounds_from_moments with |f_i| in place of the entries
        of f_i at the bounded coordinates. The statistics are computed only
        for the sites that come within reach of a bound.
        """
        if rows.size == 0:
            return
        for coordinates, _, lower, _, reach in bounds:
            lowest = coordinates - f_norm.max() - reach * s_norm.max()
            if np.all(lowest > lower):
                continue
            slack = coordinates[None] - f_norm[:, None, None] - reach[None] * s_norm[:, None, None]
            near = np.flatnonzero(np.any(slack <= lower, axis=(1, 2)))
            if near.size:
                r_near = np.where(r[near] > RESP_TOL, r[near], 0.0)
                self._check_bounds_from_moments(rows[near], self.system.features(rows[near]), r_near, bounds)

    def _check_bounds(self, sites, f, z):
        """Flag sites whose corrected coordinates cross a block's lower bound.

        The response in a coordinate is at most |A row| |z_i| in size
        (Cauchy-Schwarz) and division moves it by at most |f_i| (r <= 1), so
        a chunk is checked site by site only when that bound comes within
        reach of a lower bound, and then only the sites near one.
        """
        system = self.system
        r = system.resp[sites]
        z_norm = np.sqrt(np.einsum("nr,nr->n", z, z))
        for block in system.blocks:
            positions = sorted(block.lower_bounds)
            columns = self._slices[block.variable].start + np.asarray(positions, dtype=int)
            bounds = np.array([block.lower_bounds[p] for p in positions])
            reach = np.linalg.norm(system.lift[:, columns, :], axis=2)
            lowest = (block.coordinates[:, positions] - np.abs(f[:, columns]).max(axis=0)[None]
                      - reach * z_norm.max())
            if np.all(lowest > bounds):
                continue
            divided = block.coordinates[None][:, :, positions] - r[:, :, None] * f[:, None, columns]
            near = np.flatnonzero(np.any(divided - reach[None] * z_norm[:, None, None] <= bounds, axis=(1, 2)))
            if near.size == 0:
                continue
            corrected = divided[near] + self._response(sites[near], z[near], block.variable, positions)
            self.improper[sites[near]] |= np.any(corrected <= bounds, axis=(1, 2))

    @cached_property
    def _predictive_and_shifts(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from . import closed_form

        system = self.system
        n_sites = system.resp.shape[0]
        log_predictive = closed_form.all_site_log_predictive(self.posterior, self.improper.copy())
        direct = self.kl_route == "moments"
        coupled = bool(system.groups) if direct else system.rank > 0
        emission = [b for b in system.blocks if b.predictive_weights is not None]
        weights = emission[0].predictive_weights(self.improper.copy()) if emission and coupled else None
        shifts: dict[str, np.ndarray] = {}
        # Chunk-sized products, on one BLAS thread (see _one_blas_thread).
        with _one_blas_thread():
            for sites, response_at, term_of in (self._direct_chunks() if direct else self._eigenbasis_chunks()):
                scratch = np.zeros(sites.size, dtype=bool)
                for block in system.blocks:
                    response = response_at(block.variable, block.shift_coordinates)
                    for name, values in block.shifts(sites, response, scratch).items():
                        if name not in shifts:
                            shifts[name] = np.zeros((n_sites,) + values.shape[1:])
                        shifts[name][sites] = values
                    if weights is not None:
                        log_predictive[sites] += block.predictive_correction(
                            sites, weights[sites], term_of(block.variable), response)
        log_predictive[self.improper] = -np.inf
        for values in shifts.values():
            values[self.improper] = 0.0
        return log_predictive, shifts

    def _eigenbasis_chunks(self):
        """Yield (sites, response_at, term_of) per chunk, from the kept eigen-directions (see _chunks)."""
        system = self.system
        for sites, _, _, z in self._chunks():
            def response_at(name, positions, sites=sites, z=z):
                return self._response(sites, z, name, positions)

            def term_of(name, z=z):
                lift = system.lift[:, self._slices[name], :]
                return lambda rows, k, shares=None: -(z[rows] @ lift[k].T)

            yield sites, response_at, term_of

    @cached_property
    def _response_blocks(self) -> np.ndarray:
        """M = L^-T R L^T from the symmetric response R, in blocks, shape (K, Q, K, Q).

        The response term of site i is -M s_i. R is 0 outside the coupled
        groups, and so is M.
        """
        system = self.system
        k_count, q = system.n_categories, system.block_size
        response = system.symmetric_response.reshape(k_count, q, k_count, q)
        right = np.einsum("kalb,lcb->kalc", response, system.cholesky)
        with _one_blas_thread():
            return np.stack([linalg.solve_triangular(system.cholesky[k], right[k].reshape(q, -1), lower=True,
                                                     trans="T").reshape(q, k_count, q)
                             for k in range(k_count)])

    def _direct_chunks(self):
        """Yield (sites, response_at, term_of) per chunk, from the dense response matrix M.

        The response term -M s_i in a few coordinates is sum_l r_il times
        f_i against M's columns of category l, one matrix product per
        category over the sites where r_il exceeds RESP_TOL, and needs no
        eigen-decomposition.
        """
        system = self.system
        k_count, q = system.n_categories, system.block_size
        blocks = self._response_blocks
        resp = np.where(system.resp > RESP_TOL, system.resp, 0.0)
        n_sites = resp.shape[0]
        # M is 0 outside the coupled groups, so only their categories take part.
        coupled = system.category_groups >= 0
        members = np.flatnonzero(coupled)
        # Contiguous copies of M's blocks, made on first use, so that each
        # matrix product reads contiguous memory.
        copies = {}

        def transposed(name, k, l):
            if (name, k, l) not in copies:
                copies[name, k, l] = np.ascontiguousarray(blocks[k, self._slices[name], l, :].T)
            return copies[name, k, l]

        def columns(name, positions, l):
            # M's rows at the given positions of every member category, against category l.
            if (name, positions, l) not in copies:
                coords = self._slices[name].start + np.asarray(positions, dtype=int)
                rows_m = blocks[np.ix_(members, coords)][:, :, l, :].reshape(-1, q)
                copies[name, positions, l] = np.ascontiguousarray(rows_m.T)
            return copies[name, positions, l]

        for start in range(0, n_sites, self.chunk_sites):
            sites = np.arange(start, min(n_sites, start + self.chunk_sites))
            f = system.features(sites)
            # Per coupled category l: its rows in the chunk, their messages
            # r_il f_i, and each chunk row's position among them (-1 if none).
            weighted = []
            position = np.full((k_count, sites.size), -1)
            for l in members:
                rows = np.flatnonzero(resp[sites, l])
                if rows.size:
                    weighted.append((l, rows, resp[sites[rows], l, None] * f[rows]))
                    position[l, rows] = np.arange(rows.size)

            def response_at(name, positions, sites=sites, weighted=weighted):
                coords = self._slices[name].start + np.asarray(positions, dtype=int)
                out = np.zeros((sites.size, members.size * coords.size))
                for l, rows, messages in weighted:
                    out[rows] -= messages @ columns(name, tuple(positions), l)
                full = np.zeros((sites.size, k_count, coords.size))
                full[:, members] = out.reshape(sites.size, members.size, coords.size)
                return full

            def term_of(name, sites=sites, weighted=weighted, position=position):
                part = self._slices[name]

                def term(rows, k, shares=None):
                    out = np.zeros((rows.size, part.stop - part.start))
                    if not coupled[k]:
                        return out
                    for l, _, messages in weighted:
                        found = position[l, rows]
                        hit = found >= 0
                        if shares is not None:
                            hit &= shares * resp[sites[rows], l] > PREDICTIVE_SHARE_TOL
                        if hit.any():
                            out[hit] -= messages[found[hit]] @ transposed(name, k, l)
                    return out

                return term

            yield sites, response_at, term_of

    @property
    def loo_log_predictive(self) -> np.ndarray:
        """log p(x_i | data without i) under the corrected posterior, shape (N,); -inf if improper."""
        return self._predictive_and_shifts[0]

    @property
    def shift_names(self) -> list[str]:
        return [name for block in self.system.blocks for name in block.shift_names]

    @property
    def shifts(self) -> dict[str, np.ndarray]:
        """Named parameter shifts under the corrected posterior, site axis first; 0 if improper."""
        return self._predictive_and_shifts[1]


class NoResponseSummaries:
    """Summaries of a model without local variables, where the linear response is exactly zero.

    The CAVI map does not depend on the globals there (J = 0), so the
    corrected posterior is the divided one, and division is already the
    exact leave-one-out posterior.
    """

    def __init__(self, posterior: Posterior):
        from . import closed_form

        self.posterior = posterior
        self.kl_by_variable, self.improper = closed_form.all_site_kl(posterior)
        self._shift_makers = closed_form.all_site_shifts(posterior)

    @cached_property
    def loo_log_predictive(self) -> np.ndarray:
        from . import closed_form

        values = closed_form.all_site_log_predictive(self.posterior, self.improper.copy())
        values[self.improper] = -np.inf
        return values

    @property
    def shift_names(self) -> list[str]:
        return sorted(self._shift_makers)

    @cached_property
    def shifts(self) -> dict[str, np.ndarray]:
        return {name: make() for name, make in self._shift_makers.items()}


def all_site_summaries(posterior: Posterior, *, warn: bool = True, chunk_sites: int = CHUNK_SITES):
    """Linear-response KL for every site now, LOO predictive density and shifts on first access.

    Graphs without local variables get division's summaries, which are
    exact there (:class:`NoResponseSummaries`). Factor analysis goes to
    :func:`fg_influence.influence.linear_response_factor_analysis.all_row_summaries`.
    Graphs with another local block (the hierarchical normal model) go to
    :func:`fg_influence.influence.linear_response_blocks.all_group_summaries`;
    mixtures with one local categorical variable to
    :class:`LinearResponseSummaries`. Both offer ``kl_by_variable``,
    ``improper``, ``loo_log_predictive``, ``shift_names`` and ``shifts``.
    """
    if warn and posterior.n_iter > 0 and not posterior.converged:
        warnings.warn(
            f"the fit stopped after {posterior.n_iter} CAVI iterations without converging, so it is "
            f"not a fixed point of CAVI, and the linear-response correction, which linearises around "
            f"one, can be far off. Refit with a larger max_iter (and check the fit) before using it",
            IllConditionedResponseWarning,
            stacklevel=3,
        )
    blocks = block_names(posterior.graph)
    if not blocks and not list(posterior.graph.variables_of_role("local")):
        return NoResponseSummaries(posterior)
    if blocks:
        from .linear_response_factor_analysis import all_row_summaries, is_factor_analysis

        if is_factor_analysis(posterior):
            return all_row_summaries(posterior, warn=warn)
    if blocks:
        from .linear_response_hmm import all_sequence_summaries, is_hidden_markov

        if is_hidden_markov(posterior):
            return all_sequence_summaries(posterior, warn=warn)
        from .linear_response_lda import all_document_summaries, is_lda

        if is_lda(posterior):
            return all_document_summaries(posterior, warn=warn)
        from .linear_response_blocks import all_group_summaries

        return all_group_summaries(posterior, warn=warn)
    return LinearResponseSummaries(posterior, warn=warn, chunk_sites=chunk_sites)


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


from . import linear_response_conjugate  # noqa: E402,F401  (registers the providers)
