"""Factor graphs for conjugate-exponential models."""

from .errors import GraphError
from .factor_graph import FactorGraph
from .factors import CategoricalFactor, Factor, GaussianMixtureFactor
from .nodes import GlobalVariable, LocalVariable, ObservedVariable, Plate

__all__ = [
    "CategoricalFactor",
    "Factor",
    "FactorGraph",
    "GaussianMixtureFactor",
    "GlobalVariable",
    "GraphError",
    "LocalVariable",
    "ObservedVariable",
    "Plate",
]
