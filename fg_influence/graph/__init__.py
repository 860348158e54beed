"""Factor graphs for conjugate-exponential models."""

from .errors import GraphError
from .factor_graph import FactorGraph
from .factors import CategoricalFactor, Factor, GaussianMixtureFactor
from .factors_conjugate import ConjugateLikelihoodFactor
from .factors_mixtures import BernoulliFactor, CategoricalDataFactor, DiagonalGaussianFactor, PoissonFactor
from .factors_regression import LinearRegressionFactor
from .nodes import GlobalVariable, LocalVariable, ObservedVariable, Plate

__all__ = [
    "BernoulliFactor",
    "CategoricalDataFactor",
    "CategoricalFactor",
    "ConjugateLikelihoodFactor",
    "DiagonalGaussianFactor",
    "Factor",
    "FactorGraph",
    "GaussianMixtureFactor",
    "GlobalVariable",
    "GraphError",
    "LinearRegressionFactor",
    "LocalVariable",
    "ObservedVariable",
    "Plate",
    "PoissonFactor",
]
