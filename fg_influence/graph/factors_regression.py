"""Gaussian linear regression likelihood with a Normal-Gamma prior on (coefficients, noise precision)."""

from __future__ import annotations

import numpy as np

from ..families import NormalGamma
from .errors import GraphError
from .factors_conjugate import ConjugateLikelihoodFactor

_LOG_2PI = float(np.log(2.0 * np.pi))


class LinearRegressionFactor(ConjugateLikelihoodFactor):
    """y_i ~ N(x_i^T w, 1 / tau), with (w, tau) ~ NormalGamma.

    The observed variable holds the design and the response side by side:
    row i is ``(x_i1, ..., x_iD, y_i)``, so removing a site removes its
    covariates with it. The design is conditioned on, not modelled. With an
    ``assignment`` this is a mixture of regressions: y_i | z_i = k ~
    N(x_i^T w_k, 1 / tau_k), each component with its own Normal-Gamma.

    The site message is ``(y x, -x x^T / 2, -y^2 / 2, 1 / 2)``.
    """

    prior_family = NormalGamma

    def check_data(self, X, priors):
        (prior,) = priors
        if prior.batch_shape != ():
            raise GraphError(
                f"factor {self.name!r}: the prior of {self.params[0]!r} must hold one Normal-Gamma "
                f"(per component with an assignment), got batch shape {prior.batch_shape}"
            )
        if X.shape[1] != prior.dim + 1:
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} must have D + 1 = {prior.dim + 1} "
                f"columns (the design, then the response) to match the prior of {self.params[0]!r}, "
                f"got {X.shape[1]}"
            )

    def site_statistics(self, X, index):
        design, response = X[:, :-1], X[:, -1]
        n = X.shape[0]
        return (
            response[:, None] * design,
            -0.5 * design[:, :, None] * design[:, None, :],
            -0.5 * response**2,
            np.full(n, 0.5),
        )

    def log_base_measure(self, X):
        return np.full(X.shape[0], -0.5 * _LOG_2PI)

    def shift_quantities(self, family, index):
        return {"coef": family.mean, "noise_precision": family.expected_precision()}
