"""Errors raised when a factor graph is built or validated."""


class GraphError(ValueError):
    """A factor graph is malformed: unknown nodes, plate mismatches, cycles,
    non-conjugate wiring or unobserved leaves."""
