"""Exponential families in natural-parameter form, batched over leading axes.

Each family stores its standard parameters and offers ``natural_params``,
``from_natural``, ``expected_stats`` (the gradient of the log-partition),
``log_partition``, ``entropy``, ``kl``, ``mean`` and ``mode``.
"""

from .base import ExponentialFamily
from .beta import Beta
from .categorical import Categorical
from .dirichlet import Dirichlet
from .gamma import Gamma
from .gaussian import MultivariateNormal
from .normal_gamma import NormalGamma
from .normal_wishart import NormalWishart
from .wishart import Wishart

__all__ = [
    "Beta",
    "Categorical",
    "Dirichlet",
    "ExponentialFamily",
    "Gamma",
    "MultivariateNormal",
    "NormalGamma",
    "NormalWishart",
    "Wishart",
]
