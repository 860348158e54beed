"""Linear-response correction for factor analysis, whose sites carry Gaussian latent blocks.

Division removes row i's messages from the loadings' and noise precisions'
posteriors with every other row's q(z_j) held at its fitted value.
Refitting without the row also moves every other row's latent factors,
which moves the globals further. This module adds that response to first
order, as :mod:`fg_influence.influence.linear_response_blocks` does for the
hierarchical normal model.

The model (see :mod:`fg_influence.graph.factor_analysis_factors`) is, with
zeta_i = (z_i, 1) and P = L + 1,

    z_i ~ N(0, I_L),   x_id | z_i ~ N(w_d^T zeta_i, 1 / psi_d),

with q(w_d) Gaussian (full P x P covariance) and q(psi_d) Gamma for each
of the D columns, and a Gaussian block q(z_i) for each of the N rows.

Coordinates. g holds, for every column d, the natural parameters of
q(w_d), eta1_d (P numbers) and the upper triangle of eta2_d (T = P (P + 1)
/ 2 numbers, each entry standing for itself and its mirror), and those of
q(psi_d), (shape - 1, -rate): G = D (P + T + 2) numbers. The expected
statistics paired with them are the gradient of the globals' log-partition
A along each coordinate:

    m_d = E[w_d],  c_ab = E[w_da w_db] (a = b) or 2 E[w_da w_db] (a < b),
    E[ln psi_d],  omega_d = E[psi_d].

Write u for these and H = du/dg, the Hessian of A (block-diagonal over
columns, symmetric positive definite). With Sigma_d = (-2 eta2_d)^-1 a step
d eta2 moves Sigma_d by 2 Sigma_d (d eta2) Sigma_d, m_d by that times
eta1_d plus Sigma_d d eta1, and M_d = E[w_d w_d^T] by
d Sigma_d + dm_d m_d^T + m_d dm_d^T; the Gamma block is
[[psi'(a), 1 / b], [1 / b, a / b^2]].

Fixed point. One Jacobi sweep of CAVI (update every block from g, then
every global from the blocks and the other globals at g) maps g to
prior + S(g), S(g) = sum_i s_i(u(g)). Row i's messages are the gradient in
u of its expected log joint plus block entropy, maximised over q(z_i)
(the envelope theorem):

    to eta1_d:     omega_d x_id zeta_i
    to eta2_d:     -omega_d E[zeta_i zeta_i^T] / 2
    to shape - 1:  1 / 2 (constant)
    to -rate:      -(x_id^2 - 2 x_id m_d^T zeta_i + tr(M_d E[zeta_i zeta_i^T])) / 2,

with zeta_i = E[zeta_i] = (mu_i, 1). The block that u induces has the same
covariance for every row, Sigma_z = Pi^-1,

    Pi = I_L + sum_d (omega_d M_d)[:L, :L],
    mu_i = Sigma_z h_i,  h_i = sum_d omega_d (x_id m_d[:L] - M_d[:L, L]).

A change du = (dm, dM, d omega) moves it by (with A the L x D matrix of
columns d omega_d m_d[:L] + omega_d dm_d[:L] and c = -sum_d (d omega_d M_d
+ omega_d dM_d)[:L, L])

    dPi = sum_d (d omega_d M_d + omega_d dM_d)[:L, :L],
    dSigma_z = -Sigma_z dPi Sigma_z,
    dmu_i = Sigma_z (A x_i + c - dPi mu_i).

Summed over rows, the messages need only the totals Z = sum_i
E[zeta_i zeta_i^T] ([[N Sigma_z + sum mu mu^T, sum mu], [., N]]) and
R = X^T zeta (D x P), and their moves

    dZ[:L, :L] = N dSigma_z + K + K^T,   K = sum_i dmu_i mu_i^T
               = Sigma_z (A X^T mu + c (sum mu)^T - dPi mu^T mu),
    dZ[:L, L]  = sum_i dmu_i = Sigma_z (A X^T 1 + N c - dPi sum mu),
    dR[:, :L]  = X^T dmu = (X^T X A^T + X^T 1 c^T - X^T mu dPi) Sigma_z,

so the messages move by

    to eta1_d:   d omega_d R_d + omega_d dR_d
    to eta2_d:   -(d omega_d Z + omega_d dZ) / 2
    to -rate:    dm_d^T R_d + m_d^T dR_d - tr(dM_d Z) / 2 - tr(M_d dZ) / 2.

Every term depends on the data only through N, X^T 1, X^T X, X^T mu,
sum mu and mu^T mu, so one row's own term uses the same formulas with that
row's statistics. Taking du along each coordinate direction of u gives the
G x G matrix V = dS/du (rows and columns of the shape coordinates are
zero: no message reads E[ln psi], and the shape message is constant), and

    J = dS/dg = V H.

V is symmetric, being the Hessian in u of the rows' maximised terms. With
H = L L^T, J is similar to B = L^T V L, and I - B is minus the Hessian of
the ELBO, with the blocks maximised out, in the coordinates L^T g. Removing
row i and linearising the fixed-point equation at the fit gives

    delta_g_i = -(I - J)^-1 s_i = -L^-T (I - B)^-1 L^T s_i,

division (-s_i) plus the response term, with one Cholesky factorisation of
the G x G matrix I - B for every row.

Rotations. With L >= 2 factors the model and the mean-field family are
invariant to rotating every loading row's factor part and every z_i by the
same orthogonal matrix, when the priors N(0, I) on z_i and the loadings'
prior are isotropic in the factor part (as ``FactorAnalysis`` builds them;
see :mod:`fg_influence.influence.factor_rotation`). The ELBO is then
constant along the rotation orbit through the fit, and the fixed point
without a row is an orbit, not a point. For a generator A of so(L)
(embedded in P x P with a zero last row and column) the orbit's tangent
at g is

    t_A = (A eta1_d, A eta2_d - eta2_d A for every column d, 0 for the noise),

and differentiating F(rotated g) = rotated F(g) at the fixed point gives
J t_A = t_A. So J has an eigenvalue 1 along each of the L (L - 1) / 2
tangents, B has the eigenvectors u_A = L^T t_A, and I - J is singular.
The row's messages satisfy the solvability condition u_A^T L^T s_i =
t_A^T H s_i = 0, because -H s_i is the gradient of the ELBO without row i
at the fit, and that ELBO is rotation invariant too.

The correction therefore solves in the orthogonal complement of the u_A:
with U an orthonormal basis of span{u_A} and Q one of its complement,

    L^T delta_g_i = -Q (I - Q^T B Q)^-1 Q^T y_i,   y_i = L^T s_i,

the minimum-norm solution in B's coordinates. It is the first-order
leave-one-out fixed point closest to the fit in the metric of H, and so
(to second order) the one with the smallest KL to the fit. The
conditioning check and SingularResponseError apply to the eigenvalues of
Q^T B Q. The linearised Jacobi iteration from the fit stays in the same
subspace, because H t_A is a left eigenvector of J for the eigenvalue 1
and s_i is H-orthogonal to t_A. Exact refits are compared in this gauge:
their KL is taken after rotating each refit to the rotation closest to
the fit (:func:`fg_influence.influence.factor_rotation.align_rotation`).

The library's own CAVI updates the loadings and then the noise precisions
from the new loadings (a Gauss-Seidel sweep), which has the same fixed
points as the Jacobi sweep above but a different Jacobian. The
linearisation of the fixed-point equation, and so delta_g_i, uses the
Jacobi form.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import linalg
from scipy.special import polygamma

from .._validation import check_site_indices
from ..families import Gamma, MultivariateNormal
from ..graph.blocks import block_names
from ..graph.factor_analysis_factors import LatentPriorFactor, LinearGaussianFactor
from ..inference.posterior import Posterior
from .division import site_messages
from .factor_rotation import has_rotation_symmetry
from .linear_response import (  # noqa: F401  (the exception types are re-exported for callers)
    IllConditionedResponseWarning,
    SingularResponseError,
    check_conditioning,
    hessian_cholesky,
)
from .linear_response_blocks import (
    DenseResponseSystem,
    corrected_global_kl,
    symmetric_form,
)
from .linear_response_blocks import newton_corrected_coordinates as _dense_newton_step

__all__ = [
    "FactorAnalysisLayout",
    "FactorAnalysisLinearResponseSummaries",
    "FactorAnalysisResponseSystem",
    "all_row_summaries",
    "build_factor_analysis_response_system",
    "factor_analysis_factors",
    "is_factor_analysis",
    "newton_corrected_coordinates",
    "rotation_tangents",
]

#: Largest |B u - u| (u a unit rotation direction) accepted without a warning. At a
#: converged fit it is of the order of the distance from the fixed point: 2e-5 on
#: standardized iris with two factors and the default tol of 1e-9, 2e-7 with tol 1e-13.
ROTATION_RESIDUAL_WARN = 1e-3

#: Smallest norm, in the metric of H, of a rotation direction u_A = L^T t_A that is solved around.
ROTATION_NORM_TOL = 1e-8


# The model's factors and its coordinates.


def _find_factors(posterior: Posterior):
    graph = posterior.graph
    blocks = block_names(graph)
    if len(blocks) != 1 or list(graph.variables_of_role("local")):
        return None
    factors = graph.factors_of(blocks[0])
    priors = [f for f in factors if isinstance(f, LatentPriorFactor)]
    likelihoods = [f for f in factors if isinstance(f, LinearGaussianFactor)]
    if len(factors) != 2 or len(priors) != 1 or len(likelihoods) != 1:
        return None
    likelihood = likelihoods[0]
    if {v.name for v in graph.variables_of_role("global")} != {likelihood.loadings, likelihood.noise}:
        return None
    return priors[0], likelihood


def is_factor_analysis(posterior: Posterior) -> bool:
    """True when the graph is factor analysis: one Gaussian block, a latent prior, a linear-Gaussian likelihood."""
    return _find_factors(posterior) is not None


def factor_analysis_factors(posterior: Posterior) -> LinearGaussianFactor:
    """Return the ``LinearGaussianFactor`` of a factor analysis graph.

    Raises
    ------
    NotImplementedError
        If the graph is not factor analysis: one Gaussian block with a
        ``LatentPriorFactor`` and a ``LinearGaussianFactor``, no local
        categorical variable, and no global beyond the loadings and the
        noise precisions.
    """
    found = _find_factors(posterior)
    if found is None:
        graph = posterior.graph
        raise NotImplementedError(
            f"this linear-response route supports factor analysis only (one Gaussian block with a "
            f"LatentPriorFactor and a LinearGaussianFactor, no other local variable or global); this "
            f"graph has blocks {block_names(graph)} and factors "
            f"{sorted(type(f).__name__ for f in graph.factors.values())}. Use method='division'"
        )
    return found[1]


@dataclass(frozen=True)
class FactorAnalysisLayout:
    """Positions of each global's natural parameters in g, for D columns and P = L + 1 loadings per row.

    g = (eta1 (D, P) row by row, upper triangle of eta2 (D, T) row by row,
    shape - 1 (D), -rate (D)).
    """

    n_columns: int
    n_loadings: int

    @property
    def triangle(self) -> tuple[np.ndarray, np.ndarray]:
        return np.triu_indices(self.n_loadings)

    @property
    def n_triangle(self) -> int:
        return self.n_loadings * (self.n_loadings + 1) // 2

    @property
    def size(self) -> int:
        return self.n_columns * (self.n_loadings + self.n_triangle + 2)

    @property
    def eta1(self) -> slice:
        return slice(0, self.n_columns * self.n_loadings)

    @property
    def eta2(self) -> slice:
        start = self.n_columns * self.n_loadings
        return slice(start, start + self.n_columns * self.n_triangle)

    @property
    def shape(self) -> slice:
        start = self.eta2.stop
        return slice(start, start + self.n_columns)

    @property
    def rate(self) -> slice:
        start = self.shape.stop
        return slice(start, start + self.n_columns)

    def names(self, loadings: str, noise: str) -> tuple[str, ...]:
        rows, cols = self.triangle
        out = [f"{loadings}.eta1[{d},{a}]" for d in range(self.n_columns) for a in range(self.n_loadings)]
        out += [f"{loadings}.eta2[{d},{a},{b}]" for d in range(self.n_columns) for a, b in zip(rows, cols)]
        out += [f"{noise}.shape_minus_one[{d}]" for d in range(self.n_columns)]
        out += [f"{noise}.minus_rate[{d}]" for d in range(self.n_columns)]
        return tuple(out)

    def pack(self, loadings_natural, noise_natural) -> np.ndarray:
        """Natural parameters (site axes first, if any) as coordinates, shape (..., G)."""
        eta1, eta2 = (np.asarray(p, dtype=float) for p in loadings_natural)
        shape_term, rate_term = (np.asarray(p, dtype=float) for p in noise_natural)
        rows, cols = self.triangle
        lead = eta1.shape[:-2]
        return np.concatenate([eta1.reshape(lead + (-1,)), eta2[..., rows, cols].reshape(lead + (-1,)),
                               shape_term, rate_term], axis=-1)

    def unpack(self, coords) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Natural parameters of the loadings and of the noise at coordinates of shape (..., G)."""
        coords = np.asarray(coords, dtype=float)
        lead = coords.shape[:-1]
        d, p = self.n_columns, self.n_loadings
        rows, cols = self.triangle
        eta1 = coords[..., self.eta1].reshape(lead + (d, p))
        upper = coords[..., self.eta2].reshape(lead + (d, self.n_triangle))
        eta2 = np.zeros(lead + (d, p, p))
        eta2[..., rows, cols] = upper
        eta2[..., cols, rows] = upper
        return (eta1, eta2), (coords[..., self.shape].copy(), coords[..., self.rate].copy())


# Rotations of the factors.


def rotation_tangents(layout: FactorAnalysisLayout, coords) -> np.ndarray:
    """Tangents of the rotation orbit through coordinates g, one per generator of so(L), shape (L (L - 1) / 2, G).

    For the generator A = E_ab - E_ba (a < b), embedded in the P x P
    matrices with a zero last row and column, rotating every loading row
    by exp(eps A) moves eta1_d by eps A eta1_d and eta2_d by
    eps (A eta2_d - eta2_d A), and leaves the noise coordinates alone.
    The tangents are in the order of ``numpy.triu_indices(L, 1)``; they
    are not normalised.
    """
    (eta1, eta2), _ = layout.unpack(coords)
    n_factors = layout.n_loadings - 1
    zeros = np.zeros(layout.n_columns)
    tangents = []
    for a, b in zip(*np.triu_indices(n_factors, 1)):
        generator = np.zeros((layout.n_loadings, layout.n_loadings))
        generator[a, b], generator[b, a] = 1.0, -1.0
        moved = ((eta1 @ generator.T, generator @ eta2 - eta2 @ generator), (zeros, zeros))
        tangents.append(layout.pack(*moved))
    return np.array(tangents).reshape(-1, layout.size)


# The Hessian of the log-partition and the Jacobian.


def log_partition_hessian(layout: FactorAnalysisLayout, loadings: MultivariateNormal, noise: Gamma) -> np.ndarray:
    """H = du/dg, the Hessian of the globals' log-partition in these coordinates, shape (G, G)."""
    d_count, p = layout.n_columns, layout.n_loadings
    rows, cols = layout.triangle
    t = layout.n_triangle
    sigma = loadings.covariance()                      # (D, P, P)
    mean = loadings.mean                               # (D, P)
    precision = loadings.precision
    local = p + t
    # Directions of q(w_d)'s coordinates: d eta1 (local, P) and d eta2 (local, P, P).
    d_eta1 = np.zeros((local, p))
    d_eta1[:p] = np.eye(p)
    d_eta2 = np.zeros((local, p, p))
    d_eta2[p + np.arange(t), rows, cols] = 1.0
    d_eta2[p + np.arange(t), cols, rows] = 1.0
    # dSigma = 2 Sigma d_eta2 Sigma;  dm = dSigma Lambda m + Sigma d_eta1.
    d_sigma = 2.0 * np.einsum("dab,kbc,dce->dkae", sigma, d_eta2, sigma)
    lam_m = np.einsum("dab,db->da", precision, mean)
    d_mean = np.einsum("dkab,db->dka", d_sigma, lam_m) + np.einsum("dab,kb->dka", sigma, d_eta1)
    d_second = d_sigma + d_mean[..., :, None] * mean[:, None, None, :] + mean[:, None, :, None] * d_mean[..., None, :]
    weights = np.where(rows == cols, 1.0, 2.0)
    d_u = np.concatenate([d_mean, weights * d_second[..., rows, cols]], axis=2)   # (D, local, local)

    hessian = np.zeros((layout.size, layout.size))
    eta1_pos = np.arange(layout.eta1.start, layout.eta1.stop).reshape(d_count, p)
    eta2_pos = np.arange(layout.eta2.start, layout.eta2.stop).reshape(d_count, t)
    shape, rate = np.asarray(noise.shape, dtype=float), np.asarray(noise.rate, dtype=float)
    for column in range(d_count):
        positions = np.concatenate([eta1_pos[column], eta2_pos[column]])
        hessian[np.ix_(positions, positions)] = d_u[column].T
        gamma_pos = [layout.shape.start + column, layout.rate.start + column]
        hessian[np.ix_(gamma_pos, gamma_pos)] = [[polygamma(1, shape[column]), 1.0 / rate[column]],
                                                 [1.0 / rate[column], shape[column] / rate[column] ** 2]]
    return 0.5 * (hessian + hessian.T)


def block_statistics(x: np.ndarray, latent_mean: np.ndarray) -> dict[str, np.ndarray]:
    """Data statistics the Jacobian reads, summed over the given rows.

    Parameters
    ----------
    x : ndarray, shape (n, D)
        Rows of the data.
    latent_mean : ndarray, shape (n, L)
        E[z_i] of those rows at the fit.

    Returns
    -------
    dict with ``count`` (float), ``sum_x`` (D,), ``xx`` (D, D), ``x_mu`` (D, L),
    ``sum_mu`` (L,), ``mu_mu`` (L, L).
    """
    return {"count": float(x.shape[0]), "sum_x": x.sum(axis=0), "xx": x.T @ x, "x_mu": x.T @ latent_mean,
            "sum_mu": latent_mean.sum(axis=0), "mu_mu": latent_mean.T @ latent_mean}


def row_statistics(x: np.ndarray, latent_mean: np.ndarray) -> dict[str, np.ndarray]:
    """Compute the statistics of :func:`block_statistics` for each row separately, row axis first."""
    return {"count": np.ones(x.shape[0]), "sum_x": x.copy(), "xx": x[:, :, None] * x[:, None, :],
            "x_mu": x[:, :, None] * latent_mean[:, None, :], "sum_mu": latent_mean.copy(),
            "mu_mu": latent_mean[:, :, None] * latent_mean[:, None, :]}


def message_information(layout: FactorAnalysisLayout, loadings: MultivariateNormal, noise: Gamma,
                        latent_covariance: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    """V = dS/du for the rows summarised in ``stats``, shape (G, G).

    Column c is the move of the summed messages (in coordinates) when the
    expected statistic paired with coordinate c moves by one, through the
    blocks q(z_i) that the globals induce and through the messages' own
    dependence on the globals. The formulas are in the module docstring.
    ``latent_covariance`` is Sigma_z (L, L), the blocks' shared covariance.
    """
    d_count, p = layout.n_columns, layout.n_loadings
    n_factors = p - 1
    rows, cols = layout.triangle
    t = layout.n_triangle
    size = layout.size
    mean = loadings.mean                                # (D, P)
    second = loadings.expected_stats()[1]               # (D, P, P)
    omega = np.asarray(noise.mean(), dtype=float)       # (D,)
    sigma_z = latent_covariance
    count, sum_x, xx, x_mu = stats["count"], stats["sum_x"], stats["xx"], stats["x_mu"]
    sum_mu, mu_mu = stats["sum_mu"], stats["mu_mu"]

    # Totals Z = sum_i E[zeta zeta^T] (P, P) and R = X^T zeta (D, P).
    total = np.empty((p, p))
    total[:n_factors, :n_factors] = count * sigma_z + mu_mu
    total[:n_factors, n_factors] = total[n_factors, :n_factors] = sum_mu
    total[n_factors, n_factors] = count
    r = np.concatenate([x_mu, sum_x[:, None]], axis=1)

    # Unit moves of u along each coordinate: dm (U, D, P), dM (U, D, P, P), d omega (U, D).
    d_m = np.zeros((size, d_count, p))
    d_second = np.zeros((size, d_count, p, p))
    d_omega = np.zeros((size, d_count))
    columns = np.arange(d_count)
    eta1_pos = np.arange(layout.eta1.start, layout.eta1.stop).reshape(d_count, p)
    eta2_pos = np.arange(layout.eta2.start, layout.eta2.stop).reshape(d_count, t)
    for a in range(p):
        d_m[eta1_pos[:, a], columns, a] = 1.0
    for k, (a, b) in enumerate(zip(rows, cols)):
        # c_ab = 2 E[w_a w_b] off the diagonal, so a unit move of it moves M_ab and M_ba by 1/2.
        value = 1.0 if a == b else 0.5
        d_second[eta2_pos[:, k], columns, a, b] = value
        d_second[eta2_pos[:, k], columns, b, a] = value
    d_omega[np.arange(layout.rate.start, layout.rate.stop), columns] = 1.0

    # Block response.
    weighted = d_omega[:, :, None, None] * second[None] + omega[None, :, None, None] * d_second
    d_pi = weighted[:, :, :n_factors, :n_factors].sum(axis=1)                            # (U, L, L)
    c = -weighted[:, :, :n_factors, n_factors].sum(axis=1)                               # (U, L)
    a_mat = (d_omega[:, :, None] * mean[None, :, :n_factors]
             + omega[None, :, None] * d_m[:, :, :n_factors]).transpose(0, 2, 1)         # (U, L, D)
    d_sigma_z = -np.einsum("ab,ubc,cd->uad", sigma_z, d_pi, sigma_z)
    k_mat = np.einsum("ab,ubc->uac", sigma_z,
                      np.einsum("uad,dc->uac", a_mat, x_mu) + c[:, :, None] * sum_mu[None, None, :]
                      - np.einsum("uab,bc->uac", d_pi, mu_mu))
    d_sum_mu = np.einsum("ab,ub->ua", sigma_z, np.einsum("uad,d->ua", a_mat, sum_x) + count * c
                         - np.einsum("uab,b->ua", d_pi, sum_mu))
    d_x_mu = np.einsum("uda,ab->udb", np.einsum("de,uae->uda", xx, a_mat) + sum_x[None, :, None] * c[:, None, :]
                       - np.einsum("da,uab->udb", x_mu, d_pi), sigma_z)                   # (U, D, L)
    d_total = np.zeros((size, p, p))
    d_total[:, :n_factors, :n_factors] = count * d_sigma_z + k_mat + np.swapaxes(k_mat, 1, 2)
    d_total[:, :n_factors, n_factors] = d_sum_mu
    d_total[:, n_factors, :n_factors] = d_sum_mu
    d_r = np.zeros((size, d_count, p))
    d_r[:, :, :n_factors] = d_x_mu

    # Message moves, in coordinates.
    to_eta1 = d_omega[:, :, None] * r[None] + omega[None, :, None] * d_r                  # (U, D, P)
    to_eta2 = -0.5 * (d_omega[:, :, None, None] * total[None, None] + omega[None, :, None, None] * d_total[:, None])
    to_rate = (np.einsum("udp,dp->ud", d_m, r) + np.einsum("dp,udp->ud", mean, d_r)
               - 0.5 * np.einsum("udab,ba->ud", d_second, total) - 0.5 * np.einsum("dab,uba->ud", second, d_total))
    by_direction = np.concatenate([to_eta1.reshape(size, -1), to_eta2[..., rows, cols].reshape(size, -1),
                                   np.zeros((size, d_count)), to_rate], axis=1)
    return by_direction.T


@dataclass
class FactorAnalysisResponseSystem(DenseResponseSystem):
    """J = dS/dg at a fitted factor analysis posterior, and (I - J)^-1 by Cholesky.

    Attributes
    ----------
    layout : FactorAnalysisLayout
    names : tuple of str
        Name of each of the G coordinates.
    variables : tuple of str
        Names of the loadings and of the noise precisions.
    coordinates : ndarray, shape (G,)
        Fitted g.
    prior_coordinates : ndarray, shape (G,)
    site_messages : ndarray, shape (N, G)
        Each row's messages s_i at the fit (those division subtracts).
    hessian : ndarray, shape (G, G)
        H, the Hessian of the globals' log-partition.
    cholesky : ndarray, shape (G, G)
        Lower Cholesky factor L of H.
    latent_covariance : ndarray, shape (L, L)
        Sigma_z, the covariance every row's block shares at the fit.
    row_statistics : dict of str to ndarray
        Each row's data statistics (row axis first), for its own term J_i.
    missing_information : ndarray, shape (G, G)
        V = dS/du, symmetrised.
    symmetric : ndarray, shape (G, G)
        B = L^T V L.
    eigenvalues : ndarray, shape (G,) or (G - R,)
        Of J (equal to those of B), ascending. With a rotation symmetry,
        those of Q^T B Q: the R rotation directions are left out (R is
        L (L - 1) / 2 unless factors have collapsed to the prior).
    condition_number : float
        Of I - J, as (1 - smallest) / (1 - largest) eigenvalue (over the
        same eigenvalues).
    rotation_basis : ndarray, shape (G, R) or None
        U, an orthonormal basis of the rotation directions u_A = L^T t_A in
        B's coordinates; None without a rotation symmetry (one factor).
    complement : ndarray, shape (G, G - R) or None
        Q, an orthonormal basis of their orthogonal complement, in which
        :meth:`solve` works; None without a rotation symmetry.
    rotation_eigenvalues : ndarray, shape (R,)
        Eigenvalues of U^T B U, 1 at an exact fixed point.
    rotation_residual : float
        Largest |B u - u| over the columns u of U, 0 at an exact fixed point.
    """

    layout: FactorAnalysisLayout
    names: tuple
    variables: tuple
    coordinates: np.ndarray
    prior_coordinates: np.ndarray
    site_messages: np.ndarray
    hessian: np.ndarray
    cholesky: np.ndarray
    latent_covariance: np.ndarray
    row_statistics: dict
    missing_information: np.ndarray
    symmetric: np.ndarray
    eigenvalues: np.ndarray
    condition_number: float
    loadings: MultivariateNormal
    noise: Gamma
    rotation_basis: np.ndarray | None = None
    complement: np.ndarray | None = None
    rotation_eigenvalues: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    rotation_residual: float = 0.0

    @cached_property
    def _factor(self):
        if self.complement is None:
            return super()._factor
        reduced = np.eye(self.complement.shape[1]) - self.complement.T @ self.symmetric @ self.complement
        return linalg.cho_factor(0.5 * (reduced + reduced.T), lower=True)

    def solve(self, vectors: np.ndarray) -> np.ndarray:
        """Apply (I - J)^-1 to each row of ``vectors`` (n, G), as L^-T (I - B)^-1 L^T.

        With a rotation symmetry I - J is singular, and this applies
        L^-T Q (I - Q^T B Q)^-1 Q^T L^T. That is the minimum-norm solution in
        B's coordinates. Each vector's part along the rotation directions,
        zero at an exact fixed point, is dropped.
        """
        if self.complement is None:
            return super().solve(vectors)
        projected = self.complement.T @ (self.cholesky.T @ np.asarray(vectors, dtype=float).T)
        inner = self.complement @ linalg.cho_solve(self._factor, projected)
        return linalg.solve_triangular(self.cholesky, inner, lower=True, trans="T").T

    def site_jacobian(self, site: int) -> np.ndarray:
        """J_i = V_i H, row i's own term of J, shape (G, G)."""
        stats = {key: value[site] for key, value in self.row_statistics.items()}
        own = message_information(self.layout, self.loadings, self.noise, self.latent_covariance, stats)
        return own @ self.hessian

    def natural_params(self, coords: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        """Natural parameters of each global at coordinates of shape (..., G), by variable name."""
        loadings, noise = self.layout.unpack(coords)
        return dict(zip(self.variables, (loadings, noise)))

    def to_globals(self, coords: np.ndarray) -> dict:
        """Build the global posteriors at coordinates (G,); raise ValueError if one is improper."""
        natural = self.natural_params(coords)
        loadings, noise = self.variables
        return {loadings: MultivariateNormal.from_natural(*natural[loadings]),
                noise: Gamma.from_natural(*natural[noise])}


def build_factor_analysis_response_system(posterior: Posterior, *, warn: bool = True) -> FactorAnalysisResponseSystem:
    """Assemble J at a fitted factor analysis posterior and factorise I - B.

    Raises
    ------
    NotImplementedError
        If the graph is not factor analysis.
    SingularResponseError
        If J has an eigenvalue of at least 1 (the fit is not a strict local
        maximum of the ELBO), not counting the rotation directions of two or
        more factors, which are solved around (see the module docstring).

    Warns
    -----
    IllConditionedResponseWarning
        If the condition number of I - J exceeds CONDITION_WARN, or the
        rotation directions are far from eigenvectors of J (see
        :func:`rotation_split`).
    """
    likelihood = factor_analysis_factors(posterior)
    variables = (likelihood.loadings, likelihood.noise)
    loadings, noise = (posterior.globals[name] for name in variables)
    graph = posterior.graph
    layout = FactorAnalysisLayout(loadings.mean.shape[0], loadings.mean.shape[1])

    all_sites = np.arange(posterior.n_sites)
    messages = layout.pack(*(site_messages(posterior, name, all_sites) for name in variables))
    x = posterior.data[likelihood.observed]
    latent = posterior.locals[likelihood.block]
    latent_mean = np.asarray(latent.stat0, dtype=float)
    # Every row's block has the same covariance; recompute it from the
    # globals so that J is taken at the blocks they induce.
    n_factors = layout.n_loadings - 1
    second = loadings.expected_stats()[1]
    omega = np.asarray(noise.mean(), dtype=float)
    latent_precision = np.eye(n_factors) + np.einsum("d,dab->ab", omega, second)[:n_factors, :n_factors]
    latent_covariance = np.linalg.inv(latent_precision)
    latent_covariance = 0.5 * (latent_covariance + latent_covariance.T)

    hessian = log_partition_hessian(layout, loadings, noise)
    chol = hessian_cholesky(hessian, variables)
    information = message_information(layout, loadings, noise, latent_covariance, block_statistics(x, latent_mean))
    information = 0.5 * (information + information.T)
    b_sym, eigenvalues = symmetric_form(chol, information)
    coordinates = layout.pack(loadings.natural_params(), noise.natural_params())
    rotation = {}
    if has_rotation_symmetry(posterior):
        rotation = rotation_split(chol, b_sym, rotation_tangents(layout, coordinates), warn)
        eigenvalues = rotation.pop("eigenvalues")
    condition = check_conditioning(float(eigenvalues[-1]), float(eigenvalues[0]), warn, ADVICE)
    prior = graph.variables
    return FactorAnalysisResponseSystem(
        layout=layout,
        names=layout.names(*variables),
        variables=variables,
        coordinates=coordinates,
        prior_coordinates=layout.pack(prior[variables[0]].prior.natural_params(),
                                      prior[variables[1]].prior.natural_params()),
        site_messages=messages,
        hessian=hessian,
        cholesky=chol,
        latent_covariance=latent_covariance,
        row_statistics=row_statistics(x, latent_mean),
        missing_information=information,
        symmetric=b_sym,
        eigenvalues=eigenvalues,
        condition_number=condition,
        loadings=loadings,
        noise=noise,
        **rotation,
    )


def rotation_split(cholesky: np.ndarray, symmetric: np.ndarray, tangents: np.ndarray, warn: bool) -> dict:
    """Split B's coordinates into the rotation directions u_A = L^T t_A and their complement.

    Parameters
    ----------
    cholesky : ndarray, shape (G, G)
        L, the lower Cholesky factor of H.
    symmetric : ndarray, shape (G, G)
        B = L^T V L.
    tangents : ndarray, shape (R, G)
        The rotation tangents t_A of :func:`rotation_tangents`. Directions
        in their span with norm below ROTATION_NORM_TOL are not split off.
    warn : bool
        Warn if the u_A are far from eigenvectors of B.

    Returns
    -------
    dict with ``rotation_basis`` U (G, R), ``complement`` Q (G, G - R),
    ``rotation_eigenvalues`` (R,), ``rotation_residual`` and
    ``eigenvalues`` (G - R,) of Q^T B Q, ascending.

    Warns
    -----
    IllConditionedResponseWarning
        If ``warn`` and some unit u in span{u_A} has |B u - u| above
        ROTATION_RESIDUAL_WARN, which means the fit is far from a fixed point.
    """
    # A rotation that moves the posterior by less than ROTATION_NORM_TOL in the norm of
    # H (a KL below about 1e-16 per radian) is no direction at all. Either the
    # factors it mixes have collapsed to the prior, or the rotations are not
    # independent at this fit, as seen where two factors had proportional loadings.
    vectors, sizes, _ = np.linalg.svd(cholesky.T @ tangents.T, full_matrices=True)
    n_rotations = int(np.sum(sizes > ROTATION_NORM_TOL))
    basis, complement = vectors[:, :n_rotations], vectors[:, n_rotations:]
    residual = float(np.linalg.norm(symmetric @ basis - basis, axis=0).max(initial=0.0))
    reduced = complement.T @ symmetric @ complement
    if warn and residual > ROTATION_RESIDUAL_WARN:
        warnings.warn(
            f"the rotation directions of the factors are far from eigenvectors of J with eigenvalue 1 "
            f"(|B u - u| up to {residual:.3g}), so the fit is far from a fixed point of CAVI and the "
            f"linear-response estimates may be inaccurate; refit with a smaller tol such as 1e-12",
            IllConditionedResponseWarning,
            stacklevel=3,
        )
    return {"rotation_basis": basis, "complement": complement,
            "rotation_eigenvalues": np.linalg.eigvalsh(basis.T @ symmetric @ basis),
            "rotation_residual": residual,
            "eigenvalues": np.linalg.eigvalsh(0.5 * (reduced + reduced.T))}


def newton_corrected_coordinates(system: FactorAnalysisResponseSystem, site: int) -> np.ndarray:
    """Take one Newton step from the fit towards the fixed point without row i, shape (G,).

    The step is g - (I - J + J_i)^-1 s_i, division plus a response term in
    J - J_i (see :func:`fg_influence.influence.linear_response_blocks.newton_corrected_coordinates`).
    With a rotation symmetry the fixed points without the row form an
    orbit. The step is then taken in the same gauge as
    :meth:`FactorAnalysisResponseSystem.solve`: L^T times the step lies in
    the complement Q of the rotation directions, and the equations are
    projected onto Q,

        g - L^-T Q (I - Q^T (B - B_i) Q)^-1 Q^T L^T s_i,   B_i = L^T V_i L.
    """
    if system.complement is None:
        return _dense_newton_step(system, site)
    site = int(check_site_indices([site], system.n_sites)[0])
    stats = {key: value[site] for key, value in system.row_statistics.items()}
    own = message_information(system.layout, system.loadings, system.noise, system.latent_covariance, stats)
    without = system.symmetric - system.cholesky.T @ (0.5 * (own + own.T)) @ system.cholesky
    q = system.complement
    reduced = np.eye(q.shape[1]) - q.T @ without @ q
    inner = q @ np.linalg.solve(reduced, q.T @ (system.cholesky.T @ system.site_messages[site]))
    return system.coordinates - linalg.solve_triangular(system.cholesky, inner, lower=True, trans="T")


#: Advice in the errors and warnings about I - J, for factor analysis.
ADVICE = {
    "singular": "Refit with a smaller tol or a larger max_iter, or use stronger priors, "
                "or use method='division'",
    "cause": "often a loading or noise precision that the data barely determine",
    "ill_conditioned": "use stronger priors, or check the estimates against exact refits",
}


# All-row summaries.


class FactorAnalysisLinearResponseSummaries:
    """Per-row summaries of the linear-response corrected global posteriors, row axis first.

    Each row's corrected coordinates g - (I - J)^-1 s_i are turned into
    Gaussian and Gamma posteriors and compared with the fit exactly. A
    corrected posterior is improper when a Gamma shape or rate is at most 0
    or a loading row's precision is not positive definite. Such a row is
    flagged in ``improper``, and its KL and shifts are left at 0.

    Factor analysis has no closed-form LOO predictive density (division
    offers none either), so ``loo_log_predictive`` raises ValueError.

    Attributes
    ----------
    system : FactorAnalysisResponseSystem
    corrected : ndarray, shape (N, G)
        Corrected coordinates of every row.
    kl_by_variable : dict of str to ndarray, shape (N,)
        KL(q || q corrected) of each global, 0 for improper rows.
    improper : ndarray of bool, shape (N,)
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True):
        self.posterior = posterior
        self.system = build_factor_analysis_response_system(posterior, warn=warn)
        self.corrected, self.kl_by_variable, self.improper = corrected_global_kl(posterior, self.system)

    @property
    def shift_names(self) -> list[str]:
        loadings, noise = self.system.variables
        return [f"{loadings}.mean", f"{noise}.mean"]

    @cached_property
    def shifts(self) -> dict[str, np.ndarray]:
        """E[w] corrected minus E[w] (N, D, L + 1) and E[psi] corrected minus E[psi] (N, D); 0 where improper."""
        loadings, noise = self.system.variables
        natural = self.system.natural_params(self.corrected)
        eta1, eta2 = natural[loadings]
        shape_term, rate_term = natural[noise]
        proper = ~self.improper
        loading_shift = np.zeros(eta1.shape)
        noise_shift = np.zeros(shape_term.shape)
        if proper.any():
            # The corrected precisions of proper rows are positive definite (their KL was finite).
            corrected_mean = np.linalg.solve(-2.0 * eta2[proper], eta1[proper][..., None])[..., 0]
            loading_shift[proper] = corrected_mean - self.posterior.globals[loadings].mean
            noise_shift[proper] = (shape_term[proper] + 1.0) / -rate_term[proper] - self.posterior.globals[noise].mean()
        return {f"{loadings}.mean": loading_shift, f"{noise}.mean": noise_shift}

    @property
    def loo_log_predictive(self) -> np.ndarray:
        raise ValueError(
            "the LOO log predictive density is not available for factor analysis: its factor has no "
            "closed form for it, under division or under the linear-response correction"
        )


def all_row_summaries(posterior: Posterior, *, warn: bool = True) -> FactorAnalysisLinearResponseSummaries:
    """Linear-response KL of every row of a factor analysis fit, shifts on first access."""
    return FactorAnalysisLinearResponseSummaries(posterior, warn=warn)
