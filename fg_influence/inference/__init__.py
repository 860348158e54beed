"""Coordinate-ascent variational inference on factor graphs."""

from .cavi import compute_elbo, fit_cavi
from .posterior import Posterior

__all__ = ["Posterior", "compute_elbo", "fit_cavi"]
