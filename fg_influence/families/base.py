"""Shared machinery for exponential families in natural-parameter form.

Every family here has density ``h(x) exp(<eta, T(x)> - A(eta))`` with a
constant base measure ``h``, so the entropy and the Kullback-Leibler
divergence follow from the log-partition ``A`` and the expected sufficient
statistics ``E[T] = grad A`` alone:

    H[p] = A(eta) - <eta, E_p[T]> - log h
    KL(p || q) = A(eta_q) - A(eta_p) - <eta_q - eta_p, E_p[T]>

Parameters are batched: every array carries the same leading batch shape,
followed by the event axes of that component.
"""

from __future__ import annotations

import numpy as np


class ExponentialFamily:
    """Base class for a batch of exponential-family distributions.

    Subclasses set ``event_ndims`` (the number of trailing event axes of each
    natural-parameter component) and implement ``natural_params``,
    ``from_natural``, ``log_partition`` and ``expected_stats``.
    """

    #: Number of trailing event axes of each natural-parameter component.
    event_ndims: tuple[int, ...] = ()

    #: Log of the constant base measure ``h``.
    log_base_measure: float = 0.0

    def natural_params(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    @classmethod
    def from_natural(cls, *params: np.ndarray) -> "ExponentialFamily":
        raise NotImplementedError

    def log_partition(self) -> np.ndarray:
        raise NotImplementedError

    def expected_stats(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    @property
    def batch_shape(self) -> tuple[int, ...]:
        first = self.natural_params()[0]
        return first.shape[: first.ndim - self.event_ndims[0]]

    def pair(self, left: tuple[np.ndarray, ...], right: tuple[np.ndarray, ...]) -> np.ndarray:
        """Sum the products of matching components over their event axes."""
        total = np.zeros(self.batch_shape)
        for a, b, ndim in zip(left, right, self.event_ndims):
            product = np.asarray(a) * np.asarray(b)
            if ndim:
                product = product.sum(axis=tuple(range(-ndim, 0)))
            total = total + product
        return total

    def entropy(self) -> np.ndarray:
        """Differential (or Shannon) entropy of each distribution in the batch."""
        inner = self.pair(self.natural_params(), self.expected_stats())
        return self.log_partition() - inner - self.log_base_measure

    def kl(self, other: "ExponentialFamily") -> np.ndarray:
        """KL(self || other) for each distribution in the batch."""
        if type(other) is not type(self):
            raise TypeError(
                f"kl needs two distributions of the same family, got "
                f"{type(self).__name__} and {type(other).__name__}"
            )
        difference = tuple(
            q - p for q, p in zip(other.natural_params(), self.natural_params())
        )
        value = (
            other.log_partition()
            - self.log_partition()
            - self.pair(difference, self.expected_stats())
        )
        # Rounding can leave a tiny negative value when the two coincide.
        return np.maximum(value, 0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={self.batch_shape})"
