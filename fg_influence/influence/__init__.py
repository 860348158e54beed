"""Site messages, division, all-site summaries and exact refits."""

from .division import divide, divided_natural_params, posterior_kl, site_messages
from .exact import exact_kl, refit_without
from .result import InfluenceResult

__all__ = [
    "InfluenceResult",
    "divide",
    "divided_natural_params",
    "exact_kl",
    "posterior_kl",
    "refit_without",
    "site_messages",
]
