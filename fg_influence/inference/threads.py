"""Thread count of the Numba kernels, set for the duration of a call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba


def check_n_jobs(n_jobs) -> int:
    """Resolve ``n_jobs`` to a thread count: None means every Numba thread (NUMBA_NUM_THREADS).

    Raises
    ------
    TypeError
        When ``n_jobs`` is neither None nor an integer.
    ValueError
        When ``n_jobs`` is outside 1 .. NUMBA_NUM_THREADS.
    """
    available = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return available
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        raise TypeError(f"n_jobs must be None or an integer, got {type(n_jobs).__name__} {n_jobs!r}")
    if not 1 <= n_jobs <= available:
        raise ValueError(
            f"n_jobs must be between 1 and NUMBA_NUM_THREADS = {available}, got {n_jobs}; pass None "
            f"to use all {available} threads, or raise NUMBA_NUM_THREADS before starting Python"
        )
    return n_jobs


@contextmanager
def numba_threads(n_jobs) -> Iterator[int]:
    """Run the enclosed kernels on ``n_jobs`` threads and restore the previous count afterwards.

    Results do not depend on the count: the kernels reduce fixed-size row
    blocks in block order.
    """
    count = check_n_jobs(n_jobs)
    previous = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield count
    finally:
        numba.set_num_threads(previous)
