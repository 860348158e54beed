"""The factor graph: plates, variables and factors stored in a networkx DiGraph."""

from __future__ import annotations

import networkx as nx
import numpy as np

from .._validation import as_float_array, check_int
from ..families import ExponentialFamily
from .errors import GraphError
from .factors import Factor
from .blocks import LocalBlock, RaggedObservedVariable, check_offsets
from .nodes import GlobalVariable, LocalVariable, ObservedVariable, Plate


class FactorGraph:
    """A conjugate-exponential model declared node by node.

    Edges of the underlying ``networkx.DiGraph`` run from each parent
    variable to a factor and from the factor to each child variable, so the
    generative direction is explicit and a cycle check is a DAG check.

    Examples
    --------
    A Gaussian mixture with K components on data X of shape (N, D):

    >>> import numpy as np
    >>> from fg_influence.families import Dirichlet, NormalWishart
    >>> from fg_influence.graph import FactorGraph, CategoricalFactor, GaussianMixtureFactor
    >>> X = np.random.default_rng(0).normal(size=(50, 2))
    >>> K = 2
    >>> graph = FactorGraph()
    >>> graph.add_plate("data", 50)
    Plate(name='data', size=50)
    >>> graph.add_plate("components", K)
    Plate(name='components', size=2)
    >>> weights = graph.add_global("weights", Dirichlet(np.ones(K)))
    >>> components = graph.add_global(
    ...     "components",
    ...     NormalWishart(np.zeros((K, 2)), np.ones(K), np.tile(np.eye(2), (K, 1, 1)), np.full(K, 2.0)),
    ...     plates=("components",))
    >>> assignment = graph.add_local("assignment", plate="data", categories="components")
    >>> x = graph.add_observed("x", X, plate="data")
    >>> graph.add_factor(CategoricalFactor("assignment_prior", "assignment", "weights")).name
    'assignment_prior'
    >>> graph.add_factor(GaussianMixtureFactor("likelihood", "x", "assignment", "components")).name
    'likelihood'
    >>> graph.validate()
    """

    def __init__(self):
        self.plates: dict[str, Plate] = {}
        self.variables: dict[str, GlobalVariable | LocalVariable | ObservedVariable] = {}
        self.factors: dict[str, Factor] = {}
        self.nx_graph = nx.DiGraph()

    # Declaring nodes

    def add_plate(self, name: str, size: int) -> Plate:
        """Declare a plate (a named axis of repetition) of the given size."""
        self._check_new_name(name, self.plates, "plate")
        plate = Plate(name, check_int(size, f"size of plate {name!r}", minimum=1))
        self.plates[name] = plate
        return plate

    def add_global(self, name: str, prior: ExponentialFamily, plates: tuple[str, ...] = ()) -> GlobalVariable:
        """Declare a global variable with a conjugate prior repeated over ``plates``."""
        self._check_new_variable(name)
        if not isinstance(prior, ExponentialFamily):
            raise TypeError(
                f"prior of {name!r} must be a distribution from fg_influence.families, "
                f"got {type(prior).__name__}"
            )
        plates = tuple(plates)
        for plate in plates:
            self._check_plate(plate, f"global variable {name!r}")
        variable = GlobalVariable(name, prior, plates)
        self._add_variable(variable)
        return variable

    def add_local(self, name: str, plate: str, categories: str) -> LocalVariable:
        """Declare a local categorical variable on the site plate with values on ``categories``."""
        self._check_new_variable(name)
        self._check_plate(plate, f"local variable {name!r}")
        self._check_plate(categories, f"local variable {name!r}")
        variable = LocalVariable(name, plate, categories)
        self._add_variable(variable)
        return variable

    def add_observed(self, name: str, data, plate: str) -> ObservedVariable:
        """Declare observed data with one row per index of ``plate``; the array is copied."""
        self._check_new_variable(name)
        self._check_plate(plate, f"observed variable {name!r}")
        array = as_float_array(data, f"data of {name!r}", ndim=2)
        size = self.plates[plate].size
        if array.shape[0] != size:
            raise GraphError(
                f"plate mismatch: data of {name!r} has {array.shape[0]} rows but plate "
                f"{plate!r} has size {size}"
            )
        variable = ObservedVariable(name, array, plate)
        self._add_variable(variable)
        return variable

    def add_block(self, name: str, plate: str, *, family=None, owner: str | None = None) -> LocalBlock:
        """Declare a block of local variables with one instance per index of the site ``plate``.

        Give ``family`` (an exponential family class) for a block whose
        posterior is that family, updated from its factors' summed messages,
        or ``owner`` (a factor name) for a block that the factor updates by
        its own exact routine or inner loop.
        """
        self._check_new_variable(name)
        self._check_plate(plate, f"block {name!r}")
        if (family is None) == (owner is None):
            raise ValueError(
                f"block {name!r} needs exactly one of family (an exponential family class) and "
                f"owner (the name of the factor that updates it)"
            )
        if family is not None and not (isinstance(family, type) and issubclass(family, ExponentialFamily)):
            raise TypeError(
                f"family of block {name!r} must be a class from fg_influence.families, got {family!r}"
            )
        variable = LocalBlock(name, plate, family=family, owner=owner)
        self._add_variable(variable)
        return variable

    def add_ragged_observed(self, name: str, data, offsets, plate: str, *,
                            covariates=None) -> RaggedObservedVariable:
        """Declare observed rows grouped by site: site i owns rows ``offsets[i]:offsets[i + 1]``.

        ``data`` has shape (n_rows, C) (or (n_rows,) for one column) and
        ``offsets`` length ``plate`` size + 1; every site needs at least one
        row. ``covariates`` (n_rows, P) are fixed inputs aligned with the
        rows. Arrays are copied.
        """
        self._check_new_variable(name)
        self._check_plate(plate, f"observed variable {name!r}")
        array = as_float_array(data, f"data of {name!r}", ndim=(1, 2))
        if array.ndim == 1:
            array = array[:, None]
        offsets = check_offsets(offsets, array.shape[0], name)
        size = self.plates[plate].size
        if offsets.size != size + 1:
            raise GraphError(
                f"plate mismatch: offsets of {name!r} describe {offsets.size - 1} sites but plate "
                f"{plate!r} has size {size}"
            )
        if covariates is not None:
            covariates = as_float_array(covariates, f"covariates of {name!r}", ndim=2)
            if covariates.shape[0] != array.shape[0]:
                raise ValueError(
                    f"covariates of {name!r} must have one row per data row ({array.shape[0]}), "
                    f"got {covariates.shape[0]}"
                )
        variable = RaggedObservedVariable(name, array, plate, offsets, covariates)
        self._add_variable(variable)
        return variable

    def add_factor(self, factor: Factor) -> Factor:
        """Connect a factor to its parent and child variables, which must already exist."""
        if not isinstance(factor, Factor):
            raise TypeError(f"factor must be a Factor instance, got {type(factor).__name__}")
        if factor.name in self.factors or factor.name in self.variables:
            raise GraphError(f"the name {factor.name!r} is already used by another node")
        for name in factor.neighbours():
            if name not in self.variables:
                raise GraphError(
                    f"factor {factor.name!r} refers to variable {name!r}, which is not in the "
                    f"graph; declare it first (known variables: {sorted(self.variables)})"
                )
        self.factors[factor.name] = factor
        self.nx_graph.add_node(factor.name, kind="factor")
        for parent in factor.parents():
            self.nx_graph.add_edge(parent, factor.name)
        for child in factor.children():
            self.nx_graph.add_edge(factor.name, child)
        return factor

    # Queries

    def variables_of_role(self, role: str) -> list:
        return [v for v in self.variables.values() if v.role == role]

    def factors_of(self, name: str) -> list[Factor]:
        """Factors adjacent to variable ``name``, in declaration order."""
        return [f for f in self.factors.values() if name in f.neighbours()]

    @property
    def site_plate(self) -> str:
        """Name of the plate that indexes the sites (the plate of the local variables)."""
        plates = {v.plate for v in self.variables_of_role("local")}
        plates |= {v.plate for v in self.variables_of_role("observed")}
        plates |= {v.plate for v in self.variables_of_role("block")}
        if len(plates) != 1:
            raise GraphError(
                f"local and observed variables must share one site plate, got plates {sorted(plates)}"
            )
        return plates.pop()

    @property
    def n_sites(self) -> int:
        return self.plates[self.site_plate].size

    def schedule(self) -> tuple[list[str], list[str]]:
        """Update order: local variables, then global variables, each in topological order."""
        order = list(nx.topological_sort(self.nx_graph))
        local = [n for n in order if self.variables.get(n) is not None and self.variables[n].role == "local"]
        global_ = [n for n in order if self.variables.get(n) is not None and self.variables[n].role == "global"]
        return local, global_

    # Validation

    def validate(self) -> None:
        """Raise GraphError for cycles, unobserved leaves, unused nodes, plate mismatches
        or non-conjugate wiring, naming the nodes involved."""
        if not self.variables:
            raise GraphError("the graph is empty; declare variables and factors first")
        if not nx.is_directed_acyclic_graph(self.nx_graph):
            cycle = nx.find_cycle(self.nx_graph)
            path = " -> ".join([edge[0] for edge in cycle] + [cycle[-1][1]])
            raise GraphError(f"the graph has a cycle: {path}; a generative model must be acyclic")
        for name, variable in self.variables.items():
            degree_out = self.nx_graph.out_degree(name)
            degree_in = self.nx_graph.in_degree(name)
            if variable.role != "observed" and degree_out == 0:
                raise GraphError(
                    f"{variable.role} variable {name!r} is a leaf that is not observed: no factor "
                    f"uses it as a parent, so the data say nothing about it; connect it or remove it"
                )
            if variable.role == "observed" and degree_in == 0:
                raise GraphError(
                    f"observed variable {name!r} has no factor generating it; add a likelihood "
                    f"factor with it as the child"
                )
        for variable in self.variables_of_role("block"):
            connected = [factor.name for factor in self.factors_of(variable.name)]
            if variable.owner is not None and variable.owner not in connected:
                raise GraphError(
                    f"block {variable.name!r} names owner {variable.owner!r}, which is not a factor "
                    f"connected to it; connect the factor that updates the block"
                )
        for factor in self.factors.values():
            factor.check(self)
        if not self.variables_of_role("observed"):
            raise GraphError("the graph has no observed variable; add the data with add_observed")
        _ = self.site_plate

    def without_sites(self, sites: np.ndarray) -> "FactorGraph":
        """Return a copy of this graph with the given sites' rows removed from the site plate."""
        site_plate = self.site_plate
        keep = np.ones(self.n_sites, dtype=bool)
        keep[sites] = False
        copy = FactorGraph()
        for plate in self.plates.values():
            size = int(keep.sum()) if plate.name == site_plate else plate.size
            copy.plates[plate.name] = Plate(plate.name, size)
        for variable in self.variables.values():
            if isinstance(variable, RaggedObservedVariable):
                variable = variable.keep_sites(keep)
            elif isinstance(variable, ObservedVariable):
                variable = ObservedVariable(variable.name, variable.data[keep], variable.plate)
            copy._add_variable(variable)
        for factor in self.factors.values():
            copy.add_factor(factor)
        return copy

    # Helpers

    def _add_variable(self, variable) -> None:
        self.variables[variable.name] = variable
        self.nx_graph.add_node(variable.name, kind=variable.role)

    def _check_new_name(self, name, registry, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what} name must be a non-empty string, got {name!r}")
        if name in registry:
            raise GraphError(f"a {what} named {name!r} already exists")

    def _check_new_variable(self, name: str) -> None:
        self._check_new_name(name, self.variables, "variable")
        if name in self.factors:
            raise GraphError(f"the name {name!r} is already used by a factor")

    def _check_plate(self, plate: str, owner: str) -> None:
        if plate not in self.plates:
            raise GraphError(
                f"{owner} refers to plate {plate!r}, which is not declared; call "
                f"add_plate({plate!r}, size) first (known plates: {sorted(self.plates)})"
            )
