"""Warnings and errors specific to fg_influence."""


class ConvergenceWarning(UserWarning):
    """CAVI stopped at ``max_iter`` before the relative ELBO change fell below ``tol``."""


class EmptyComponentWarning(UserWarning):
    """A fitted mixture component has an expected count below one row."""


class OtherOptimumWarning(UserWarning):
    """Some exact refits left the fit's local optimum, so their exact KL measures the jump."""


class ImproperPosteriorError(ValueError):
    """Dividing site messages out of a posterior left an improper distribution."""


class ImproperDivisionWarning(UserWarning):
    """Some sites' divided posteriors are improper; their summaries are flagged."""
