"""Leave-one-out predictive summaries in ArviZ's terms, and draws for PSIS-LOO.

From the divided posteriors, the pointwise LOO log predictive density is
``elpd_i = log p(x_i | data without i)``. As in ArviZ's ``loo``:

* ``elpd_loo = sum_i elpd_i``,
* its standard error is ``sqrt(N * var(elpd_i))`` (population variance),
* ``p_loo = lppd - elpd_loo``, the effective number of parameters, where
  ``lppd = sum_i log p(x_i | all data)`` is the log pointwise predictive
  density under the full posterior predictive.

ArviZ estimates the same quantities by Pareto-smoothed importance sampling
(PSIS) from posterior draws (Vehtari, Gelman and Gabry 2017).
:func:`log_likelihood_draws` draws parameters from the fitted variational
posterior and returns the pointwise log-likelihood matrix that
:func:`psis_loo` hands to ``arviz.loo``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from .._validation import check_int, check_random_state
from ..inference.posterior import Posterior

__all__ = [
    "LooSummary",
    "draw_mixture_parameters",
    "in_sample_log_predictive",
    "log_likelihood_draws",
    "psis_loo",
    "summarize_loo",
]


@dataclass(frozen=True)
class LooSummary:
    """Expected log pointwise predictive density for new data, estimated by leave-one-out.

    Attributes
    ----------
    elpd_loo : float
        Sum over sites of ``elpd_i``; -inf when some site's divided posterior is improper.
    se : float
        Standard error of ``elpd_loo``, ``sqrt(N * var(elpd_i))``; +inf when
        some site is improper.
    p_loo : float or None
        Effective number of parameters ``lppd - elpd_loo``; None when the
        model offers no in-sample predictive density.
    lppd : float or None
        ``sum_i log p(x_i | all data)`` under the full posterior predictive.
    elpd_i : ndarray, shape (N,)
        Pointwise ``log p(x_i | data without i)``; -inf at improper sites.
    n_sites : int
    n_improper : int
        Number of sites whose divided posterior is improper.
    """

    elpd_loo: float
    se: float
    p_loo: float | None
    lppd: float | None
    elpd_i: np.ndarray
    n_sites: int
    n_improper: int
    #: Which posteriors without each site the pointwise values come from.
    source: str = "divided"

    def to_dict(self) -> dict:
        """Return the scalar fields as plain Python values, without the pointwise values."""
        return {
            "elpd_loo": self.elpd_loo,
            "se": self.se,
            "p_loo": self.p_loo,
            "lppd": self.lppd,
            "n_sites": self.n_sites,
            "n_improper": self.n_improper,
        }

    def __str__(self) -> str:
        p_loo = "unavailable" if self.p_loo is None else f"{self.p_loo:.2f}"
        lines = [
            f"LOO from {self.source} posteriors over {self.n_sites} sites",
            f"  elpd_loo {self.elpd_loo:.2f}  (SE {self.se:.2f})",
            f"  p_loo    {p_loo}",
        ]
        if self.n_improper:
            lines.append(f"  {self.n_improper} sites have an improper {self.source} posterior")
        return "\n".join(lines)


def summarize_loo(elpd_i: np.ndarray, in_sample: np.ndarray | None, source: str = "divided") -> LooSummary:
    """Build a :class:`LooSummary` from pointwise LOO and in-sample log predictive densities.

    Parameters
    ----------
    elpd_i : ndarray, shape (N,)
        ``log p(x_i | data without i)``, -inf where the divided posterior is improper.
    in_sample : ndarray, shape (N,), or None
        ``log p(x_i | all data)``.
    source : str
        Which posteriors without each site ``elpd_i`` comes from, for the
        printed summary ("divided" or "linear-response corrected").
    """
    elpd_i = np.array(elpd_i, dtype=float)
    n_sites = elpd_i.size
    improper = ~np.isfinite(elpd_i)
    if improper.any():
        elpd_loo, se = -np.inf, np.inf
    else:
        elpd_loo = float(np.sum(elpd_i))
        se = float(np.sqrt(n_sites * np.var(elpd_i)))
    lppd = None if in_sample is None else float(np.sum(in_sample))
    p_loo = None if lppd is None else lppd - elpd_loo
    return LooSummary(elpd_loo, se, p_loo, lppd, elpd_i, n_sites, int(improper.sum()), source)


def in_sample_log_predictive(posterior: Posterior) -> np.ndarray | None:
    """log p(x_i | all data) under the full posterior predictive, shape (N,).

    A factor that generates observed data provides it through a method
    ``in_sample_log_predictive(state)``; the Gaussian-mixture factor
    evaluates its Student-t mixture at the training rows. Returns None when
    some observed variable's factor offers neither.
    """
    graph = posterior.graph
    total = np.zeros(posterior.n_sites)
    for variable in graph.variables_of_role("observed"):
        generating = [f for f in graph.factors_of(variable.name) if variable.name in f.children()]
        if len(generating) != 1:
            return None
        factor = generating[0]
        if hasattr(factor, "in_sample_log_predictive"):
            values = factor.in_sample_log_predictive(posterior)
        elif hasattr(factor, "log_predictive") and hasattr(factor, "quadratic_forms"):
            q = factor.quadratic_forms(posterior)
            values = factor.log_predictive(posterior, q, np.zeros_like(q),
                                           np.zeros(posterior.n_sites, dtype=bool))
        else:
            return None
        total += values
    return total


# Draws from the variational posterior, for PSIS-LOO


def _mixture_factors(posterior: Posterior):
    from ..graph import CategoricalFactor, GaussianMixtureFactor

    factors = list(posterior.graph.factors.values())
    likelihoods = [f for f in factors if isinstance(f, GaussianMixtureFactor)]
    weights = [f for f in factors if isinstance(f, CategoricalFactor)]
    if len(likelihoods) != 1 or len(weights) != 1 or len(factors) != 2:
        raise ValueError(
            "log_likelihood_draws supports graphs made of one CategoricalFactor and one "
            "GaussianMixtureFactor (such as GaussianMixture models); got factors "
            f"{[type(f).__name__ for f in factors]}"
        )
    return likelihoods[0], weights[0]


def log_likelihood_draws(posterior: Posterior, n_draws: int = 1000, random_state=None,
                         chunk_size: int = 200) -> np.ndarray:
    """Pointwise log-likelihood of every site under parameters drawn from q.

    For a Gaussian mixture, each draw is pi ~ q(pi) and (mu_k, Lambda_k) ~
    q(mu_k, Lambda_k), and the pointwise value is the marginal
    ``log sum_k pi_k N(x_i | mu_k, Lambda_k^-1)`` with the assignment
    summed out.

    Parameters
    ----------
    posterior : Posterior
        A fitted Gaussian-mixture posterior (``GaussianMixture.posterior_``).
    n_draws : int, default 1000
    random_state : None, int or numpy.random.Generator
    chunk_size : int, default 200
        Draws evaluated at a time; memory grows as chunk_size * N * K * D.

    Returns
    -------
    ndarray, shape (n_draws, N)
    """
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    draws = draw_mixture_parameters(posterior, n_draws, random_state)
    return _log_likelihood_of(posterior, draws, chunk_size)


def draw_mixture_parameters(posterior: Posterior, n_draws: int = 1000,
                            random_state=None) -> dict[str, np.ndarray]:
    """Draw Gaussian-mixture parameters from the fitted variational posterior q.

    Returns
    -------
    dict
        ``weights`` of shape (n_draws, K), ``means`` of shape (n_draws, K, D)
        and ``precisions`` of shape (n_draws, K, D, D).
    """
    n_draws = check_int(n_draws, "n_draws", minimum=1)
    rng = check_random_state(random_state)
    likelihood, categorical = _mixture_factors(posterior)
    weights = rng.dirichlet(posterior.globals[categorical.weights].concentration, size=n_draws)
    means, precisions = _draw_components(posterior.globals[likelihood.components], n_draws, rng)
    return {"weights": weights, "means": means, "precisions": precisions}


def _log_likelihood_of(posterior: Posterior, draws: dict, chunk_size: int) -> np.ndarray:
    likelihood, _ = _mixture_factors(posterior)
    X = posterior.data[likelihood.observed]
    weights, means, precisions = draws["weights"], draws["means"], draws["precisions"]
    n_draws = weights.shape[0]
    out = np.empty((n_draws, X.shape[0]))
    for start in range(0, n_draws, chunk_size):
        stop = min(start + chunk_size, n_draws)
        out[start:stop] = _mixture_loglik(X, weights[start:stop], means[start:stop],
                                          precisions[start:stop])
    return out


def _draw_components(components, n_draws: int, rng) -> tuple[np.ndarray, np.ndarray]:
    from ..families import NormalWishart

    n_components, dim = components.mean.shape
    means = np.empty((n_draws, n_components, dim))
    precisions = np.empty((n_draws, n_components, dim, dim))
    for k in range(n_components):
        single = NormalWishart(components.mean[k], components.beta[k], components.scale[k],
                               components.dof[k])
        means[:, k], precisions[:, k] = single.sample(n_draws, rng)
    return means, precisions


def _mixture_loglik(X, weights, means, precisions) -> np.ndarray:
    """log sum_k pi_k N(x_i | mu_k, Lambda_k^-1) for each draw and row, shape (S, N)."""
    dim = X.shape[1]
    chol = np.linalg.cholesky(precisions)                                  # (S, K, D, D)
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # (S, K)
    diff = X[None, None, :, :] - means[:, :, None, :]                      # (S, K, N, D)
    # (x - mu)^T Lambda (x - mu) = |L^T (x - mu)|^2 with Lambda = L L^T.
    projected = np.einsum("skdj,sknd->sknj", chol, diff)
    mahalanobis = np.sum(projected**2, axis=-1)                            # (S, K, N)
    log_component = 0.5 * (logdet[:, :, None] - dim * np.log(2 * np.pi) - mahalanobis)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    return logsumexp(log_weights[:, :, None] + log_component, axis=1)


def psis_loo(posterior: Posterior, n_draws: int = 1000, random_state=None):
    """ArviZ's PSIS-LOO from draws of the fitted variational posterior.

    The importance weights 1 / p(x_i | theta_s) correct draws from q towards
    q without site i, so large Pareto k values flag sites where q is a poor
    proposal. Requires ArviZ (the ``test`` extra installs it).

    Returns
    -------
    arviz.ELPDData
        With ``elpd_loo``, ``se``, ``p_loo``, ``loo_i`` and ``pareto_k``.
    """
    try:
        import arviz
    except ImportError:
        raise ImportError(
            "psis_loo needs ArviZ; install it with pip install arviz (or the fg-influence "
            "'test' extra)"
        ) from None
    major = int(arviz.__version__.split(".")[0])
    if major >= 1:
        # NOTE: ArviZ 1.x takes from_dict({group: {name: array}}); only 0.x is tested here.
        raise ImportError(
            f"psis_loo supports ArviZ 0.x (tested with 0.23), got {arviz.__version__}; install "
            f"'arviz<1' or call arviz.loo on log_likelihood_draws(...) yourself"
        )
    draws = draw_mixture_parameters(posterior, n_draws, random_state)
    log_likelihood = _log_likelihood_of(posterior, draws, chunk_size=200)
    # One chain: the draws are independent, so ArviZ's effective sample size is the draw count.
    data = arviz.from_dict(
        posterior={name: values[None] for name, values in draws.items()},
        log_likelihood={"x": log_likelihood[None]},
    )
    return arviz.loo(data, pointwise=True)
