"""Influence of a group of sites removed together: division, linear response or exact refits.

For a group M of sites, each method estimates the global posterior without
every site in M at once and returns KL(q || q without M) summed over the
global variables:

* ``"division"`` subtracts the group's summed site message,
  g - s_M with s_M = sum_{i in M} s_i, with every other site's local
  posterior held at its fit, and evaluates the KL of the divided families
  exactly.
* ``"linear-response"`` adds the first-order response of the CAVI fixed
  point, g - (I - J)^-1 s_M = g - s_M - M s_M with M = (I - J)^-1 J, one
  step from the fit without Newton iterations, and evaluates the KL exactly
  at those corrected coordinates. For models without local variables J = 0,
  so this is division, which is exact there.
* ``"exact"`` re-runs CAVI without the group to convergence, warm-started
  from the fit.

A group of one site gives the per-site estimate of the same method.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..exceptions import ImproperDivisionWarning, ImproperPosteriorError
from ..graph.blocks import block_names
from ..inference.posterior import Posterior
from .division import divide, posterior_kl
from .exact import check_progress, converged_fit, exact_kl, find_other_optima, warn_other_optima

__all__ = ["GROUP_METHODS", "leave_group_out_kl"]

#: Ways to estimate the posterior without a group of sites.
GROUP_METHODS = ("division", "linear-response", "exact")


def leave_group_out_kl(posterior: Posterior, groups, *, method: str = "division",
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray | float:
    """Estimate KL(q || q without the group) for each group of sites removed together.

    Parameters
    ----------
    posterior : Posterior
        A fitted posterior, such as ``model.posterior_``.
    groups : sequence of sequences of int, or sequence of int
        Either a list of groups, each a list (or 1-D array) of 0-based site
        positions, or a single group given as one flat list of positions. A
        2-D integer array is read as one group per row. Groups may overlap,
        but a group may not repeat a site. Unlike :func:`exact_kl`, a flat
        list is one group: to remove sites one at a time pass
        ``[[0], [5], [7]]``.
    method : {"division", "linear-response", "exact"}, default "division"
        "division" subtracts the group's site messages with every other
        site's local posterior held fixed. "linear-response" adds the
        first-order response of the other sites, g - s_M - (I - J)^-1 J s_M
        (see :mod:`fg_influence.influence.linear_response`). "exact" refits
        without the group, which costs one CAVI run per group.
    progress : callable or None, optional
        With ``method="exact"``, called as ``progress(done, total)`` after
        each refit. The other methods make no refits and never call it, so
        passing it with them raises a UserWarning.

    Returns
    -------
    float or ndarray, shape (n_groups,)
        A float for a single group, else one value per group. A group whose
        estimated posterior is improper gets +inf, with an
        ImproperDivisionWarning.

    Warns
    -----
    OtherOptimumWarning
        With ``method="exact"``, when a refit landed at a different local
        optimum than the fit (checked as in
        :meth:`InfluenceResult.compute_exact`); its value then measures
        the jump between optima.

    Raises
    ------
    TypeError
        If ``posterior`` is not a Posterior, ``method`` is not a string,
        ``progress`` is neither None nor callable, or a group contains
        non-integer positions.
    ValueError
        If ``method`` is unknown, ``groups`` or a group is empty, a position
        is out of range, or a group repeats a site.
    NotImplementedError
        With ``method="linear-response"``, for graphs whose all-site
        linear-response route raises it, and for groups of more than one
        site where that route offers per-site values only.
    SingularResponseError
        With ``method="linear-response"``, if I - J is singular.
    """
    if not isinstance(posterior, Posterior):
        hint = " (use model.posterior_)" if hasattr(posterior, "posterior_") else ""
        raise TypeError(
            f"posterior must be a fitted Posterior{hint}, got {type(posterior).__name__}"
        )
    method = check_method(method)
    check_progress(progress)
    if progress is not None and method != "exact":
        warnings.warn(
            f"progress is called only with method='exact', after each refit; method={method!r} "
            f"makes no refits, so progress is ignored. Drop progress or pass method='exact'",
            UserWarning,
            stacklevel=2,
        )
    checked, single = check_groups(groups, posterior.n_sites)

    if method == "exact":
        values, refits = exact_kl(posterior, checked, progress=progress)
        improper = ~np.isfinite(values)
        other, _ = find_other_optima(posterior, converged_fit(posterior), checked, values, refits)
        if other.any():
            warn_other_optima(other, values, f"first positions in groups: "
                              f"{np.flatnonzero(other)[:10].tolist()}", "groups")
    elif method == "division":
        values, improper = _division_kl(posterior, checked)
    else:
        values, improper = _linear_response_kl(posterior, checked)

    values[improper] = np.inf
    if improper.any():
        estimate = {"division": "when divided out", "linear-response": "under the linear-response correction",
                    "exact": "after an exact refit"}[method]
        warnings.warn(
            f"{int(improper.sum())} of {len(checked)} groups leave an improper posterior {estimate} "
            f"(first positions in groups: {np.flatnonzero(improper)[:10].tolist()}); their KL "
            f"is +inf. Check them with method='exact', or remove fewer sites",
            ImproperDivisionWarning,
            stacklevel=2,
        )
    return float(values[0]) if single else values


# Input checks.


def check_method(method) -> str:
    """Return ``method`` if it names a group method; raise TypeError or ValueError otherwise."""
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a string, one of {GROUP_METHODS}, got {method!r} of type {type(method).__name__}"
        )
    if method not in GROUP_METHODS:
        raise ValueError(f"method must be one of {GROUP_METHODS}, got {method!r}; pass one of those names")
    return method


def _is_index_scalar(value) -> bool:
    return isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, (str, bytes))


def check_groups(groups, n_sites: int) -> tuple[list[np.ndarray], bool]:
    """Check site groups and return them as int64 arrays, with a flag for a single group.

    A flat sequence of numbers (or a 1-D array) is one group; a sequence of
    sequences (or a 2-D array) is one group per entry. Each returned array
    is a new array, so the caller's are never modified.
    """
    if isinstance(groups, (str, bytes)) or _is_index_scalar(groups) or not isinstance(groups, (Sequence, np.ndarray)):
        raise TypeError(
            f"groups must be a list of groups of site positions, such as [[0, 5], [7]], or one group "
            f"such as [0, 5]; got {groups!r} of type {type(groups).__name__}. Wrap a single site as [i]"
        )
    if isinstance(groups, np.ndarray):
        if groups.ndim == 1:
            return [_check_group(groups, n_sites, "groups")], True
        if groups.ndim == 2:
            if groups.shape[0] == 0:
                raise ValueError("groups must contain at least one group, got an array of shape "
                                 f"{groups.shape}; pass at least one group of site positions")
            return [_check_group(row, n_sites, f"groups[{i}]") for i, row in enumerate(groups)], False
        raise ValueError(
            f"groups must be a 1-D array (one group) or a 2-D array (one group per row), got shape "
            f"{groups.shape}; pass a list of 1-D groups instead"
        )
    if len(groups) == 0:
        raise ValueError(
            "groups must contain at least one group, got an empty list; pass groups such as [[0, 5], [7]]"
        )
    scalars = [_is_index_scalar(entry) for entry in groups]
    if all(scalars):
        return [_check_group(groups, n_sites, "groups")], True
    if any(scalars):
        mixed = [i for i, flag in enumerate(scalars) if flag][:5]
        raise TypeError(
            f"groups must be either one group (a flat list of site positions) or a list of groups "
            f"(each a list of site positions), not a mix; entries {mixed} are single numbers while "
            f"others are lists. Wrap each single site as [i]"
        )
    return [_check_group(group, n_sites, f"groups[{i}]") for i, group in enumerate(groups)], False


def _check_group(group, n_sites: int, name: str) -> np.ndarray:
    """Check one group: a non-empty 1-D list of distinct integer positions in [0, n_sites)."""
    if isinstance(group, (str, bytes)) or not isinstance(group, (Sequence, np.ndarray)):
        raise TypeError(
            f"{name} must be a list or 1-D array of site positions, got {group!r} of type "
            f"{type(group).__name__}; pass positions such as [0, 5, 7]"
        )

    try:
        array = np.array(group)
    except ValueError as error:
        raise ValueError(f"{name} must be a flat list of site positions; could not read it ({error})") from None

    if array.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D list of site positions, got shape {array.shape}; flatten it or split "
            f"it into separate groups"
        )

    if array.size == 0:
        raise ValueError(
            f"{name} is empty, but every group must contain at least one site position; remove the "
            f"empty group or add sites to it"
        )

    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        shown = array[:5].tolist()
        raise TypeError(
            f"{name} must contain integer site positions, got dtype {array.dtype} (first values "
            f"{shown}); pass 0-based integer positions such as [0, 5, 7] (for whole-number floats, "
            f"numpy.asarray(group, dtype=int))"
        )

    array = array.astype(np.int64)
    outside = (array < 0) | (array >= n_sites)
    if outside.any():
        raise ValueError(
            f"{name} must contain site positions in [0, {n_sites - 1}] (0-based; the posterior has "
            f"{n_sites} sites and negative positions are not wrapped around); got "
            f"{array[outside][:5].tolist()}. Drop or correct those positions"
        )

    unique, counts = np.unique(array, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"{name} must not repeat a site, because each site's message is removed once; repeated "
            f"{unique[counts > 1][:5].tolist()}. Pass each site once, for example numpy.unique(group)"
        )
    return array


# Division.


def _division_kl(posterior: Posterior, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros(len(groups))
    improper = np.zeros(len(groups), dtype=bool)
    for index, group in enumerate(groups):
        try:
            values[index] = posterior_kl(posterior.globals, divide(posterior, group))
        except ImproperPosteriorError:
            improper[index] = True
    improper |= ~np.isfinite(values)
    return values, improper


# Linear response.


def _linear_response_kl(posterior: Posterior, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Route the graph as ``linear_response.all_site_summaries`` does, then correct each group."""
    from . import linear_response as lr

    _warn_if_not_converged(posterior)
    blocks = block_names(posterior.graph)
    if not blocks and not list(posterior.graph.variables_of_role("local")):
        # J = 0 without local variables, so division is already exact.
        return _division_kl(posterior, groups)
    if blocks:
        from .linear_response_factor_analysis import build_factor_analysis_response_system, is_factor_analysis
        from .linear_response_hmm import all_sequence_summaries, is_hidden_markov
        from .linear_response_lda import all_document_summaries, is_lda

        if is_factor_analysis(posterior):
            return _dense_group_kl(posterior, build_factor_analysis_response_system(posterior), groups)
        if is_hidden_markov(posterior):
            return _from_all_site_route(posterior, all_sequence_summaries(posterior), groups,
                                        "the hidden Markov model")
        if is_lda(posterior):
            return _from_all_site_route(posterior, all_document_summaries(posterior), groups,
                                        "latent Dirichlet allocation")
        from .linear_response_blocks import build_hierarchical_response_system

        return _dense_group_kl(posterior, build_hierarchical_response_system(posterior), groups)
    return _mixture_group_kl(posterior, lr.build_response_system(posterior), groups)


def _warn_if_not_converged(posterior: Posterior) -> None:
    from .linear_response import IllConditionedResponseWarning

    if posterior.n_iter > 0 and not posterior.converged:
        warnings.warn(
            f"the fit stopped after {posterior.n_iter} CAVI iterations without converging, so it is "
            f"not a fixed point of CAVI, and the linear-response correction, which linearises around "
            f"one, can be far off. Refit with a larger max_iter (and check the fit) before using it",
            IllConditionedResponseWarning,
            stacklevel=4,
        )


def _mixture_group_kl(posterior: Posterior, system, groups) -> tuple[np.ndarray, np.ndarray]:
    """KL at g - s_M - M s_M for mixtures, through each block's family object."""
    values = np.zeros(len(groups))
    improper = np.zeros(len(groups), dtype=bool)
    for index, group in enumerate(groups):
        corrected = system.group_corrected_coordinates(group)
        if not np.all(np.isfinite(corrected)):
            improper[index] = True
            continue
        parts = system.split(corrected)
        try:
            families = {block.variable: block.to_posterior(parts[block.variable]) for block in system.blocks}
        except ValueError:
            # The families' constructors reject coordinates outside their domain.
            improper[index] = True
            continue
        values[index] = posterior_kl(posterior.globals, families)
    improper |= ~np.isfinite(values)
    return values, improper


def _dense_group_kl(posterior: Posterior, system, groups) -> tuple[np.ndarray, np.ndarray]:
    """KL at g - (I - J)^-1 s_M for the hierarchical and factor-analysis systems (J dense, G x G)."""
    values = np.zeros(len(groups))
    improper = np.zeros(len(groups), dtype=bool)
    for index, group in enumerate(groups):
        message = system.site_messages[group].sum(axis=0)
        corrected = system.coordinates - system.solve(message[None])[0]
        if not np.all(np.isfinite(corrected)):
            improper[index] = True
            continue
        try:
            families = system.to_globals(corrected)
        except ValueError:
            improper[index] = True
            continue
        values[index] = posterior_kl(posterior.globals, families)
    improper |= ~np.isfinite(values)
    return values, improper


def _from_all_site_route(posterior: Posterior, summaries, groups, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Correct groups through the response system behind a model's all-site summaries.

    A system with J held as a dense matrix (a ``DenseResponseSystem`` with
    ``to_globals``) takes the group step directly. Otherwise groups of one
    site take the summaries' per-site KL, and larger groups are rejected.
    """
    from .linear_response_blocks import DenseResponseSystem

    system = getattr(summaries, "system", None)
    if isinstance(system, DenseResponseSystem) and hasattr(system, "to_globals"):
        return _dense_group_kl(posterior, system, groups)
    if any(group.size > 1 for group in groups):
        raise NotImplementedError(
            f"the linear-response correction for groups of more than one site is not available for "
            f"{model}; use method='division' or method='exact'"
        )
    sites = np.array([group[0] for group in groups])
    total = sum(np.asarray(values, dtype=float) for values in summaries.kl_by_variable.values())
    return total[sites].copy(), np.asarray(summaries.improper, dtype=bool)[sites].copy()
