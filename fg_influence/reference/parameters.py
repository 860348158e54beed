"""Point parameters and priors of a Gaussian mixture, and their flat coordinates.

The flat parameter vector theta used by the Newton influence function is

    theta = (pi_1, ..., pi_{K-1},  mu_1, vech(Lambda_1),  ...,  mu_K, vech(Lambda_K))

where pi_K = 1 - sum of the other weights (so steps stay on the simplex)
and vech(Lambda_k) lists the lower triangle of the precision matrix row by
row, diagonal included. A step along the free coordinate (a, b), a > b,
moves both Lambda_ab and Lambda_ba, so every step keeps Lambda symmetric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import as_float_array, check_real


@dataclass(frozen=True)
class MixturePrior:
    """Dirichlet and Normal-Wishart prior of a Gaussian mixture, in the same terms as
    :meth:`fg_influence.models.GaussianMixture.priors`.

    pi ~ Dirichlet(alpha0 * ones(K)), Lambda_k ~ Wishart(inv(covariance_prior), nu0),
    mu_k | Lambda_k ~ N(mean_prior, (beta0 Lambda_k)^-1).
    """

    weight_concentration_prior: float
    mean_precision_prior: float
    mean_prior: np.ndarray
    degrees_of_freedom_prior: float
    covariance_prior: np.ndarray

    @classmethod
    def from_dict(cls, priors: dict, dim: int) -> "MixturePrior":
        """Check and copy the dictionary returned by ``GaussianMixture.priors``."""
        alpha0 = check_real(priors["weight_concentration_prior"], "weight_concentration_prior", low=0.0)
        beta0 = check_real(priors["mean_precision_prior"], "mean_precision_prior", low=0.0)
        nu0 = check_real(priors["degrees_of_freedom_prior"], "degrees_of_freedom_prior", low=dim - 1.0)
        mean = as_float_array(priors["mean_prior"], "mean_prior", ndim=1, shape=(dim,))
        covariance = as_float_array(priors["covariance_prior"], "covariance_prior", ndim=2, shape=(dim, dim))
        if not np.allclose(covariance, covariance.T) or np.any(np.linalg.eigvalsh(covariance) <= 0):
            raise ValueError(
                "covariance_prior must be a symmetric positive definite (D, D) matrix; pass, for "
                "example, a scaled identity"
            )
        return cls(alpha0, beta0, mean, nu0, 0.5 * (covariance + covariance.T))

    @property
    def dim(self) -> int:
        return self.mean_prior.size


@dataclass(frozen=True)
class MixtureParameters:
    """A point estimate of a Gaussian mixture.

    Attributes
    ----------
    weights : ndarray, shape (K,)
    means : ndarray, shape (K, D)
    precisions : ndarray, shape (K, D, D)
        Symmetric positive definite precision matrices Lambda_k.
    """

    weights: np.ndarray
    means: np.ndarray
    precisions: np.ndarray

    @property
    def n_components(self) -> int:
        return self.weights.size

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covariances(self) -> np.ndarray:
        return np.linalg.inv(self.precisions)

    def to_vector(self) -> np.ndarray:
        """The flat coordinates theta, shape (P,) with P = K - 1 + K (D + D (D + 1) / 2)."""
        rows, cols = np.tril_indices(self.dim)
        blocks = np.concatenate([self.means, self.precisions[:, rows, cols]], axis=1)
        return np.concatenate([self.weights[:-1], blocks.ravel()])

    @classmethod
    def from_vector(cls, theta: np.ndarray, n_components: int, dim: int) -> "MixtureParameters":
        """Inverse of :meth:`to_vector`."""
        k, d = n_components, dim
        weights = np.append(theta[: k - 1], 1.0 - theta[: k - 1].sum())
        blocks = theta[k - 1:].reshape(k, block_size(d))
        rows, cols = np.tril_indices(d)
        precisions = np.zeros((k, d, d), dtype=theta.dtype)
        precisions[:, rows, cols] = blocks[:, d:]
        precisions[:, cols, rows] = blocks[:, d:]
        return cls(weights, blocks[:, :d].copy(), precisions)


def block_size(dim: int) -> int:
    """Number of free coordinates of one component: D mean entries and D (D + 1) / 2 precision entries."""
    return dim + dim * (dim + 1) // 2


def n_parameters(n_components: int, dim: int) -> int:
    return n_components - 1 + n_components * block_size(dim)


def symmetric_basis(dim: int) -> np.ndarray:
    """Matrices E_p with dLambda = sum_p E_p dtheta_p, shape (D (D + 1) / 2, D, D).

    E_p has ones at (a, b) and (b, a) for the lower-triangle pair p = (a, b).
    """
    rows, cols = np.tril_indices(dim)
    basis = np.zeros((rows.size, dim, dim))
    basis[np.arange(rows.size), rows, cols] = 1.0
    basis[np.arange(rows.size), cols, rows] = 1.0
    return basis


def to_free_gradient(matrix_gradient: np.ndarray) -> np.ndarray:
    """Map a symmetric matrix gradient dF/dLambda (entries treated as independent) to free coordinates.

    The free coordinate (a, b), a > b, moves two entries, so its derivative is
    2 G_ab; a diagonal coordinate gets G_aa. Leading axes are batch axes.
    """
    dim = matrix_gradient.shape[-1]
    rows, cols = np.tril_indices(dim)
    factor = np.where(rows == cols, 1.0, 2.0)
    return matrix_gradient[..., rows, cols] * factor


def check_parameters(parameters: MixtureParameters, prior: MixturePrior) -> None:
    """Raise ValueError unless the parameters form a valid mixture matching the prior's dimension."""
    if not isinstance(parameters, MixtureParameters):
        raise TypeError(f"parameters must be a MixtureParameters, got {type(parameters).__name__}")
    if parameters.dim != prior.dim:
        raise ValueError(
            f"parameters have dimension {parameters.dim} but the prior has dimension {prior.dim}; "
            f"build both for the same data"
        )
    if np.any(parameters.weights <= 0) or not np.isclose(parameters.weights.sum(), 1.0):
        raise ValueError(
            f"weights must be positive and sum to 1, got {parameters.weights}; the weights' mode "
            f"must lie inside the simplex for the Newton influence function to be defined"
        )
    eigenvalues = np.linalg.eigvalsh(parameters.precisions)
    if np.any(eigenvalues <= 0):
        raise ValueError("every precision matrix must be positive definite; got a non-positive eigenvalue")
