"""Conjugate likelihoods for counts, binary, categorical and diagonal Gaussian data.

Each works as a mixture component likelihood (with an ``assignment``) or as
a plain likelihood for a model without latent variables.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from ..families import Beta, Dirichlet, Gamma, NormalGamma
from .errors import GraphError
from .factors_conjugate import ConjugateLikelihoodFactor

_LOG_2PI = float(np.log(2.0 * np.pi))


def _check_batch(factor, prior, expected: tuple, what: str) -> None:
    if prior.batch_shape != expected:
        raise GraphError(
            f"factor {factor.name!r}: the prior of {factor.params[0]!r} must have batch shape "
            f"{expected} ({what}), got {prior.batch_shape}"
        )


class PoissonFactor(ConjugateLikelihoodFactor):
    """x_id ~ Poisson(lambda_d) independently over columns d, with lambda_d ~ Gamma.

    The site message to Gamma's natural parameters (shape - 1, -rate) is
    ``(x, -1)``, and ln h(x) = -sum_d ln(x_d!).
    """

    prior_family = Gamma

    def check_data(self, X, priors):
        _check_batch(self, priors[0], (X.shape[1],), "one rate per column of the data")
        if np.any(X < 0) or np.any(X != np.round(X)):
            raise GraphError(f"factor {self.name!r}: observed {self.observed!r} must hold non-negative integer counts")

    def site_statistics(self, X, index):
        return (X.copy(), -np.ones_like(X))

    def log_base_measure(self, X):
        return -gammaln(X + 1.0).sum(axis=1)

    def shift_quantities(self, family, index):
        return {"rate": family.mean()}


class BernoulliFactor(ConjugateLikelihoodFactor):
    """x_id ~ Bernoulli(p_d) independently over columns d, with p_d ~ Beta.

    The site message to Beta's natural parameters (a - 1, b - 1) is ``(x, 1 - x)``.
    """

    prior_family = Beta

    def check_data(self, X, priors):
        _check_batch(self, priors[0], (X.shape[1],), "one probability per column of the data")
        if np.any((X != 0) & (X != 1)):
            raise GraphError(f"factor {self.name!r}: observed {self.observed!r} must hold only 0 and 1")

    def site_statistics(self, X, index):
        return (X.copy(), 1.0 - X)

    def log_base_measure(self, X):
        return np.zeros(X.shape[0])

    def shift_quantities(self, family, index):
        return {"probability": family.mean()}


class CategoricalDataFactor(ConjugateLikelihoodFactor):
    """x_id ~ Categorical(pi_d) independently over columns d, with pi_d ~ Dirichlet.

    The observed variable contains category codes 0, 1, ..., C_d - 1 in column
    d, and ``params`` names one Dirichlet variable per column, because
    columns may have different numbers of categories. The site message to
    column d's Dirichlet is the one-hot vector of x_id.
    """

    prior_family = Dirichlet

    def check_data(self, X, priors):
        if len(priors) != X.shape[1]:
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} has {X.shape[1]} columns but "
                f"{len(priors)} parameter variables are given; name one Dirichlet per column"
            )
        if np.any(X < 0) or np.any(X != np.round(X)):
            raise GraphError(
                f"factor {self.name!r}: observed {self.observed!r} must hold non-negative integer "
                f"category codes"
            )
        for column, (name, prior) in enumerate(zip(self.params, priors)):
            if prior.batch_shape != ():
                raise GraphError(
                    f"factor {self.name!r}: the prior of {name!r} must be one Dirichlet (per "
                    f"component with an assignment), got batch shape {prior.batch_shape}"
                )
            n_categories = prior.concentration.shape[-1]
            if X[:, column].max() >= n_categories:
                raise GraphError(
                    f"factor {self.name!r}: column {column} of {self.observed!r} has code "
                    f"{int(X[:, column].max())} but the prior of {name!r} has {n_categories} categories"
                )

    def site_statistics(self, X, index):
        codes = X[:, index].astype(np.int64)
        n_categories = self._categories[index]
        one_hot = np.zeros((X.shape[0], n_categories))
        one_hot[np.arange(X.shape[0]), codes] = 1.0
        return (one_hot,)

    def check(self, graph) -> None:
        self._categories = [graph.variables[name].prior.concentration.shape[-1] for name in self.params]
        super().check(graph)

    def log_base_measure(self, X):
        return np.zeros(X.shape[0])

    def shift_quantities(self, family, index):
        return {"probabilities": family.mean()}


class DiagonalGaussianFactor(ConjugateLikelihoodFactor):
    """x_id ~ N(mu_d, 1 / tau_d) independently over columns d, with (mu_d, tau_d) ~ NormalGamma.

    The prior has batch shape (D,) (per component: (K, D)) and event
    dimension 1. The site message is ``(x, -1 / 2, -x^2 / 2, 1 / 2)`` per
    column, and ln h(x) = -D ln(2 pi) / 2.
    """

    prior_family = NormalGamma

    def check_data(self, X, priors):
        prior = priors[0]
        _check_batch(self, prior, (X.shape[1],), "one Normal-Gamma per column of the data")
        if prior.dim != 1:
            raise GraphError(
                f"factor {self.name!r}: the prior of {self.params[0]!r} must be scalar (event "
                f"dimension 1) per column, got dimension {prior.dim}"
            )

    def site_statistics(self, X, index):
        return (
            X[:, :, None].copy(),
            np.full(X.shape + (1, 1), -0.5),
            -0.5 * X**2,
            np.full(X.shape, 0.5),
        )

    def log_base_measure(self, X):
        return np.full(X.shape[0], -0.5 * X.shape[1] * _LOG_2PI)

    def shift_quantities(self, family, index):
        return {"mean": family.mean[..., 0], "precision": family.expected_precision()}
