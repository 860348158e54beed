"""Numba kernels on plain float64 arrays.

Kernels know nothing of graphs or families: they take contiguous float64
arrays, do no input checking and are compiled with ``cache=True``. The
Python layer validates input, chooses thread counts and raises warnings.
"""
