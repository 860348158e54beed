"""Special functions for Numba kernels that SciPy does not provide to compiled code."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def digamma(x):
    """psi(x) for x > 0 by recurrence to x >= 6 and the asymptotic series."""
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    inverse = 1.0 / x
    inverse2 = inverse * inverse
    result += (np.log(x) - 0.5 * inverse
               - inverse2 * (1.0 / 12.0 - inverse2 * (1.0 / 120.0 - inverse2 * (1.0 / 252.0
                             - inverse2 * (1.0 / 240.0 - inverse2 / 132.0)))))
    return result
