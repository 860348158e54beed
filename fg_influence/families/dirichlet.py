"""Dirichlet distribution over the probability simplex."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, polygamma, psi

from .._validation import as_float_array, check_int, check_positive
from .base import ExponentialFamily


class Dirichlet(ExponentialFamily):
    """Batch of Dirichlet distributions Dir(pi | alpha).

    Natural parameter ``alpha - 1`` with sufficient statistic ``ln pi``;
    the log-partition is ``sum_k ln Gamma(alpha_k) - ln Gamma(sum_k alpha_k)``.

    Parameters
    ----------
    concentration : array_like, shape (..., K)
        Positive concentrations alpha, K >= 1.
    """

    event_ndims = (1,)

    def __init__(self, concentration):
        concentration = as_float_array(concentration, "concentration")
        if concentration.ndim < 1 or concentration.shape[-1] < 1:
            raise ValueError(
                f"concentration must have a last axis of at least one category, "
                f"got shape {concentration.shape}"
            )
        check_positive(concentration, "concentration")
        self.concentration = concentration

    def natural_params(self):
        return (self.concentration - 1.0,)

    @classmethod
    def from_natural(cls, eta):
        return cls(np.asarray(eta, dtype=float) + 1.0)

    def log_partition(self):
        alpha = self.concentration
        return gammaln(alpha).sum(axis=-1) - gammaln(alpha.sum(axis=-1))

    def expected_stats(self):
        alpha = self.concentration
        return (psi(alpha) - psi(alpha.sum(axis=-1, keepdims=True)),)

    def expected_log(self) -> np.ndarray:
        """E[ln pi_k], shape (..., K)."""
        return self.expected_stats()[0]

    def polygammas(self, order: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Return psi^(n) at each alpha_k, shape (order + 1, K), and at sum alpha, shape (order + 1,).

        Rows are n = 0..order (psi^(0) = psi), for one Dirichlet. These are
        the per-posterior inputs of kernels.loo.dirichlet_downdate_kl.
        """
        order = check_int(order, "order", minimum=0)
        alpha = self.concentration
        if alpha.ndim != 1:
            raise ValueError(
                f"polygammas needs one Dirichlet (concentration of shape (K,)), got shape {alpha.shape}; "
                f"call it on each Dirichlet of a batch"
            )
        orders = np.arange(order + 1)[:, None]
        total = np.array([alpha.sum()])
        return polygamma(orders, alpha[None, :]), polygamma(orders, total[None, :])[:, 0]

    def mean(self) -> np.ndarray:
        return self.concentration / self.concentration.sum(axis=-1, keepdims=True)

    def mode(self) -> np.ndarray:
        """(alpha_k - 1) / (sum alpha - K); defined only when every alpha_k > 1."""
        alpha = self.concentration
        if np.any(alpha <= 1.0):
            raise ValueError(
                "the Dirichlet mode is defined only when every concentration exceeds 1, "
                f"got minimum {alpha.min():.6g}; use mean() instead"
            )
        return (alpha - 1.0) / (alpha.sum(axis=-1, keepdims=True) - alpha.shape[-1])
