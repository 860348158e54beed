"""Exact leave-one-out and leave-group-out by warm-started CAVI refits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._validation import check_site_indices
from ..inference.cavi import fit_cavi
from ..inference.posterior import Posterior
from .division import posterior_kl
from .factor_rotation import align_rotation

#: Relative ELBO tolerance of exact refits; tight because the KL values
#: being checked are often below 1e-3.
REFIT_TOL = 1e-12
REFIT_MAX_ITER = 5000


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


def check_progress(progress) -> None:
    """Raise TypeError unless ``progress`` is None or a callable taking (done, total)."""
    if progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be None or a callable called as progress(done, total) after each "
            f"refit, got {progress!r} of type {type(progress).__name__}; pass a function such as "
            f"lambda done, total: print(done, total), or None"
        )
