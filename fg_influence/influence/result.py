"""The result of an all-site influence computation."""

from __future__ import annotations

from functools import cached_property
import warnings

import numpy as np
from scipy.stats import spearmanr

from .._validation import check_int, check_site_indices
from ..exceptions import ConvergenceWarning, ImproperDivisionWarning
from ..inference.posterior import Posterior
from . import closed_form
from .division import posterior_kl
from .exact import REFIT_TOL, converged_fit, exact_kl, find_other_optima, warn_other_optima
from . import _export
from .loo import LooSummary, in_sample_log_predictive, summarize_loo

MEASURES = ("kl", "loo_log_predictive")
#: Ways to estimate the posterior without a site; see ``InfluenceResult``.
METHODS = ("division", "linear-response")

#: compute_exact warns when running the full fit on to the refits' tolerance
#: moves it by more than this fraction of the median exact KL.
DRIFT_WARN = 0.1


class InfluenceResult:
    """Leave-one-out influence of every site, estimated by dividing site messages.

    Per-site arrays have the site axis first. A shift is (value without the
    site) minus (value with all sites). Properties are computed on first
    access and cached.

    ``method="division"`` (the default) subtracts each site's message with
    every other site's responsibilities held fixed. ``method="linear-response"``
    adds the first-order response of the CAVI fixed point,
    delta_g_i = -(I - J)^-1 s_i (see
    :mod:`fg_influence.influence.linear_response`); it costs one
    factorisation of a G x G matrix plus a product per site, and tracks exact
    refits more closely where clusters overlap.

    Attributes
    ----------
    posterior : Posterior
        The fitted posterior the sites are divided out of.
    method : str
        "division" or "linear-response".
    improper : ndarray of bool, shape (N,)
        Sites whose divided posterior is improper; their KL is reported as
        +inf and their LOO log predictive density as -inf.
    exact_sites : ndarray of int, shape (m,)
        The sites refitted by the last ``compute_exact`` call (empty before
        the first); each call replaces them.
    exact_kl : ndarray, shape (m,)
        Exact KL of the refit without each site, aligned with
        ``exact_sites`` (``exact_kl[j]`` belongs to site
        ``exact_sites[j]``, not to site j).
    exact_other_optimum : ndarray of bool, shape (m,)
        True where the refit without ``exact_sites[j]`` landed at a
        different local optimum than the fit, aligned like ``exact_kl``
        (see ``compute_exact``).
    """

    def __init__(self, posterior: Posterior, method: str = "division"):
        if not isinstance(method, str):
            raise TypeError(f"method must be a string, one of {METHODS}, got {type(method).__name__}")
        if method not in METHODS:
            hint = " (for exact refits of every site use compute_exact('all'))" if method == "exact" else ""
            raise ValueError(f"method must be one of {METHODS}, got {method!r}{hint}")
        self.posterior = posterior
        self.method = method
        self._response = None
        if method == "linear-response":
            from .linear_response import all_site_summaries

            self._response = all_site_summaries(posterior)
            self.improper = self._response.improper
        else:
            self._kl_by_variable, self.improper = closed_form.all_site_kl(posterior)
        if self.improper.any():
            shown = np.flatnonzero(self.improper)[:10].tolist()
            estimate = "when divided out" if method == "division" else "under the linear-response correction"
            warnings.warn(
                f"{int(self.improper.sum())} sites leave an improper posterior {estimate} "
                f"(first positions: {shown}); their KL is +inf and their LOO log predictive density "
                f"-inf. Check them with exact refits (compute_exact)",
                ImproperDivisionWarning,
                stacklevel=2,
            )
        self.exact_sites = np.zeros(0, dtype=np.int64)
        self.exact_kl = np.zeros(0)
        self.exact_other_optimum = np.zeros(0, dtype=bool)
        self._shift_cache = {}

    @property
    def n_sites(self) -> int:
        return self.posterior.n_sites

    @property
    def kl_by_variable(self) -> dict[str, np.ndarray]:
        """KL of each global variable's factor, shape (N,) each; 0 for improper sites.

        Under the linear-response method some models compute this split on
        first access (the total, ``kl``, comes first).
        """
        if self._response is not None:
            return self._response.kl_by_variable
        return self._kl_by_variable

    @cached_property
    def kl(self) -> np.ndarray:
        """KL(q || q without site i) over the global factors, shape (N,)."""
        total = getattr(self._response, "kl", None)
        if total is None:
            total = np.zeros(self.n_sites)
            for values in self.kl_by_variable.values():
                total += values
        else:
            total = np.array(total, dtype=float)
        total[self.improper] = np.inf
        return total

    @cached_property
    def loo_log_predictive(self) -> np.ndarray:
        """log p(x_i | data without i) under the divided (or corrected) posterior, shape (N,)."""
        if self._response is not None:
            return self._response.loo_log_predictive.copy()
        values = closed_form.all_site_log_predictive(self.posterior, self.improper.copy())
        values[self.improper] = -np.inf
        return values

    @cached_property
    def _shift_makers(self) -> dict:
        if self._response is not None:
            return {name: (lambda name=name: self._response.shifts[name]) for name in self._response.shift_names}
        return closed_form.all_site_shifts(self.posterior)

    @property
    def shift_names(self) -> list[str]:
        """Names of the parameter shifts this model offers, such as ``components.mean``."""
        return sorted(self._shift_makers)

    def shift(self, name: str) -> np.ndarray:
        """Shift of a named parameter (without the site minus with all sites); site axis first."""
        if name not in self._shift_makers:
            hint = ""
            if self.method != "division" and name in closed_form.all_site_shifts(self.posterior):
                hint = f"; {name!r} is offered by method='division' only"
            raise ValueError(f"unknown shift {name!r}; this result offers {self.shift_names}{hint}")
        if name not in self._shift_cache:
            self._shift_cache[name] = self._shift_makers[name]()
        return self._shift_cache[name]

    def shifts(self) -> dict[str, np.ndarray]:
        """Return every parameter shift this model offers whose value is defined, by name."""
        result = {}
        for name in self.shift_names:
            try:
                result[name] = self.shift(name)
            except ValueError:
                continue
        return result

    # Names used by GaussianMixture models.

    @property
    def mean_shift(self) -> np.ndarray:
        """Shift of each component's posterior mean E[mu_k], shape (N, K, D)."""
        return self.shift("components.mean")

    @property
    def mean_shift_norm(self) -> np.ndarray:
        """Largest over components of the mean shift's length under E[Lambda_k], shape (N,)."""
        return self.shift("components.mean_norm")

    @property
    def weight_shift(self) -> np.ndarray:
        """Shift of the expected mixing weights E[pi_k], shape (N, K)."""
        return self.shift("weights.mean")

    @property
    def weight_mode_shift(self) -> np.ndarray:
        """Shift of the Dirichlet mode of the mixing weights, shape (N, K)."""
        return self.shift("weights.mode")

    def measure(self, name: str) -> np.ndarray:
        if name not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {name!r}")
        return getattr(self, name)

    def top(self, k: int = 10, by: str = "kl") -> np.ndarray:
        """Positions of the ``k`` most influential sites, most influential first.

        ``by="kl"`` ranks by KL (largest first); ``by="loo_log_predictive"``
        ranks by the LOO log predictive density (smallest first, the sites
        the rest of the data explain worst).
        """
        k = check_int(k, "k", minimum=1)
        values = self.measure(by)
        order = np.argsort(-values if by == "kl" else values, kind="stable")
        return order[: min(k, self.n_sites)]

    def compute_exact(self, sites="all", progress=None) -> "InfluenceResult":
        """Refit without each requested site and store the exact KL for comparison.

        Parameters
        ----------
        sites : "all", int or sequence of int
            "all" refits every site; an integer n refits the n sites with the
            largest estimated KL; a sequence names the sites. An integer
            picks each method's own top n, so to compare methods with
            ``accuracy``, refit the same sites for both (a list, or "all").
        progress : callable, optional
            Called as ``progress(done, total)`` after each refit.

        Warns
        -----
        ConvergenceWarning
            If the fit itself was stopped well before the refits' tolerance
            (a relative ELBO change of REFIT_TOL = 1e-12), so that refitting
            all the data moves the posterior by more than a tenth of the
            median exact KL. The exact values then measure mostly that
            convergence, not the sites' influence, so refit the model with
            a smaller ``tol`` first.
        OtherOptimumWarning
            If some refits, warm-started from the fit, landed at a different
            local optimum (for example two components swapped rows or a
            small component was emptied). Each refit whose exact KL is at
            least 20 times the median over the refitted sites is checked by
            refitting all the data from it. A refit at the fit's optimum
            comes back to the fit, and one at another optimum does not.
            Those sites are marked in ``exact_other_optimum``, and their
            exact KL measures the jump between optima rather than the
            site's influence. Refit the model with more ``n_init`` or fewer
            components. Each checked site costs one more refit of all the
            data, after ``progress`` has reported the last refit.
        """
        if isinstance(sites, str):
            if sites != "all":
                raise ValueError(f'sites must be "all", a count or a list of sites, got {sites!r}')
            chosen = np.arange(self.n_sites)
        elif isinstance(sites, (int, np.integer)) and not isinstance(sites, bool):
            count = check_int(sites, "sites", minimum=1, maximum=self.n_sites)
            chosen = self.top(count)
        else:
            chosen = check_site_indices(sites, self.n_sites, "sites")
        groups = [[int(i)] for i in chosen]
        values, refits = exact_kl(self.posterior, groups, progress=progress)
        self.exact_sites = np.asarray(chosen, dtype=np.int64)
        self.exact_kl = values
        finite = values[np.isfinite(values)]
        converged = converged_fit(self.posterior)
        drift = 0.0 if converged is self.posterior else float(posterior_kl(self.posterior.globals, converged.globals))
        if finite.size and drift > DRIFT_WARN * np.median(finite):
            warnings.warn(
                f"the fit has not converged to the refits' tolerance: refitting all the data to a relative "
                f"ELBO change of {REFIT_TOL:g} moves the posterior by KL {drift:.3g}, against a median exact "
                f"KL of {np.median(finite):.3g}, so the exact values mostly measure that convergence rather "
                f"than the sites' influence. Refit the model with tol={REFIT_TOL:g} before compute_exact",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.exact_other_optimum, _ = find_other_optima(self.posterior, converged, groups, values, refits)
        if self.exact_other_optimum.any():
            _warn_other_optima(self.exact_sites, values, self.exact_other_optimum, self.labels)
        return self

    def accuracy(self, top_k: int = 10) -> dict[str, float]:
        """Agreement of the estimated KL with the exact KL over the refitted sites.

        Returns the Spearman rank correlation, the median and maximum
        relative error, and the overlap of the top ``top_k`` sets, with
        ``top_k`` capped at one less than the number of refitted sites
        (the overlap of all of them is 1 whatever the estimates). The
        Spearman correlation is NaN when the refitted sites' estimates or
        exact values are all equal (for example identical rows), because a
        ranking of equal values is undefined.
        """
        if self.exact_sites.size < 2:
            raise ValueError(
                f"accuracy needs exact refits of at least 2 sites, got {self.exact_sites.size}; call "
                f"compute_exact with 2 or more sites first"
            )
        top_k = check_int(top_k, "top_k", minimum=1)
        estimate = self.kl[self.exact_sites]
        exact = self.exact_kl
        finite = np.isfinite(estimate)
        relative = relative_errors(estimate, exact)
        k = min(top_k, self.exact_sites.size - 1)
        top_estimate = set(self.exact_sites[np.argsort(-estimate, kind="stable")[:k]].tolist())
        top_exact = set(self.exact_sites[np.argsort(-exact, kind="stable")[:k]].tolist())
        constant = np.ptp(estimate[finite]) == 0.0 or np.ptp(exact) == 0.0 if finite.any() else True
        rho = np.nan if constant else float(spearmanr(estimate, exact).statistic)
        return {
            "n_sites": int(self.exact_sites.size),
            "spearman": rho,
            "median_relative_error": float(np.median(relative)),
            "max_relative_error": float(np.max(relative)),
            "top_k": int(k),
            "top_k_overlap": len(top_estimate & top_exact) / k,
        }

    # Row labels, LOO summary and export

    #: Labels of the sites, such as a pandas index of the training data; None means positions.
    row_labels = None

    @property
    def labels(self) -> list:
        """Label of each site: ``row_labels`` when set, else the positions 0 .. N-1."""
        if self.row_labels is None:
            return list(range(self.n_sites))
        return list(self.row_labels)

    @cached_property
    def loo_summary(self) -> LooSummary:
        """elpd_loo, its standard error, p_loo and pointwise elpd_i, as ArviZ defines them."""
        source = "divided" if self.method == "division" else "linear-response corrected"
        return summarize_loo(self.loo_log_predictive, in_sample_log_predictive(self.posterior), source)

    def summary_frame(self):
        """Tabulate every site as a pandas DataFrame indexed by the row labels (needs pandas).

        Columns: ``kl``, ``kl.<variable>`` for each global variable,
        ``loo_log_predictive``, ``shift.<name>`` for each defined shift (with
        ``[k, d]`` suffixes for trailing axes), ``improper``, and
        ``exact_kl`` (NaN where no refit was run) after ``compute_exact``.
        """
        return _export.summary_frame(self)

    def to_dict(self) -> dict:
        """Export every per-site measure, shift, exact value and the LOO summary as plain JSON values.

        Infinite values (improper sites) become None.
        """
        return _export.result_to_dict(self)

    def to_json(self, path=None, *, indent: int = 2) -> str:
        """:meth:`to_dict` as strict JSON text, also written to ``path`` when given."""
        return _export.result_to_json(self, path, indent=indent)


def relative_errors(estimate: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Return |estimate - exact| / |exact| where the estimate is finite, as ``accuracy`` reports it."""
    finite = np.isfinite(estimate)
    return np.abs(estimate[finite] - exact[finite]) / np.maximum(np.abs(exact[finite]), 1e-300)


def _warn_other_optima(sites: np.ndarray, values: np.ndarray, other: np.ndarray, labels=None) -> None:
    """Warn that the refits without ``sites[other]`` left the fit's optimum, naming them by ``labels`` when given."""
    first_positions = sites[other][:10].tolist()
    named = ""
    if labels is not None and list(labels) != list(range(len(labels))):
        named = f", labels {[labels[i] for i in first_positions]}"
    warn_other_optima(other, values, f"first positions: {first_positions}{named}", "sites",
                      ", so treat those values with care (exact_other_optimum marks them)", stacklevel=3)
