"""Leave-one-out summaries of every row from exact refits, for ``--method exact``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..graph.factors import GaussianMixtureFactor
from ..inference.posterior import Posterior
from ..influence import exact_kl
from ..influence.exact import converged_fit, find_other_optima, warn_other_optima


class ExactInfluence:
    """KL, mean shift and LOO log predictive density of every row, from warm-started refits.

    Row i's values come from CAVI refitted without row i (see
    :func:`fg_influence.influence.refit_without`), so the cost is one refit
    per row. The KL equals the value :meth:`InfluenceResult.compute_exact`
    stores, because both call :func:`fg_influence.influence.exact_kl`.
    The object offers what the mixture report and
    :func:`fg_influence.plotting.save_report` read from an
    ``InfluenceResult``, with the exact values in place of the estimates.

    Parameters
    ----------
    posterior : Posterior
        A fitted Gaussian mixture posterior with one GaussianMixtureFactor.
    progress : callable, optional
        Called as ``progress(done, total)`` after each refit.

    Attributes
    ----------
    kl : ndarray, shape (N,)
        KL(q || q refitted without row i) over the global factors.
    mean_shift_norm : ndarray, shape (N,)
        Largest over components of the refitted mean's move, as a Mahalanobis
        length under the fitted E[Lambda_k].
    loo_log_predictive : ndarray, shape (N,)
        log p(x_i | data without i) under the refitted posterior.
    improper : ndarray of bool, shape (N,)
        All False, because a refit always gives a proper posterior.
    other_optimum : ndarray of bool, shape (N,)
        True where the refit landed at a different local optimum than the
        fit, checked as :meth:`InfluenceResult.compute_exact` checks its
        refits (with an OtherOptimumWarning). Such a row's values measure
        the jump between optima.
    exact_sites, exact_kl : ndarray, shape (0,)
        Empty, because no estimate is compared with the refits.
    """

    method = "exact"
    row_labels = None
    shift_names = ["components.mean_norm"]

    def __init__(self, posterior: Posterior, progress: Callable[[int, int], None] | None = None):
        factor = _gaussian_mixture_factor(posterior)
        X = posterior.data[factor.observed]
        fitted = posterior.globals[factor.components]
        self.posterior = posterior
        self.kl = np.empty(posterior.n_sites)
        self.mean_shift_norm = np.empty(posterior.n_sites)
        self.loo_log_predictive = np.empty(posterior.n_sites)
        self.improper = np.zeros(posterior.n_sites, dtype=bool)
        self.exact_sites = np.zeros(0, dtype=np.int64)
        self.exact_kl = np.zeros(0)

        for site in range(posterior.n_sites):
            values, (refit,) = exact_kl(posterior, [[site]])
            self.kl[site] = values[0]

            # The squared length of m'_k - m_k under E[Lambda_k] = nu_k W_k is
            # nu_k times the fitted quadratic form of m'_k against component k.
            refitted_mean = refit.globals[factor.components].mean
            squared = np.diag(factor.quadratic_forms(posterior, refitted_mean)) * fitted.dof
            self.mean_shift_norm[site] = np.sqrt(squared.max())

            # With all-zero responsibilities, log_predictive is the posterior
            # predictive density of the refit at the left-out row.
            q = factor.quadratic_forms(refit, X[site:site + 1])
            flags = np.zeros(1, dtype=bool)
            self.loo_log_predictive[site] = factor.log_predictive(refit, q, np.zeros_like(q), flags)[0]
            if progress is not None:
                progress(site + 1, posterior.n_sites)

        # Only the refits of rows with a large KL are checked, so those are
        # made again on access instead of keeping all N refits in memory.
        refits = _RefitOnRequest(posterior)
        groups = [[site] for site in range(posterior.n_sites)]
        self.other_optimum, _ = find_other_optima(posterior, converged_fit(posterior), groups, self.kl, refits)
        if self.other_optimum.any():
            positions = np.flatnonzero(self.other_optimum)[:10].tolist()
            warn_other_optima(self.other_optimum, self.kl, f"first positions: {positions}", "sites",
                              ", so treat those rows' values with care", stacklevel=2)

    @property
    def n_sites(self) -> int:
        return self.posterior.n_sites

    @property
    def labels(self) -> list:
        """Label of each row: ``row_labels`` when set, else the positions 0 .. N-1."""
        if self.row_labels is None:
            return list(range(self.n_sites))
        return list(self.row_labels)

    def measure(self, name: str) -> np.ndarray:
        if name not in ("kl", "loo_log_predictive"):
            raise ValueError(f"measure must be 'kl' or 'loo_log_predictive', got {name!r}")
        return getattr(self, name)

    def shift(self, name: str) -> np.ndarray:
        if name not in self.shift_names:
            raise ValueError(f"unknown shift {name!r}; exact refits offer {self.shift_names}")
        return self.mean_shift_norm

    def top(self, k: int = 10, by: str = "kl") -> np.ndarray:
        """Positions of the ``k`` most influential rows, ranked as ``InfluenceResult.top`` ranks them."""
        values = self.measure(by)
        order = np.argsort(-values if by == "kl" else values, kind="stable")
        return order[: min(k, self.n_sites)]


class _RefitOnRequest:
    """The refit without row ``index`` as ``self[index]``, made by exact_kl on access."""

    def __init__(self, posterior: Posterior):
        self.posterior = posterior

    def __getitem__(self, index: int) -> Posterior:
        return exact_kl(self.posterior, [[int(index)]])[1][0]


def _gaussian_mixture_factor(posterior: Posterior) -> GaussianMixtureFactor:
    factors = [f for f in posterior.graph.factors.values() if isinstance(f, GaussianMixtureFactor)]
    if len(factors) != 1:
        raise ValueError(
            f"exact refits in the mixture report need exactly one GaussianMixtureFactor, "
            f"the graph has {len(factors)}"
        )
    return factors[0]
