"""Leave-one-out influence diagnostics for latent variable models fitted by variational Bayes.

Build a conjugate-exponential factor graph (:mod:`fg_influence.graph`) or use
a ready-made model (:mod:`fg_influence.models`), fit it by coordinate-ascent
variational inference (:mod:`fg_influence.inference`), then divide each
site's message out of the global posterior to see which examples move the
model most (:mod:`fg_influence.influence`).
"""

__version__ = "0.1.0.dev0"

from .exceptions import (ConvergenceWarning, EmptyComponentWarning, ImproperDivisionWarning, ImproperPosteriorError,
                         OtherOptimumWarning)
from .models import GaussianMixture

__all__ = [
    "ConvergenceWarning",
    "EmptyComponentWarning",
    "GaussianMixture",
    "ImproperDivisionWarning",
    "ImproperPosteriorError",
    "OtherOptimumWarning",
    "__version__",
]
