"""Site messages, division, all-site summaries, group influence and exact refits."""

from .division import divide, divided_natural_params, posterior_kl, site_messages
from .exact import exact_kl, refit_without
from .groups import leave_group_out_kl
from .result import InfluenceResult

__all__ = [
    "InfluenceResult",
    "divide",
    "divided_natural_params",
    "exact_kl",
    "leave_group_out_kl",
    "posterior_kl",
    "refit_without",
    "site_messages",
]
