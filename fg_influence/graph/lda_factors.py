"""Latent Dirichlet allocation: one site per document, its topic proportions and word topics as a block.

For document d with word counts n_dw:

    beta_k ~ Dirichlet(eta)                 (global, a (K, V) batch)
    theta_d ~ Dirichlet(alpha)              (local)
    z_dn | theta_d ~ Categorical(theta_d),  w_dn | z_dn = k ~ Categorical(beta_k)

Under q(beta) prod_d q(theta_d) prod_n q(z_dn) the document's block (gamma_d
for q(theta_d) and phi_dw for its distinct words) is found by the inner
loop of Blei, Ng and Jordan (2003) run to convergence, and its message to
topic k is the expected count sum_w n_dw phi_dwk at each word.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, psi

from ..families import Dirichlet
from ..kernels.lda import document_updates
from .blocks import BlockState, LocalBlock, RaggedObservedVariable, segment_sum
from .errors import GraphError
from .factors import Factor
from .nodes import GlobalVariable

#: Inner-loop settings: sweeps per document and mean absolute change of gamma.
MAX_INNER = 200
INNER_TOL = 1e-8


class LDAFactor(Factor):
    """Words of each document given its topic proportions and the topics.

    The observed variable is ragged with one row per distinct word of a
    document, columns (word index, count). The factor owns the document
    block ``block``.
    """

    def __init__(self, name: str, observed: str, block: str, topics: str, alpha: float):
        self.name = name
        self.observed = observed
        self.block = block
        self.topics = topics
        self.alpha = float(alpha)

    def parents(self):
        return (self.topics, self.block)

    def children(self):
        return (self.observed,)

    def check(self, graph) -> None:
        block = self._node(graph, self.block, LocalBlock, "a local block")
        if block.owner != self.name:
            raise GraphError(f"factor {self.name!r}: block {self.block!r} must be declared with "
                             f"owner={self.name!r}")
        observed = self._node(graph, self.observed, RaggedObservedVariable,
                              "a ragged observed variable (add_ragged_observed)")
        topics = self._node(graph, self.topics, GlobalVariable, "a global variable")
        if not isinstance(topics.prior, Dirichlet) or topics.prior.concentration.ndim != 2:
            raise GraphError(f"factor {self.name!r}: the topics {self.topics!r} need a (K, V) batch of "
                             f"Dirichlet priors")
        n_topics, n_words = topics.prior.concentration.shape
        if observed.data.shape[1] != 2:
            raise GraphError(f"factor {self.name!r}: observed {self.observed!r} must have columns "
                             f"(word index, count), got {observed.data.shape[1]} columns")
        check_word_counts(observed.data[:, 0], observed.data[:, 1], n_words)

    # Block update

    def _arrays(self, state):
        variable = state.graph.variables[self.observed]
        return (variable.data[:, 0].astype(np.int64), variable.data[:, 1].copy(), variable.offsets)

    def _elog_beta(self, state):
        posterior = state.globals.get(self.topics)
        topics = state.graph.variables[self.topics].prior if posterior is None else posterior
        return topics.expected_log()

    def update_block(self, name, state):
        word_ids, counts, offsets = self._arrays(state)
        # Each E-step starts the documents from flat proportions, as in Blei,
        # Ng and Jordan (2003); starting from the previous gamma keeps
        # documents locked in their first topics.
        lengths = segment_sum(counts, offsets)
        n_topics = state.locals[self.block].gamma.shape[1]
        start = np.repeat((self.alpha + lengths / n_topics)[:, None], n_topics, axis=1)
        gamma, phi = document_updates(word_ids, counts, offsets, np.exp(self._elog_beta(state)),
                                      self.alpha, np.ascontiguousarray(start), MAX_INNER, INNER_TOL)
        block = BlockState({"gamma": gamma}, {"phi": phi}, offsets)
        return block, self._site_elbo(state, block)

    def block_site_elbo(self, name, state):
        return self._site_elbo(state, state.locals[self.block])

    def _site_elbo(self, state, block) -> np.ndarray:
        word_ids, counts, offsets = self._arrays(state)
        gamma, phi = block.gamma, block.phi
        n_topics = gamma.shape[1]
        elog_theta = psi(gamma) - psi(gamma.sum(axis=1, keepdims=True))
        proportions = (gammaln(n_topics * self.alpha) - n_topics * gammaln(self.alpha)
                       + np.sum((self.alpha - gamma) * elog_theta + gammaln(gamma), axis=1)
                       - gammaln(gamma.sum(axis=1)))
        documents = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_phi = np.where(phi > 0, np.log(np.where(phi > 0, phi, 1.0)), 0.0)
        per_word = np.sum(phi * (elog_theta[documents] + self._elog_beta(state)[:, word_ids].T - log_phi),
                          axis=1)
        return proportions + segment_sum(counts * per_word, offsets)

    def initial_block(self, name, graph, data, rng) -> BlockState:
        """Put every word of a document in one random topic, which breaks the symmetry between topics.

        Spreading each word over all topics at random would give every topic
        nearly the corpus's word frequencies, a near-symmetric start that
        CAVI leaves only slowly.
        """
        variable = graph.variables[self.observed]
        n_topics = graph.variables[self.topics].prior.concentration.shape[0]
        n_documents = variable.offsets.size - 1
        labels = rng.integers(0, n_topics, size=n_documents)
        phi = np.eye(n_topics)[np.repeat(labels, variable.lengths)]
        gamma = self.alpha + segment_sum(variable.data[:, 1:2] * phi, variable.offsets)
        return BlockState({"gamma": gamma}, {"phi": phi}, variable.offsets)

    # Messages to the topics

    def message(self, target, state):
        word_ids, counts, _ = self._arrays(state)
        phi = state.locals[self.block].phi
        n_topics, n_words = state.graph.variables[self.topics].prior.concentration.shape
        total = np.zeros((n_words, n_topics))
        np.add.at(total, word_ids, counts[:, None] * phi)
        return (total.T,)

    def site_messages(self, target, state, sites):
        word_ids, counts, offsets = self._arrays(state)
        phi = state.locals[self.block].phi
        n_topics, n_words = state.graph.variables[self.topics].prior.concentration.shape
        sites = np.asarray(sites)
        result = np.zeros((sites.size, n_words, n_topics))
        for position, site in enumerate(sites):
            rows = slice(offsets[site], offsets[site + 1])
            np.add.at(result[position], word_ids[rows], counts[rows, None] * phi[rows])
        return (np.swapaxes(result, 1, 2),)

    def loo_kl_by_topic(self, state, improper: np.ndarray) -> np.ndarray:
        """KL(q(beta_k) || q(beta_k) without document d) for every document and topic, shape (D, K).

        Removing a document lowers the concentrations a_kw of its words
        only, so with b = a - m the Dirichlet KL reduces to sums over the
        document's distinct words:

            lnG(A_k) - lnG(A_k - M_k) + sum_w [lnG(b_kw) - lnG(a_kw) + m_kw (psi(a_kw) - psi(A_k))]

        with A_k = sum_w a_kw and M_k = sum_w m_kw. Documents that leave a
        concentration at or below 0 are flagged in ``improper`` (KL 0).
        """
        word_ids, counts, offsets = self._arrays(state)
        phi = state.locals[self.block].phi
        concentration = state.globals[self.topics].concentration
        totals = concentration.sum(axis=1)
        fitted = concentration[:, word_ids].T
        removed = counts[:, None] * phi
        divided = fitted - removed
        bad_rows = np.any(divided <= 0, axis=1)
        if bad_rows.any():
            improper |= segment_sum(bad_rows.astype(float), offsets) > 0
        divided = np.where(divided > 0, divided, 1.0)
        per_word = gammaln(divided) - gammaln(fitted) + removed * (psi(fitted) - psi(totals)[None, :])
        removed_total = segment_sum(removed, offsets)
        remaining = np.maximum(totals[None, :] - removed_total, 1e-300)
        values = segment_sum(per_word, offsets) + gammaln(totals)[None, :] - gammaln(remaining)
        values = np.maximum(values, 0.0)
        values[improper] = 0.0
        return values

    def loo_kl(self, target, state, improper):
        return self.loo_kl_by_topic(state, improper).sum(axis=1)


def check_word_counts(word_ids: np.ndarray, counts: np.ndarray, n_words: int) -> None:
    """Raise ValueError unless word indices are integers in [0, n_words) and counts positive integers."""
    if np.any(word_ids != np.round(word_ids)) or np.any(word_ids < 0):
        raise ValueError("word indices must be non-negative integers")
    if np.any(word_ids >= n_words):
        bad = int(word_ids.max())
        raise ValueError(
            f"word index {bad} is beyond the vocabulary of {n_words} words (indices 0 to {n_words - 1}); "
            f"build the vocabulary from every document or drop unknown words"
        )
    if np.any(counts < 0):
        raise ValueError(f"word counts must be non-negative, got {counts[counts < 0][:5].tolist()}")
    if np.any(counts != np.round(counts)) or np.any(counts == 0):
        raise ValueError("word counts must be positive integers (store only the words a document contains)")
