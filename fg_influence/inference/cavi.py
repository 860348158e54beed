"""Coordinate-ascent variational inference driven by the factor graph.

One iteration updates every local variable (the E-step: each site's
responsibilities from the messages of its factors), records the ELBO, then
updates every global variable (the M-step: prior natural parameters plus
the summed messages of the factors below it). The schedule and the messages
come from the graph, so no model has a loop of its own.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.vq import kmeans2

from .._validation import check_int, check_random_state, check_tol
from ..exceptions import ConvergenceWarning
from ..graph import FactorGraph, blocks
from ..graph.nodes import ObservedVariable
from ..kernels.mixture import normalize_log_resp
from .posterior import Posterior
from .threads import check_n_jobs, numba_threads

INIT_METHODS = ("kmeans", "random")


def local_logits(state: Posterior, name: str) -> np.ndarray:
    """Sum of the factors' messages to local variable ``name``, shape (n_sites, K)."""
    graph = state.graph
    n_categories = graph.plates[graph.variables[name].categories].size
    logits = np.zeros((graph.n_sites, n_categories))
    for factor in graph.factors_of(name):
        logits += factor.message(name, state)
    return logits


def update_local(state: Posterior, name: str) -> np.ndarray:
    """Set the local variable's responsibilities to their optimum; return the per-site log-normaliser."""
    resp, log_norm = normalize_log_resp(local_logits(state, name))
    state.locals[name] = resp
    return log_norm


def global_natural_params(state: Posterior, name: str) -> tuple[np.ndarray, ...]:
    """Prior natural parameters plus the messages of every factor below ``name``."""
    graph = state.graph
    prior = graph.variables[name].prior
    natural = [np.array(p, dtype=float) for p in prior.natural_params()]
    for factor in graph.factors_of(name):
        for total, message in zip(natural, factor.message(name, state)):
            total += message
    return tuple(natural)


def update_global(state: Posterior, name: str) -> None:
    prior = state.graph.variables[name].prior
    state.globals[name] = type(prior).from_natural(*global_natural_params(state, name))


def global_kl(state: Posterior) -> float:
    """Sum over global variables of KL(q || prior)."""
    graph = state.graph
    return float(sum(
        np.sum(state.globals[v.name].kl(v.prior)) for v in graph.variables_of_role("global")
    ))


def local_free_terms(state: Posterior) -> float:
    """Sum of E_q[log factor] over factors with no local neighbour (absent from the local terms)."""
    graph = state.graph
    total = 0.0
    for factor in graph.factors.values():
        # Factors next to a local block are counted in the block's per-site terms.
        if not any(graph.variables[name].role in ("local", "block") for name in factor.neighbours()):
            total += float(factor.expected_log_density(state))
    return total


def compute_elbo(state: Posterior) -> float:
    """ELBO at the current state, without changing it.

    For each local categorical variable the expected log joint of its factors
    plus its entropy is sum_ik r_ik a_ik - sum_ik r_ik ln r_ik, with a_ik the
    summed messages; factors without local neighbours contribute their
    expected log density and the global variables -KL(q || prior).
    """
    total = local_free_terms(state) - global_kl(state)
    for variable in state.graph.variables_of_role("local"):
        resp = state.locals[variable.name]
        logits = local_logits(state, variable.name)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy_terms = np.where(resp > 0, resp * np.log(np.where(resp > 0, resp, 1.0)), 0.0)
        total += float(np.sum(resp * logits) - np.sum(entropy_terms))
    total += blocks.blocks_elbo(state)
    return total


def initial_responsibilities(graph: FactorGraph, name: str, method: str,
                             rng: np.random.Generator) -> np.ndarray:
    """Starting responsibilities for local variable ``name``.

    ``kmeans`` runs k-means++ (scipy.cluster.vq.kmeans2) on the observed data
    generated through this variable and uses one-hot labels, as
    scikit-learn's mixtures do; ``random`` draws each row from a flat
    Dirichlet.
    """
    n_sites = graph.n_sites
    n_categories = graph.plates[graph.variables[name].categories].size
    if method == "kmeans":
        observed = [
            graph.variables[child]
            for factor in graph.factors_of(name)
            for child in factor.children()
            if isinstance(graph.variables[child], ObservedVariable)
        ]
        X = np.hstack([variable.data for variable in observed]) if observed else None
        # k-means++ divides by zero when there are fewer distinct rows than
        # clusters, so such data start from random responsibilities instead.
        if X is not None and np.unique(X, axis=0).shape[0] >= n_categories:
            scale = X.std(axis=0)
            scale[scale == 0] = 1.0
            with warnings.catch_warnings():
                # An empty k-means cluster only leaves a component to be filled by CAVI.
                warnings.simplefilter("ignore", UserWarning)
                _, labels = kmeans2(X / scale, n_categories, minit="++", seed=rng)
            resp = np.zeros((n_sites, n_categories))
            resp[np.arange(n_sites), labels] = 1.0
            return resp
    return rng.dirichlet(np.ones(n_categories), size=n_sites)


def _run(state: Posterior, tol: float, max_iter: int) -> Posterior:
    local_names, global_names = state.graph.schedule()
    for name in global_names:
        update_global(state, name)
    previous = -np.inf
    for iteration in range(1, max_iter + 1):
        log_norm_total = 0.0
        for name in local_names:
            log_norm_total += float(np.sum(update_local(state, name)))
        # A local block's update returns its sites' expected log joint plus entropy.
        log_norm_total += blocks.update_blocks(state)
        # Just after the E-step, each site's expected log joint plus entropy
        # equals its log-normaliser, so the ELBO needs no extra pass.
        elbo = log_norm_total + local_free_terms(state) - global_kl(state)
        state.elbo_history.append(elbo)
        for name in global_names:
            update_global(state, name)
        state.n_iter = iteration
        if abs(elbo - previous) <= tol * abs(elbo):
            state.converged = True
            break
        previous = elbo
    state.elbo = compute_elbo(state)
    return state


def fit_cavi(graph: FactorGraph, *, tol: float = 1e-9, max_iter: int = 1000, n_init: int = 1,
             init: str = "kmeans", init_locals: dict[str, np.ndarray] | None = None,
             random_state=None, warn: bool = True, n_jobs: int | None = None) -> Posterior:
    """Fit a mean-field posterior to ``graph`` by CAVI and return the best of ``n_init`` runs.

    Parameters
    ----------
    graph : FactorGraph
        A validated model with observed data.
    tol : float
        Stop when the ELBO changes by at most ``tol * |ELBO|`` between iterations.
    max_iter : int
        Maximum number of iterations per run.
    n_init : int
        Number of runs from different starting points; the run with the
        highest ELBO is kept.
    init : {"kmeans", "random"}
        How to draw starting responsibilities.
    init_locals : dict, optional
        Starting responsibilities by local variable name, shape (n_sites, K).
        When given, every run starts from them (a warm start).
    random_state : None, int or numpy.random.Generator
        Seed for the starting points; an integer makes the fit reproducible.
    warn : bool
        Raise a ConvergenceWarning when the best run did not converge.
    n_jobs : int, optional
        Threads for the Numba kernels during the fit; None uses all
        NUMBA_NUM_THREADS. The previous count is restored afterwards, and
        the result does not depend on it.

    Returns
    -------
    Posterior
    """
    if not isinstance(graph, FactorGraph):
        raise TypeError(f"graph must be a FactorGraph, got {type(graph).__name__}")
    graph.validate()
    tol = check_tol(tol)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    n_init = check_int(n_init, "n_init", minimum=1)
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    rng = check_random_state(random_state)
    check_n_jobs(n_jobs)
    local_names, _ = graph.schedule()
    data = {v.name: v.data for v in graph.variables_of_role("observed")}

    best = None
    for _ in range(n_init):
        locals_ = {}
        for name in local_names:
            if init_locals is not None and name in init_locals:
                locals_[name] = _check_init_locals(graph, name, init_locals[name])
            else:
                locals_[name] = initial_responsibilities(graph, name, init, rng)
        for name in blocks.block_names(graph):
            if init_locals is not None and name in init_locals:
                locals_[name] = blocks.check_init_block(graph, name, init_locals[name])
            else:
                locals_[name] = blocks.initial_block(graph, name, data, locals_, rng)
        with numba_threads(n_jobs):
            state = _run(Posterior(graph, {}, locals_, data), tol, max_iter)
        if best is None or state.elbo > best.elbo:
            best = state

    if warn and not best.converged:
        warnings.warn(
            f"CAVI did not converge in max_iter={max_iter} iterations (last relative ELBO "
            f"change above tol={tol:g}); increase max_iter, loosen tol, or try more n_init",
            ConvergenceWarning,
            stacklevel=2,
        )
    return best


def _check_init_locals(graph: FactorGraph, name: str, resp) -> np.ndarray:
    n_categories = graph.plates[graph.variables[name].categories].size
    resp = np.array(resp, dtype=float)
    expected = (graph.n_sites, n_categories)
    if resp.shape != expected:
        raise ValueError(
            f"init_locals[{name!r}] must have shape {expected}, got {resp.shape}"
        )
    if not np.all(np.isfinite(resp)) or np.any(resp < 0) or not np.allclose(resp.sum(axis=1), 1.0, atol=1e-8):
        raise ValueError(
            f"init_locals[{name!r}] must hold finite, non-negative rows that sum to 1"
        )
    return resp
