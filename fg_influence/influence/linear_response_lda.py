"""Linear-response correction for latent Dirichlet allocation (one site per document).

Not implemented yet: :func:`all_document_summaries` raises NotImplementedError.
"""

from __future__ import annotations

from ..graph.lda_factors import LDAFactor
from ..inference.posterior import Posterior


def is_lda(posterior: Posterior) -> bool:
    """True when the graph holds an LDA factor."""
    return any(isinstance(f, LDAFactor) for f in posterior.graph.factors.values())


def all_document_summaries(posterior: Posterior, *, warn: bool = True):
    """Linear-response summaries of every document of a fitted LDA model."""
    raise NotImplementedError(
        "the linear-response correction is not available for latent Dirichlet allocation; "
        "use method='division'"
    )
