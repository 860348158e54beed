"""Rotations of the factors of factor analysis, and exact refits aligned to the fit.

With L >= 2 factors, rotating the factor part of every loading row and
every row's latent factors z_i by the same orthogonal matrix R leaves the
likelihood unchanged:

    w_d[:L] -> R w_d[:L],   z_i -> R z_i.

The priors, the mean-field family and the ELBO are unchanged too when
z_i ~ N(0, I) and the loadings' prior is isotropic in the factor part. That
prior needs a zero mean there, a precision c I in that block, and no
coupling to the column mean, which is how ``FactorAnalysis`` builds it. The fit without a row is
then an orbit of fixed points, not a single one, and a refit warm-started
from the fit stops wherever CAVI leaves it on that orbit. Its KL to the
fit mixes the row's influence with an arbitrary rotation.

:func:`align_rotation` removes that arbitrariness. It rotates the refit
into the gauge closest to the fit: the rotation R that minimises
KL(q || q refitted and rotated by R) over orthogonal matrices, found by
BFGS over the rotation's generators, starting from the orthogonal
Procrustes rotation that best aligns the refit's loading means to the
fit's. The noise precisions do not rotate, so only the loadings' KL
depends on R, and it is a quadratic function of R (see
:func:`_rotation_objective`). This is the gauge that the linear-response
correction for factor analysis uses, to second order in the move (see
:mod:`fg_influence.influence.linear_response_factor_analysis`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import linalg, optimize

from ..families import MultivariateNormal
from ..inference.posterior import Posterior

__all__ = ["align_rotation", "closest_rotation", "has_rotation_symmetry", "rotate_factors"]

#: Relative tolerance of the isotropy check on the loadings' prior.
ISOTROPY_RTOL = 1e-12


def _factor_analysis_names(posterior: Posterior):
    """(block, loadings, noise) names of a factor analysis graph, or None for any other graph."""
    from .linear_response_factor_analysis import _find_factors

    found = _find_factors(posterior)
    if found is None:
        return None
    likelihood = found[1]
    return likelihood.block, likelihood.loadings, likelihood.noise


def _is_isotropic(prior: MultivariateNormal, n_factors: int) -> bool:
    """Check whether every rotation of the factor part leaves the loadings' prior unchanged."""
    eta1, eta2 = prior.natural_params()
    eta1 = np.broadcast_to(eta1, eta2.shape[:-1])
    scale = ISOTROPY_RTOL * max(float(np.abs(eta2).max()), float(np.abs(eta1).max()), 1e-300)
    block = eta2[..., :n_factors, :n_factors]
    diagonal = block[..., 0, 0][..., None, None] * np.eye(n_factors)
    return bool(np.abs(eta1[..., :n_factors]).max() <= scale
                and np.abs(eta2[..., :n_factors, n_factors]).max() <= scale
                and np.abs(block - diagonal).max() <= scale)


def has_rotation_symmetry(posterior: Posterior) -> bool:
    """Return whether ``posterior`` is factor analysis with L >= 2 factors and a rotation-invariant prior.

    The latent prior of factor analysis is always N(0, I). The loadings'
    prior is rotation invariant when its factor part has zero natural
    mean, an isotropic precision block, and no coupling to the column mean.
    """
    names = _factor_analysis_names(posterior)
    if names is None:
        return False
    _, loadings, _ = names
    n_factors = posterior.globals[loadings].mean.shape[-1] - 1
    if n_factors < 2:
        return False
    return _is_isotropic(posterior.graph.variables[loadings].prior, n_factors)


def _embed(rotation: np.ndarray) -> np.ndarray:
    """Embed an (L, L) rotation in the (L + 1, L + 1) matrix that also keeps a loading row's mean entry."""
    n_factors = rotation.shape[0]
    full = np.eye(n_factors + 1)
    full[:n_factors, :n_factors] = rotation
    return full


def rotate_factors(posterior: Posterior, rotation) -> Posterior:
    """Rotate the factors of a factor analysis posterior by an orthogonal matrix.

    The loadings' factor part becomes R E[w_d[:L]] with covariance rotated
    to match, and each row's E[z_i] becomes R E[z_i] and E[z_i z_i^T]
    becomes R E[z_i z_i^T] R^T. The noise precisions, the block entropies
    and the ELBO do not change. ``posterior`` is not modified.

    Parameters
    ----------
    posterior : Posterior
        A factor analysis posterior with L factors.
    rotation : array_like, shape (L, L)
        An orthogonal matrix R.

    Returns
    -------
    Posterior

    Raises
    ------
    ValueError
        If ``posterior`` is not factor analysis, or ``rotation`` is not an
        orthogonal (L, L) matrix.
    """
    names = _factor_analysis_names(posterior)
    if names is None:
        raise ValueError("rotate_factors needs a factor analysis posterior (see FactorAnalysis)")
    block, loadings_name, _ = names
    loadings = posterior.globals[loadings_name]
    n_factors = loadings.mean.shape[-1] - 1
    rotation = np.asarray(rotation, dtype=float)
    if rotation.shape != (n_factors, n_factors):
        raise ValueError(f"rotation must have shape ({n_factors}, {n_factors}) for {n_factors} factors, "
                         f"got {rotation.shape}")
    if not np.allclose(rotation @ rotation.T, np.eye(n_factors), rtol=0.0, atol=1e-10):
        raise ValueError("rotation must be orthogonal (R R^T = I to 1e-10); pass an orthogonal matrix, "
                         "for example from scipy.stats.ortho_group or scipy.linalg.orthogonal_procrustes")
    full = _embed(rotation)

    globals_ = dict(posterior.globals)
    globals_[loadings_name] = MultivariateNormal(loadings.mean @ full.T, full @ loadings.precision @ full.T)
    locals_ = dict(posterior.locals)
    state = posterior.locals[block]
    arrays = dict(state.arrays)
    arrays["stat0"] = np.asarray(state.stat0) @ rotation.T
    arrays["stat1"] = np.einsum("ab,ibc,dc->iad", rotation, np.asarray(state.stat1), rotation)
    locals_[block] = type(state)(arrays)
    return dataclasses.replace(posterior, globals=globals_, locals=locals_)


def _rotation_objective(fitted: MultivariateNormal, refit: MultivariateNormal):
    """Build the rotation-dependent part of KL(q || q refitted and rotated), with its gradient in the (P, P) rotation.

    With Rt the embedded rotation, M_d = E_q[w_d w_d^T] and the refit's
    mean m'_d and precision Lambda'_d, the rotated refit's KL is, up to
    terms that do not depend on Rt,

        f(Rt) = sum_d tr(Lambda'_d Rt^T M_d Rt) / 2 - m_d^T Rt Lambda'_d m'_d,

    with gradient sum_d M_d Rt Lambda'_d - m_d (Lambda'_d m'_d)^T.
    """
    second = fitted.expected_stats()[1]                                     # (D, P, P)
    mean = fitted.mean                                                      # (D, P)
    precision = refit.precision                                             # (D, P, P)
    pulled = np.einsum("dab,db->da", precision, refit.mean)                 # Lambda'_d m'_d

    def objective(full):
        moved = np.einsum("dab,bc->dac", second, full)                      # M_d Rt
        quadratic = 0.5 * np.einsum("dba,bc,dca->", moved, full, precision)
        value = quadratic - np.einsum("da,ab,db->", mean, full, pulled)
        gradient = np.einsum("dab,dbc->ac", moved, precision) - mean.T @ pulled
        return value, gradient

    return objective


def closest_rotation(fitted: MultivariateNormal, refit: MultivariateNormal) -> np.ndarray:
    """Find the orthogonal R that minimises KL(fitted || refit with its factor part rotated by R).

    The search starts from the orthogonal Procrustes rotation that best
    aligns the refit's loading means to the fitted ones (least squares
    over the factor parts) and runs BFGS over R = expm(A) R_0 with A
    skew-symmetric, using the exact gradient (through
    :func:`scipy.linalg.expm_frechet`).

    Parameters
    ----------
    fitted, refit : MultivariateNormal
        Loadings' posteriors of batch shape (D,) and dimension L + 1.

    Returns
    -------
    ndarray, shape (L, L)
        An orthogonal matrix (its determinant may be -1 when the Procrustes
        rotation is a reflection).
    """
    n_factors = fitted.mean.shape[-1] - 1
    procrustes, _ = linalg.orthogonal_procrustes(refit.mean[:, :n_factors], fitted.mean[:, :n_factors])
    # orthogonal_procrustes returns Omega with refit rows @ Omega close to fitted rows, so it
    # rotates column vectors by Omega^T.
    start = procrustes.T
    rows, cols = np.triu_indices(n_factors, 1)
    generators = np.zeros((rows.size, n_factors, n_factors))
    generators[np.arange(rows.size), rows, cols] = 1.0
    generators[np.arange(rows.size), cols, rows] = -1.0
    objective = _rotation_objective(fitted, refit)

    def value_and_gradient(params):
        skew = np.einsum("k,kab->ab", params, generators)
        value, gradient = objective(_embed(linalg.expm(skew) @ start))
        gradient = gradient[:n_factors, :n_factors]
        derivative = np.array([np.sum(gradient * (linalg.expm_frechet(skew, g, compute_expm=False) @ start))
                               for g in generators])
        return value, derivative

    # The objective is a smooth quadratic in R, with curvature of the order of the
    # loadings' posterior precision. So gtol 1e-10 leaves a KL error far below rounding.
    found = optimize.minimize(value_and_gradient, np.zeros(rows.size), jac=True, method="BFGS",
                              options={"gtol": 1e-10, "maxiter": 200})
    skew = np.einsum("k,kab->ab", found.x, generators)
    return linalg.expm(skew) @ start


def align_rotation(posterior: Posterior, refit: Posterior) -> Posterior:
    """Rotate a refit of a factor analysis posterior into the gauge closest to the fit.

    For factor analysis with two or more factors and a rotation-invariant
    prior (see :func:`has_rotation_symmetry`), returns ``refit`` rotated by
    :func:`closest_rotation`, which minimises KL(q || rotated refit). For
    any other posterior, returns ``refit`` itself, so one factor and the
    other models are unchanged.
    """
    if not has_rotation_symmetry(posterior):
        return refit
    _, loadings, _ = _factor_analysis_names(posterior)
    rotation = closest_rotation(posterior.globals[loadings], refit.globals[loadings])
    return rotate_factors(refit, rotation)
