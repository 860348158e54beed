"""Ready-made models built on the factor-graph API."""

from .conjugate import BetaBernoulli, PoissonGamma
from .gaussian_mixture import GaussianMixture
from .linear_regression import BayesianLinearRegression
from .mixture_of_regressions import MixtureOfRegressions
from .mixtures import BernoulliMixture, CategoricalMixture, DiagonalGaussianMixture, PoissonMixture

__all__ = [
    "BayesianLinearRegression",
    "BernoulliMixture",
    "BetaBernoulli",
    "CategoricalMixture",
    "DiagonalGaussianMixture",
    "GaussianMixture",
    "MixtureOfRegressions",
    "PoissonGamma",
    "PoissonMixture",
]
