"""Linear-response correction for the hidden Markov model (one site per sequence).

Not implemented yet: :func:`all_sequence_summaries` raises NotImplementedError.
"""

from __future__ import annotations

from ..graph.hmm_factors import HiddenMarkovFactor
from ..inference.posterior import Posterior


def is_hidden_markov(posterior: Posterior) -> bool:
    """True when the graph holds a hidden Markov factor."""
    return any(isinstance(f, HiddenMarkovFactor) for f in posterior.graph.factors.values())


def all_sequence_summaries(posterior: Posterior, *, warn: bool = True):
    """Linear-response summaries of every sequence of a fitted hidden Markov model."""
    raise NotImplementedError(
        "the linear-response correction is not available for the hidden Markov model; "
        "use method='division'"
    )
