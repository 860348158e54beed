"""Compare variational division, EM-influence and the influence function with exact refits.

Each method is ranked by one scalar per site, compared with the same scalar
computed from exact refits:

* variational division: KL(q || q without i), against the KL to the CAVI
  refit without the site;
* EM-influence and the influence function: d^T H d, the squared length of
  the estimated parameter change d in the metric of the exact Hessian H at
  the MAP. It is compared with the same quantity for the change of the
  exact EM refit.
  For the influence function d^T H d equals the Cook's-distance-style
  scalar grad l_i^T H^-1 grad l_i.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from .._validation import as_float_array, check_int, check_random_state
from ..models import GaussianMixture
from .influence import em_influence, influence_function
from .map_em import exact_shifts, fit_map_em
from .mixture_loss import hessian
from .parameters import MixturePrior

#: Method name, the estimate's scalar and the exact refit it is compared with.
METHODS = (
    ("vb_division", "KL(q || q without i)", "vb"),
    ("em_influence", "d^T H d, d = H_complete^-1 grad l_i", "em"),
    ("em_influence_divided", "d^T H d, d from the divided complete-data Hessian", "em"),
    ("influence_function", "grad l_i^T H^-1 grad l_i", "em"),
)


@dataclass
class MethodComparison:
    """Estimates of every method for every site and their agreement with exact refits.

    Attributes
    ----------
    estimates : dict of str to ndarray, shape (N,)
        The ranking scalar of each method (see ``METHODS``).
    sites : ndarray of int, shape (M,)
        Sites refitted exactly.
    exact : dict of str to ndarray, shape (M,)
        ``"vb"``: KL to the CAVI refit; ``"em"``: d^T H d of the EM refit.
    spearman, top_overlap : dict of str to float
        Spearman correlation with the matching exact values over ``sites``,
        and the number of shared sites among the ``top`` largest of each.
    timings : dict of str to float
        Seconds for each step.
    """

    estimates: dict
    sites: np.ndarray
    exact: dict
    timings: dict
    top: int
    spearman: dict = field(default_factory=dict)
    top_overlap: dict = field(default_factory=dict)

    def __post_init__(self):
        count = min(self.top, self.sites.size)
        for name, _, reference in METHODS:
            estimate = self.estimates[name][self.sites]
            truth = self.exact[reference]
            self.spearman[name] = float(spearmanr(estimate, truth).statistic) if self.sites.size > 2 else float("nan")
            top_estimate = set(self.sites[np.argsort(-estimate, kind="stable")[:count]].tolist())
            top_truth = set(self.sites[np.argsort(-truth, kind="stable")[:count]].tolist())
            self.top_overlap[name] = len(top_estimate & top_truth)

    def format_table(self) -> str:
        """A plain-text table with one row per method."""
        count = min(self.top, self.sites.size)
        lines = [f"{'method':<22} {'Spearman':>9} {f'top-{count}':>7} {'time (s)':>9}  ranked by"]
        for name, scalar, _ in METHODS:
            lines.append(f"{name:<22} {self.spearman[name]:>9.4f} {self.top_overlap[name]:>7d} "
                         f"{self.timings[name]:>9.4f}  {scalar}")
        lines.append(f"fits: CAVI {self.timings['vb_fit']:.2f} s, MAP-EM {self.timings['map_fit']:.2f} s, "
                     f"exact Hessian {self.timings['hessian']:.4f} s (included in influence_function)")
        lines.append(f"exact refits of {self.sites.size} sites: CAVI {self.timings['exact_vb']:.2f} s, "
                     f"EM {self.timings['exact_em']:.2f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain Python values for JSON output."""
        return {
            "methods": {name: {"ranked_by": scalar, "compared_with": reference,
                               "spearman": self.spearman[name], "top_overlap": self.top_overlap[name],
                               "seconds": self.timings[name], "estimates": self.estimates[name].tolist()}
                        for name, scalar, reference in METHODS},
            "top": self.top,
            "exact_sites": self.sites.tolist(),
            "exact": {name: values.tolist() for name, values in self.exact.items()},
            "timings": dict(self.timings),
        }


def _choose_sites(exact, n_sites, rng):
    if isinstance(exact, str):
        if exact != "all":
            raise ValueError(f'exact must be "all" or a number of sites, got {exact!r}')
        return np.arange(n_sites)
    count = check_int(exact, "exact", minimum=3, maximum=n_sites)
    return np.sort(rng.choice(n_sites, size=count, replace=False))


def compare_methods(X, n_components: int, *, exact="all", top: int = 10, random_state=0, n_init: int = 3,
                    progress=None, **model_options) -> MethodComparison:
    """Run every method on X and compare each with exact refits.

    Parameters
    ----------
    X : array_like, shape (N, D)
    n_components : int
    exact : "all" or int
        Refit without every site, or without this many sites drawn at random
        with ``random_state`` (a random draw, so no method chooses the sites
        it is judged on).
    top : int
        Size of the top sets whose overlap is reported.
    random_state : None, int or numpy.random.Generator
        Seed of the CAVI starts and of the refitted sites.
    n_init : int
        CAVI starting points.
    progress : callable, optional
        ``progress(stage, done, total)`` during exact refits.
    **model_options
        Prior options of :class:`fg_influence.models.GaussianMixture`; the
        MAP fit uses the same prior.

    Returns
    -------
    MethodComparison
    """
    X = as_float_array(X, "X", ndim=2)
    top = check_int(top, "top", minimum=1)
    rng = check_random_state(random_state)
    sites = _choose_sites(exact, X.shape[0], rng)
    timings = {}

    # Variational Bayes: fit, then divide every site out.
    start = time.perf_counter()
    model = GaussianMixture(n_components, n_init=n_init, random_state=rng, **model_options).fit(X)
    timings["vb_fit"] = time.perf_counter() - start
    start = time.perf_counter()
    result = model.influence()
    kl = result.kl.copy()
    timings["vb_division"] = time.perf_counter() - start

    # MAP by EM, started from the variational responsibilities so components match.
    prior = MixturePrior.from_dict(model.priors(X), X.shape[1])
    start = time.perf_counter()
    fit = fit_map_em(X, n_components, prior, init=model.posterior_.locals["assignment"])
    timings["map_fit"] = time.perf_counter() - start

    start = time.perf_counter()
    exact_hessian = hessian(X, fit.parameters, prior)
    timings["hessian"] = time.perf_counter() - start

    estimates = {"vb_division": kl}
    for name, method in (("em_influence", "complete"), ("em_influence_divided", "divided")):
        start = time.perf_counter()
        shifts = em_influence(X, fit.parameters, prior, hessian=method)
        estimates[name] = np.einsum("np,pq,nq->n", shifts, exact_hessian, shifts)
        timings[name] = time.perf_counter() - start
    start = time.perf_counter()
    shifts = influence_function(X, fit.parameters, prior, hessian_matrix=exact_hessian)
    estimates["influence_function"] = np.einsum("np,pq,nq->n", shifts, exact_hessian, shifts)
    timings["influence_function"] = time.perf_counter() - start + timings["hessian"]

    # Exact refits of the chosen sites.
    start = time.perf_counter()
    result.compute_exact([int(i) for i in sites],
                         progress=None if progress is None else lambda done, total: progress("CAVI", done, total))
    timings["exact_vb"] = time.perf_counter() - start
    start = time.perf_counter()
    refit_shifts = exact_shifts(X, fit, prior, [[int(i)] for i in sites],
                                progress=None if progress is None else lambda done, total: progress("EM", done, total))
    timings["exact_em"] = time.perf_counter() - start
    exact_values = {"vb": result.exact_kl.copy(),
                    "em": np.einsum("np,pq,nq->n", refit_shifts, exact_hessian, refit_shifts)}
    return MethodComparison(estimates, sites, exact_values, timings, top)
