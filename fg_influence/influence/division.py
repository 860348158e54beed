"""Site messages and their division out of the global posterior factors.

For a global variable theta, the fitted natural parameters are the prior's
plus the sum of every site's message. Removing the sites in M, with every
other site's local posterior held at its fitted value, gives

    lambda_theta without M = lambda_theta - sum_{i in M} site_message_i(theta).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_site_indices
from ..exceptions import ImproperPosteriorError
from ..families import ExponentialFamily
from ..inference.posterior import Posterior


def site_messages(posterior: Posterior, variable: str, sites) -> tuple[np.ndarray, ...]:
    """Natural-parameter messages of the given sites to a global variable.

    Parameters
    ----------
    posterior : Posterior
    variable : str
        Name of a global variable.
    sites : sequence of int
        0-based site positions, without repeats.

    Returns
    -------
    tuple of ndarray
        One array per natural-parameter component, each with the site axis first.
    """
    graph = posterior.graph
    if variable not in graph.variables or graph.variables[variable].role != "global":
        known = [v.name for v in graph.variables_of_role("global")]
        raise ValueError(f"variable must name a global variable, got {variable!r}; known: {known}")
    sites = check_site_indices(sites, posterior.n_sites)
    total = None
    for factor in graph.factors_of(variable):
        messages = factor.site_messages(variable, posterior, sites)
        total = messages if total is None else tuple(a + b for a, b in zip(total, messages))
    return total


def divided_natural_params(posterior: Posterior, sites) -> dict[str, tuple[np.ndarray, ...]]:
    """Natural parameters of every global factor with the sites' messages subtracted."""
    sites = check_site_indices(sites, posterior.n_sites)
    divided = {}
    for variable in posterior.graph.variables_of_role("global"):
        natural = posterior.globals[variable.name].natural_params()
        messages = site_messages(posterior, variable.name, sites)
        divided[variable.name] = tuple(p - m.sum(axis=0) for p, m in zip(natural, messages))
    return divided


def divide(posterior: Posterior, sites) -> dict[str, ExponentialFamily]:
    """Global posterior factors with the given sites divided out.

    Raises
    ------
    ImproperPosteriorError
        If a divided factor is not a proper distribution.
    """
    sites = check_site_indices(sites, posterior.n_sites)
    result = {}
    for name, natural in divided_natural_params(posterior, sites).items():
        family = type(posterior.globals[name])
        try:
            result[name] = family.from_natural(*natural)
        except ValueError as error:
            shown = sites[:10].tolist()
            raise ImproperPosteriorError(
                f"dividing sites {shown}{' ...' if sites.size > 10 else ''} out of {name!r} leaves "
                f"an improper {family.__name__} ({error}); these sites carry (nearly) all of "
                f"the evidence for {name!r}, so the estimate is undefined. Use exact refits, "
                f"a stronger prior, or remove fewer sites"
            ) from None
    return result


def posterior_kl(left: dict[str, ExponentialFamily], right: dict[str, ExponentialFamily]) -> float:
    """Sum over global variables of KL(left || right)."""
    return float(sum(np.sum(left[name].kl(right[name])) for name in left))
