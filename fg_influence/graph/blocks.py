"""Local blocks: several local variables per site, and ragged sites.

A :class:`LocalBlock` is a group of local variables that belongs to one
site, such as a county's mean, a subject's regression coefficients or a
whole hidden state sequence. CAVI updates a block to its optimum given the
global posteriors before it updates the globals, in one of two ways:

- an exponential-family block (``family`` set) has a conjugate posterior
  whose natural parameters are the sum of the per-site messages of its
  factors (``Factor.block_message``); its ELBO terms are each factor's
  ``site_expected_log_density`` plus the block's entropy;
- a structured block (``owner`` set) is updated by the factor that owns
  it, which runs an exact local routine (such as forward-backward) or an
  inner loop and returns the block state and the per-site ELBO terms
  (``Factor.update_block``).

Either way the block state is a :class:`BlockState`: arrays with the site
axis first from which the factors form their site messages to the globals,
so division, all-site summaries and refits treat a block like a single
local variable.

Sites with several observations each (groups, sequences, documents) store
their rows concatenated, with an ``offsets`` array of length n_sites + 1:
site i owns rows ``offsets[i]:offsets[i + 1]`` (the CSR layout, no
padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .nodes import ObservedVariable

BLOCK_ROLE = "block"


@dataclass(eq=False)
class LocalBlock:
    """A block of local variables with one instance per site.

    Parameters
    ----------
    name : str
    plate : str
        The site plate.
    family : type, optional
        An exponential family (such as ``MultivariateNormal``) for a block
        whose posterior is that family with the summed natural-parameter
        messages of its factors.
    owner : str, optional
        Name of the factor that updates the block (for chains and other
        structured blocks). Exactly one of ``family`` and ``owner`` is set.
    """

    name: str
    plate: str
    family: type | None = None
    owner: str | None = None
    role: str = field(default=BLOCK_ROLE, init=False)


@dataclass(eq=False)
class RaggedObservedVariable(ObservedVariable):
    """Observed rows grouped by site, concatenated in site order.

    ``data`` has shape (n_rows, C); site i owns rows
    ``offsets[i]:offsets[i + 1]``. ``covariates`` (n_rows, P), when given,
    are fixed inputs aligned with the rows (such as a regression design),
    removed together with their site.
    """

    offsets: np.ndarray | None = None
    covariates: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        """Number of rows of each site, shape (n_sites,)."""
        return np.diff(self.offsets)

    def row_sites(self) -> np.ndarray:
        """Site of each row, shape (n_rows,)."""
        return np.repeat(np.arange(self.offsets.size - 1), self.lengths)

    def keep_sites(self, keep: np.ndarray) -> "RaggedObservedVariable":
        """Return a copy that keeps only the sites where the boolean mask ``keep`` is True."""
        rows = np.repeat(keep, self.lengths)
        offsets = np.concatenate(([0], np.cumsum(self.lengths[keep]))).astype(np.int64)
        covariates = None if self.covariates is None else self.covariates[rows]
        return RaggedObservedVariable(self.name, self.data[rows], self.plate, offsets, covariates)


class BlockState:
    """Posterior state of a block: named arrays with the site axis first.

    ``ragged`` arrays have one row per observed row instead (such as a
    document's word assignments), and site i owns rows
    ``offsets[i]:offsets[i + 1]`` of each. Indexing with a boolean mask or
    integer positions keeps those sites, which is how refits warm-start from
    the fitted blocks of the remaining sites.
    """

    def __init__(self, arrays: dict[str, np.ndarray], ragged: dict[str, np.ndarray] | None = None,
                 offsets: np.ndarray | None = None):
        sizes = {np.shape(value)[0] for value in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"block arrays must share the site axis, got leading sizes {sorted(sizes)}")
        if ragged and offsets is None:
            raise ValueError("ragged block arrays need the offsets of their sites")
        self.arrays = arrays
        self.ragged = dict(ragged or {})
        self.offsets = offsets

    @property
    def n_sites(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def __getitem__(self, sites) -> "BlockState":
        positions = np.arange(self.n_sites)[sites]
        arrays = {key: np.asarray(value)[positions] for key, value in self.arrays.items()}
        if not self.ragged:
            return BlockState(arrays)
        lengths = np.diff(self.offsets)[positions]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in positions]) \
            if positions.size else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        return BlockState(arrays, {key: value[rows] for key, value in self.ragged.items()}, offsets)

    def __getattr__(self, key):
        # Only called for names that are not regular attributes.
        for store in (self.__dict__.get("arrays", {}), self.__dict__.get("ragged", {})):
            if key in store:
                return store[key]
        known = sorted(self.__dict__.get("arrays", {})) + sorted(self.__dict__.get("ragged", {}))
        raise AttributeError(f"block state has no array {key!r}; it has {known}")

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={np.shape(v)}" for k, v in {**self.arrays, **self.ragged}.items())
        return f"BlockState({shapes})"


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum ``values`` (n_rows, ...) over each site's rows, shape (n_sites, ...).

    Every site must own at least one row, because ``numpy.add.reduceat``
    returns the next row for an empty segment.
    """
    return np.add.reduceat(values, offsets[:-1], axis=0)


def check_offsets(offsets, n_rows: int, name: str) -> np.ndarray:
    """Check CSR offsets: integers from 0 to n_rows, strictly increasing (no empty site)."""
    array = np.asarray(offsets)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(
            f"offsets of {name!r} must be a 1-D array of length n_sites + 1 >= 2, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"offsets of {name!r} must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array[0] != 0 or array[-1] != n_rows:
        raise ValueError(
            f"offsets of {name!r} must start at 0 and end at the number of rows ({n_rows}), got "
            f"{array[0]} and {array[-1]}"
        )
    steps = np.diff(array)
    if np.any(steps <= 0):
        empty = np.flatnonzero(steps <= 0)[:5].tolist()
        raise ValueError(
            f"offsets of {name!r} must increase strictly, because every site needs at least one "
            f"row; sites {empty} are empty or out of order. Drop empty groups before building the model"
        )
    return array


# Updates called by the CAVI loop.

def block_names(graph) -> list[str]:
    """Names of the graph's local blocks, in declaration order."""
    return [v.name for v in graph.variables.values() if v.role == BLOCK_ROLE]


def owner_of(graph, name: str):
    """Return the factor that owns structured block ``name``."""
    return graph.factors[graph.variables[name].owner]


def family_block_distribution(state, name: str):
    """q of an exponential-family block from the summed messages of its factors (batch over sites)."""
    graph = state.graph
    variable = graph.variables[name]
    total = None
    for factor in graph.factors_of(name):
        message = factor.block_message(name, state)
        total = message if total is None else tuple(a + b for a, b in zip(total, message))
    return variable.family.from_natural(*total)


def family_block_state(distribution) -> BlockState:
    """Block state of an exponential-family block: its expected sufficient statistics and entropy."""
    stats = distribution.expected_stats()
    arrays = {f"stat{index}": np.asarray(value) for index, value in enumerate(stats)}
    arrays["entropy"] = np.asarray(distribution.entropy())
    return BlockState(arrays)


def block_site_elbo(state, name: str) -> np.ndarray:
    """Per-site ELBO terms of block ``name`` at its current state, shape (n_sites,)."""
    graph = state.graph
    variable = graph.variables[name]
    if variable.owner is not None:
        return owner_of(graph, name).block_site_elbo(name, state)
    terms = np.array(state.locals[name].entropy, dtype=float)
    for factor in graph.factors_of(name):
        terms = terms + factor.site_expected_log_density(name, state)
    return terms


def update_block(state, name: str) -> np.ndarray:
    """Set block ``name`` to its optimum given the globals; return its per-site ELBO terms."""
    variable = state.graph.variables[name]
    if variable.owner is not None:
        block_state, terms = owner_of(state.graph, name).update_block(name, state)
        state.locals[name] = block_state
        return terms
    state.locals[name] = family_block_state(family_block_distribution(state, name))
    return block_site_elbo(state, name)


def update_blocks(state) -> float:
    """Update every block; return the sum of their ELBO terms (0 for a graph without blocks)."""
    return float(sum(np.sum(update_block(state, name)) for name in block_names(state.graph)))


def blocks_elbo(state) -> float:
    """Sum of the blocks' ELBO terms at the current state, without changing it."""
    return float(sum(np.sum(block_site_elbo(state, name)) for name in block_names(state.graph)))


def initial_block(graph, name: str, data: dict, locals_: dict, rng) -> BlockState:
    """Starting state of a block: its update with every global at its prior.

    A structured block's owner, or any factor of an exponential-family
    block, may replace this with its own ``initial_block``.
    """
    from ..inference.posterior import Posterior

    variable = graph.variables[name]
    if variable.owner is not None:
        owner = graph.factors[variable.owner]
        if hasattr(owner, "initial_block"):
            return owner.initial_block(name, graph, data, rng)
    else:
        # A factor can break a symmetry that the priors leave unbroken (for
        # example, zero prior loadings send zero messages to the factors).
        for factor in graph.factors_of(name):
            if hasattr(factor, "initial_block"):
                return factor.initial_block(name, graph, data, rng)
    priors = {v.name: v.prior for v in graph.variables_of_role("global")}
    state = Posterior(graph, priors, dict(locals_), data)
    update_block(state, name)
    return state.locals[name]


def check_init_block(graph, name: str, value) -> BlockState:
    """Check a warm-start block state for block ``name``."""
    if not isinstance(value, BlockState):
        raise TypeError(f"init_locals[{name!r}] must be a BlockState, got {type(value).__name__}")
    if value.n_sites != graph.n_sites:
        raise ValueError(
            f"init_locals[{name!r}] must cover {graph.n_sites} sites, got {value.n_sites}"
        )
    return value


# Division helpers shared by block factors.

def loo_kl_by_division(fitted, site_messages: tuple[np.ndarray, ...], improper: np.ndarray) -> np.ndarray:
    """KL(q || q without site i) of one global for every site, from all sites' messages.

    ``site_messages`` are the sites' natural-parameter messages, site axis
    first. Sites whose divided posterior is improper are flagged in
    ``improper`` and get KL 0.
    """
    natural = fitted.natural_params()
    divided = tuple(p[None] - m for p, m in zip(natural, site_messages))
    family = type(fitted)
    n_sites = site_messages[0].shape[0]
    try:
        batch = family.from_natural(*divided)
        values = np.asarray(fitted.kl(batch))
        return values.reshape(n_sites, -1).sum(axis=1)
    except ValueError:
        pass
    values = np.zeros(n_sites)
    for site in range(n_sites):
        try:
            one = family.from_natural(*(d[site] for d in divided))
        except ValueError:
            improper[site] = True
            continue
        values[site] = float(np.sum(fitted.kl(one)))
    return values
