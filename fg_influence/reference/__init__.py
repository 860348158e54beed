"""Reference methods for checking division-based influence on Gaussian mixtures.

MAP estimation by EM, exact leave-out EM refits, EM-influence (Zhu and Lee
2001), the Newton influence function with the exact Hessian built by the
missing-information principle (Louis 1982), and a comparison of these with
variational division on the same data.
"""

from .compare import MethodComparison, compare_methods
from .influence import (
    em_influence, influence_function, influence_on_test_loss, missing_information_correction, self_influence,
    unpack_shifts,
)
from .map_em import MapFit, exact_shifts, fit_map_em, m_step, refit_without
from .mixture_loss import (
    complete_hessian, complete_scores, finite_difference_hessian, gradient, hessian, log_prior, loss,
    missing_information, natural_scales, responsibilities, site_gradients,
)
from .parameters import MixtureParameters, MixturePrior

__all__ = [
    "MapFit", "MethodComparison", "MixtureParameters", "MixturePrior", "compare_methods", "complete_hessian",
    "complete_scores", "em_influence", "exact_shifts", "finite_difference_hessian", "fit_map_em", "gradient",
    "hessian", "influence_function", "influence_on_test_loss", "log_prior", "loss", "m_step",
    "missing_information", "missing_information_correction", "natural_scales", "refit_without",
    "responsibilities", "self_influence", "site_gradients", "unpack_shifts",
]
