"""All-site leave-one-out summaries, from the factors' closed forms where they exist.

A global variable's KL term comes from the single factor that sends it
messages, through ``Factor.loo_kl``; a variable fed by several factors, or
by a factor without a closed form, falls back to explicit division site by
site. Predictive densities come from the factor that generates each
observed variable.
"""

from __future__ import annotations

import numpy as np

from ..inference.posterior import Posterior
from .division import divide, posterior_kl


def message_factors(posterior: Posterior, name: str) -> list:
    """Factors that send messages to global variable ``name`` (those with it as a parent)."""
    return [f for f in posterior.graph.factors_of(name) if name in f.parents()]


def all_site_kl(posterior: Posterior) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """KL(q || q without site i) for each global variable and site.

    Returns
    -------
    kl_by_variable : dict of str to ndarray, shape (N,)
    improper : ndarray of bool, shape (N,)
        True where some divided factor is improper; those sites' KL values are 0.
    """
    improper = np.zeros(posterior.n_sites, dtype=bool)
    kl_by_variable = {}
    for variable in posterior.graph.variables_of_role("global"):
        factors = message_factors(posterior, variable.name)
        values = factors[0].loo_kl(variable.name, posterior, improper) if len(factors) == 1 else None
        if values is None:
            values = _kl_by_explicit_division(posterior, variable.name, improper)
        kl_by_variable[variable.name] = values
    return kl_by_variable, improper


def _kl_by_explicit_division(posterior: Posterior, name: str, improper: np.ndarray) -> np.ndarray:
    values = np.zeros(posterior.n_sites)
    fitted = {name: posterior.globals[name]}
    for site in range(posterior.n_sites):
        try:
            divided = divide(posterior, [site])
        except ValueError:
            improper[site] = True
            continue
        values[site] = posterior_kl(fitted, {name: divided[name]})
    return values


def all_site_log_predictive(posterior: Posterior, improper: np.ndarray) -> np.ndarray:
    """log p(observed_i | data without i), summed over observed variables, shape (N,)."""
    graph = posterior.graph
    total = np.zeros(posterior.n_sites)
    for variable in graph.variables_of_role("observed"):
        generating = [f for f in graph.factors_of(variable.name) if variable.name in f.children()]
        values = None if len(generating) != 1 else generating[0].loo_log_predictive(posterior, improper)
        if values is None:
            raise ValueError(
                f"the LOO log predictive density is not available for observed variable "
                f"{variable.name!r}: its factor has no closed form for it"
            )
        total += values
    return total


def all_site_shifts(posterior: Posterior) -> dict:
    """Named parameter shifts offered by the graph's factors, as zero-argument callables."""
    shifts = {}
    for factor in posterior.graph.factors.values():
        shifts.update(factor.loo_shifts(posterior))
    return shifts
