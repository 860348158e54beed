"""Ready-made models built on the factor-graph API."""

from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
