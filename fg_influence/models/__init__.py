"""Ready-made models built on the factor-graph API."""

from .conjugate import BetaBernoulli, PoissonGamma
from .factor_analysis import FactorAnalysis
from .gaussian_mixture import GaussianMixture
from .hierarchical import HierarchicalNormal
from .hmm import HiddenMarkovModel
from .lda import LatentDirichletAllocation
from .linear_regression import BayesianLinearRegression
from .mixture_of_regressions import MixtureOfRegressions
from .mixtures import BernoulliMixture, CategoricalMixture, DiagonalGaussianMixture, PoissonMixture

__all__ = [
    "BayesianLinearRegression",
    "BernoulliMixture",
    "BetaBernoulli",
    "CategoricalMixture",
    "DiagonalGaussianMixture",
    "FactorAnalysis",
    "GaussianMixture",
    "HiddenMarkovModel",
    "HierarchicalNormal",
    "LatentDirichletAllocation",
    "MixtureOfRegressions",
    "PoissonGamma",
    "PoissonMixture",
]
