"""Warnings and errors specific to fg_influence."""


class ConvergenceWarning(UserWarning):
    """CAVI stopped at ``max_iter`` before the relative ELBO change fell below ``tol``."""


class ImproperPosteriorError(ValueError):
    """Dividing site messages out of a posterior left an improper distribution."""


class ImproperDivisionWarning(UserWarning):
    """Some sites' divided posteriors are improper; their summaries are flagged."""
