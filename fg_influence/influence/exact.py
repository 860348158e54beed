"""Exact leave-one-out and leave-group-out by warm-started CAVI refits."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .._validation import check_site_indices
from ..exceptions import OtherOptimumWarning
from ..graph.blocks import BlockState
from ..inference.cavi import fit_cavi
from ..inference.posterior import Posterior
from .division import posterior_kl
from .factor_rotation import align_rotation

#: Relative ELBO tolerance of exact refits; tight because the KL values
#: being checked are often below 1e-3.
REFIT_TOL = 1e-12
REFIT_MAX_ITER = 5000

#: A refit is checked for a different optimum when its exact KL is at least
#: this many times the median exact KL of the refitted groups. Among refits of
#: every row of faithful, iris, galaxies and penguins (2 to 4 components), at
#: most 3 per data set passed this screen, and all came back to the fit. The
#: largest was 192 times the median (penguins, 3 components). The jumps measured
#: in overlapping mixtures were 55 to 3500 times the median.
OPTIMUM_SCREEN_FACTOR = 20.0
#: A checked refit is at a different optimum when the full data, refitted from
#: it, end farther than this fraction of its exact KL from the fit. A refit at
#: the fit's own optimum comes back to within rounding (KL below 1e-8 in the
#: same runs), while one that jumped stays about its exact KL away.
OPTIMUM_RETURN_FRACTION = 0.1


def refit_without(posterior: Posterior, sites, *, tol: float = REFIT_TOL,
                  max_iter: int = REFIT_MAX_ITER) -> Posterior:
    """Re-run CAVI to convergence without the given sites, warm-started from the fit.

    The refit starts from the fitted responsibilities of the remaining
    sites, so its first global update is exactly the divided posterior.

    For factor analysis with two or more factors the refit is returned as
    CAVI left it, which can be any rotation of the factors. Pass it to
    :func:`fg_influence.influence.factor_rotation.align_rotation` before
    comparing loadings or factors with the fit (``exact_kl`` does so).
    """
    sites = check_site_indices(sites, posterior.n_sites)
    keep = np.ones(posterior.n_sites, dtype=bool)
    keep[sites] = False
    reduced = posterior.graph.without_sites(sites)
    init_locals = {name: resp[keep] for name, resp in posterior.locals.items()}
    return fit_cavi(reduced, tol=tol, max_iter=max_iter, init_locals=init_locals, warn=False)


def exact_kl(posterior: Posterior, groups: Sequence, *, tol: float = REFIT_TOL,
             max_iter: int = REFIT_MAX_ITER,
             progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, list[Posterior]]:
    """KL(q || q refitted without each group) for a list of site groups.

    For factor analysis with two or more factors, a refit can end anywhere
    on an orbit of rotations of the factors. Each refit is therefore first
    rotated to the rotation closest to the fit
    (:func:`fg_influence.influence.factor_rotation.align_rotation`), and the
    returned refits are the rotated ones.

    Parameters
    ----------
    groups : sequence of int or of sequences of int
        One entry per refit: a single site or a group of sites.
    progress : callable or None, optional
        Called as ``progress(done, total)`` after each refit; None reports
        nothing.

    Returns
    -------
    kl : ndarray, shape (len(groups),)
    refits : list of Posterior
    """
    check_progress(progress)
    groups = [check_site_indices(group, posterior.n_sites) for group in groups]
    values = np.empty(len(groups))
    refits = []
    for index, group in enumerate(groups):
        refit = align_rotation(posterior, refit_without(posterior, group, tol=tol, max_iter=max_iter))
        values[index] = posterior_kl(posterior.globals, refit.globals)
        refits.append(refit)
        if progress is not None:
            progress(index + 1, len(groups))
    return values, refits


def converged_fit(posterior: Posterior) -> Posterior:
    """Run the fit on to the refits' tolerance REFIT_TOL, or return it if it stopped there already."""
    history = posterior.elbo_history
    if len(history) >= 2 and abs(history[-1] - history[-2]) <= REFIT_TOL * abs(history[-1]):
        return posterior
    refit = fit_cavi(posterior.graph, tol=REFIT_TOL, max_iter=REFIT_MAX_ITER,
                     init_locals=dict(posterior.locals), warn=False)
    return align_rotation(posterior, refit)


def refit_with_sites_restored(posterior: Posterior, refit: Posterior, sites) -> Posterior:
    """Refit all the data, warm-started from a refit without ``sites``.

    The removed sites start from their fitted local state and every other
    site from the refit's. If the refit stayed at the fit's optimum, this
    returns to the fit. If it jumped to another optimum, it stays there.
    """
    sites = check_site_indices(sites, posterior.n_sites)
    keep = np.ones(posterior.n_sites, dtype=bool)
    keep[sites] = False
    init_locals = {name: _restore_sites(value, refit.locals[name], keep)
                   for name, value in posterior.locals.items()}
    restored = fit_cavi(posterior.graph, tol=REFIT_TOL, max_iter=REFIT_MAX_ITER, init_locals=init_locals,
                        warn=False)
    return align_rotation(posterior, restored)


def _restore_sites(fitted, reduced, keep: np.ndarray):
    """Return the fitted local state with the kept sites' rows replaced by those of ``reduced``."""
    if not isinstance(fitted, BlockState):
        merged = np.array(fitted, dtype=float)
        merged[keep] = reduced
        return merged
    arrays = {}
    for key, value in fitted.arrays.items():
        arrays[key] = np.array(value)
        arrays[key][keep] = reduced.arrays[key]
    if not fitted.ragged:
        return BlockState(arrays)
    kept_rows = np.repeat(keep, np.diff(fitted.offsets))
    ragged = {}
    for key, value in fitted.ragged.items():
        ragged[key] = np.array(value)
        ragged[key][kept_rows] = reduced.ragged[key]
    return BlockState(arrays, ragged, fitted.offsets)


def find_other_optima(posterior: Posterior, converged: Posterior, groups: Sequence, values: np.ndarray,
                      refits: Sequence[Posterior]) -> tuple[np.ndarray, np.ndarray]:
    """Find the refits that landed at a different local optimum than the fit.

    A warm-started refit can leave the fit's optimum, for example when two
    components swap rows or a small component is emptied. Its exact KL then
    measures the distance between two optima, not the influence of the
    removed sites. Each refit whose exact KL is at least
    OPTIMUM_SCREEN_FACTOR times the median is checked by refitting all the
    data from it (:func:`refit_with_sites_restored`). The refit is at a
    different optimum if that ends more than OPTIMUM_RETURN_FRACTION of its
    exact KL away from ``converged``. With fewer than 3 finite values, or a
    median of 0, the median is no yardstick and no refit is checked.

    Parameters
    ----------
    posterior : Posterior
        The fit the refits started from.
    converged : Posterior
        The fit run on to REFIT_TOL (see :func:`converged_fit`).
    groups : sequence of sequences of int
        The sites removed by each refit.
    values, refits
        The exact KL values and refits returned by :func:`exact_kl`.

    Returns
    -------
    other : ndarray of bool, shape (len(groups),)
        True for the refits at a different optimum.
    return_kl : ndarray, shape (len(groups),)
        KL(converged || full data refitted from the refit) for the checked
        refits, NaN for the others.
    """
    values = np.asarray(values, dtype=float)
    other = np.zeros(values.size, dtype=bool)
    return_kl = np.full(values.size, np.nan)
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return other, return_kl
    median = float(np.median(values[finite]))
    if median <= 0.0:
        return other, return_kl
    for index in np.flatnonzero(finite & (values >= OPTIMUM_SCREEN_FACTOR * median)):
        restored = refit_with_sites_restored(posterior, refits[index], groups[index])
        return_kl[index] = posterior_kl(converged.globals, restored.globals)
        other[index] = return_kl[index] > OPTIMUM_RETURN_FRACTION * values[index]
    return other, return_kl


def check_progress(progress) -> None:
    """Raise TypeError unless ``progress`` is None or a callable taking (done, total)."""
    if progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be None or a callable called as progress(done, total) after each "
            f"refit, got {progress!r} of type {type(progress).__name__}; pass a function such as "
            f"lambda done, total: print(done, total), or None"
        )


def warn_other_optima(other: np.ndarray, values: np.ndarray, located: str, removed: str, marked: str = "",
                      stacklevel: int = 2) -> None:
    """Warn that the refits at ``other`` (from find_other_optima) left the fit's optimum.

    ``located`` names them in the parentheses after the count, ``removed``
    is what the refits left out ("sites" or "groups"), and ``marked`` is
    added after the sentence on what their KL measures.
    """
    same = values[~other & np.isfinite(values)]
    median = f"{np.median(same):.3g}" if same.size else "undefined"
    warnings.warn(
        f"{int(other.sum())} of {other.size} exact refits landed at a different local optimum than the "
        f"fit ({located}); refitting all the data from them does not return to the fit. Their exact KL "
        f"(up to {values[other].max():.3g}, against a median of {median} over the other refitted {removed}) "
        f"measures the jump between optima, not the {removed}' influence{marked}. The fit is probably one "
        f"of several local optima: refit the model from other starting points (more n_init where the "
        f"model has it) or with fewer components, factors or states",
        OtherOptimumWarning,
        stacklevel=stacklevel + 1,
    )
