"""Linear-response correction for latent Dirichlet allocation, one site per document.

Division removes document d's expected word counts from the topics with
every other document's block (topic proportions gamma and word topics phi)
held at its fitted value. Refitting without the document also moves the
other documents' word topics, which moves the topics further. This module
adds that response to first order, as
:mod:`fg_influence.influence.linear_response` does for mixtures.

Coordinates. g is the topics' concentration lambda (K x V, flattened topic
by topic: position k V + w), which is the topics' natural parameter plus 1.
E = E[ln beta] has dE = H dlambda with H block-diagonal over topics,

    H_k = diag(psi'(lambda_k)) - psi'(sum_w lambda_kw) 1 1^T,

the Hessian of the Dirichlet log-partition (symmetric positive definite).

Jacobian. One CAVI iteration runs every document's inner loop to its fixed
point, phi_dw = softmax(u_d + E[:, w]) with u_d = psi(gamma_d) -
psi(sum gamma_d) and gamma_d = alpha + sum_w n_dw phi_dw, and sets
lambda = eta + sum_d (n_dw phi_dwk). Differentiating the inner fixed point,
with C_dw = diag(phi_dw) - phi_dw phi_dw^T, M_d = sum_w n_dw C_dw and
Psi'_d = diag(psi'(gamma_d)) - psi'(sum gamma_d) 1 1^T,

    d gamma_d = (I - M_d Psi'_d)^-1 sum_w n_dw C_dw dE_w,
    d(n_dw phi_dw) = n_dw C_dw (dE_w + Psi'_d d gamma_d).

So J = dS/dg = V H with

    V = sum_d [blockdiag_w(n_dw C_dw) + A_d (Psi'_d^-1 - M_d)^-1 A_d^T],

where A_d stacks the n_dw C_dw of the document's words. M_d Psi'_d is the
Jacobian of the inner loop's update of gamma_d, so its fixed point is
stable exactly when Psi'_d^-1 - M_d is positive definite. Then every term
of V is positive semi-definite, and with H = L L^T, J is similar to the
symmetric positive semi-definite B = L^T V L. Each H_k is a diagonal minus
a rank-one matrix, so L has a closed form: with t = psi'(lambda_k),
s = psi'(sum lambda_k), v = t^-1/2 and a = s |v|^2 < 1,

    L_k = diag(t^1/2) (I - c v v^T),   c = s / (1 + sqrt(1 - a)),
    L_k^-T = diag(v) (I + c' v v^T),   c' = c / sqrt(1 - a).

Products. V x costs one pass over the documents' distinct words (two Numba
kernels in :mod:`fg_influence.kernels.lda_response`), about one sweep of
the inner loop, and H, L and L^-T cost O(K V). J is never formed densely
above DENSE_LIMIT coordinates; below it, the dense matrices are available
for checks.

All documents. Removing document d and linearising the fixed-point
equation gives delta_g_d = -(I - J)^-1 s_d, division (-s_d) plus the
response term. In the coordinates L^T g, with y_d = L^T s_d, the response
is -z_d with (I - B) z_d = B y_d, and the KL to second order,
|y_d + z_d|^2 / 2, gains y_d . z_d + |z_d|^2 / 2 over division's (which
is replaced by division's exact KL). Two routes compute z_d:

* up to DENSE_LIMIT coordinates, B is eigen-decomposed densely and, as for
  mixtures, the directions whose gain lambda / (1 - lambda) exceeds
  RANK_TOL are kept;
* above it, z_d is found for every document by conjugate gradients on
  I - B, in blocks of documents, preconditioned by the K x K block of
  I - B at each word. Keeping a few leading directions does not work
  there, because the response is spread over thousands of them: on the
  standard library's docstrings with K = 10 and 2,191 words, the leading
  300 eigenvalues of B all exceeded 0.63, and those 300 directions
  recovered only 29% of the response term.
"""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
from scipy import linalg
from scipy.sparse import linalg as sparse_linalg
from scipy.special import gammaln, polygamma, psi

from .._validation import check_site_indices
from ..graph.blocks import block_names
from ..graph.lda_factors import LDAFactor
from ..inference.posterior import Posterior
from ..kernels import lda_response as kernels
from ..kernels.lda import document_updates
from .linear_response import (  # noqa: F401  (the exception types are re-exported for callers)
    RANK_TOL,
    IllConditionedResponseWarning,
    SingularResponseError,
    check_conditioning,
)

__all__ = [
    "LDAResponseSystem",
    "LDALinearResponseSummaries",
    "all_document_summaries",
    "build_lda_response_system",
    "is_lda",
    "lda_factor",
    "newton_corrected_coordinates",
    "topic_kl",
]

#: Number of coordinates K V up to which B is formed and eigen-decomposed
#: densely (a 2000 x 2000 matrix is 32 MB). Above it the all-document pass
#: solves by conjugate gradients and the dense matrices are not offered.
DENSE_LIMIT = 2000

#: Relative residual |B y_d - (I - B) z_d| / |B y_d| at which a document's
#: conjugate-gradient solve stops. The error of z_d can reach the condition
#: number of I - B times this, but in practice it is far less: on 410
#: docstrings with 300 words and K = 5, the response term differed from the
#: dense solution by at most 1.4e-5 relative (8 iterations).
SOLVE_TOL = 1e-4

#: Conjugate-gradient iterations after which a solve is reported as not
#: converged.
MAX_SOLVE_ITER = 500

#: Word-topic probabilities phi_dwk below this value are left out of the
#: matrix-free products with V (not of the dense matrices). A left-out
#: topic changes each entry of n_dw C_dw by at most n_dw times this.
ACTIVE_PHI_TOL = 1e-10

#: Inner-loop settings for the document blocks at which J is evaluated:
#: the fitted topics' own fixed point, run much tighter than CAVI's
#: (``fg_influence.graph.lda_factors.INNER_TOL``), because J is the
#: derivative of that fixed point.
RESPONSE_INNER_TOL = 1e-12
RESPONSE_MAX_INNER = 20000

#: Floats per work array of the all-document pass (16 MB); documents are
#: processed in chunks of about CHUNK_FLOATS / (K V), between 8 and 256.
CHUNK_FLOATS = 2**21

#: Advice in the errors and warnings about I - J, for LDA.
ADVICE = {
    "singular": "CAVI on LDA can stop on a relative ELBO change while the topics still drift, so refit "
                "with a smaller tol (1e-10, say) and a larger max_iter; if that does not help, use fewer "
                "topics or a larger topic_word_prior, or use method='division'",
    "cause": "often two topics that share most of their words",
    "ill_conditioned": "use fewer topics or a larger topic_word_prior, or check the estimates against "
                       "exact refits",
}


# The model's factor.


def is_lda(posterior: Posterior) -> bool:
    """Return True when the graph contains an LDA factor."""
    return any(isinstance(f, LDAFactor) for f in posterior.graph.factors.values())


def lda_factor(posterior: Posterior) -> LDAFactor:
    """Return the ``LDAFactor`` of an LDA graph.

    Raises
    ------
    NotImplementedError
        If the graph is not LDA: one ``LDAFactor``, its block as the only
        block, no local categorical variable and no global beyond the topics.
    """
    graph = posterior.graph
    factors = [f for f in graph.factors.values() if isinstance(f, LDAFactor)]
    supported = len(factors) == 1 and not list(graph.variables_of_role("local"))
    if supported:
        factor = factors[0]
        globals_ = {v.name for v in graph.variables_of_role("global")}
        supported = (block_names(graph) == [factor.block] and globals_ == {factor.topics}
                     and len(graph.factors_of(factor.topics)) == 1)
    if not supported:
        raise NotImplementedError(
            f"the linear-response correction for latent Dirichlet allocation supports graphs with one "
            f"LDAFactor and nothing else (no other block, local variable or global); this graph has factors "
            f"{sorted(type(f).__name__ for f in graph.factors.values())} and blocks {block_names(graph)}. "
            f"Use method='division'"
        )
    return factors[0]


# The response system.


class LDAResponseSystem:
    """J = V H at a fitted LDA posterior, as exact matrix-free products.

    Vectors in g's coordinates have shape (..., K, V), like the topics'
    concentration. Dense matrices (only up to DENSE_LIMIT coordinates) use
    the flattened position k V + w.

    Attributes
    ----------
    topics : str
        Name of the topics' global variable.
    concentration : ndarray, shape (K, V)
        Fitted lambda, the coordinates g.
    prior_concentration : ndarray, shape (K, V)
    alpha : float
        Concentration of the documents' topic proportions.
    phi, gamma : ndarray, shape (n_rows, K) and (D, K)
        Document blocks at the fitted topics, from the inner loop run to
        RESPONSE_INNER_TOL. J is evaluated at these.
    fitted_phi : ndarray, shape (n_rows, K)
        The posterior's own word topics, from which the site messages (the
        ones division subtracts) are formed.
    middle : ndarray, shape (D, K, K)
        (Psi'_d^-1 - M_d)^-1 of each document.
    largest_eigenvalue : float
        Of J (equal to that of B).
    smallest_eigenvalue : float
        Of J when B was decomposed densely, else 0 (B is positive
        semi-definite).
    condition_number : float
        Of I - J, as (1 - smallest) / (1 - largest) eigenvalue.
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True):
        factor = lda_factor(posterior)
        graph = posterior.graph
        observed = graph.variables[factor.observed]
        self.topics = factor.topics
        self.concentration = np.array(posterior.globals[factor.topics].concentration, dtype=float)
        self.prior_concentration = np.broadcast_to(
            graph.variables[factor.topics].prior.concentration, self.concentration.shape).astype(float)
        self.alpha = factor.alpha
        self.word_ids = np.ascontiguousarray(observed.data[:, 0], dtype=np.int64)
        self.counts = np.ascontiguousarray(observed.data[:, 1], dtype=float)
        self.offsets = np.ascontiguousarray(observed.offsets, dtype=np.int64)
        self.row_documents = np.repeat(np.arange(self.n_documents, dtype=np.int64), np.diff(self.offsets))
        self.word_rows = np.argsort(self.word_ids, kind="stable").astype(np.int64)
        self.word_offsets = np.searchsorted(self.word_ids[self.word_rows],
                                            np.arange(self.n_words + 1)).astype(np.int64)
        self.fitted_phi = np.asarray(posterior.locals[factor.block].phi, dtype=float)

        # The topics' Hessian and its closed-form factor.
        lam = self.concentration
        self.trigamma = polygamma(1, lam)
        self.total_trigamma = polygamma(1, lam.sum(axis=1))
        self.scale = self.trigamma ** -0.5
        gap = np.sqrt(1.0 - self.total_trigamma * (self.scale ** 2).sum(axis=1))
        self.factor_coefficient = self.total_trigamma / (1.0 + gap)
        self.inverse_coefficient = self.factor_coefficient / gap

        # Document blocks at the fitted topics and their K x K middle matrices.
        self.gamma, self.phi = self._document_blocks()
        self.middle = self._middle_matrices()
        active = self.phi > ACTIVE_PHI_TOL
        self.active_starts = np.concatenate(([0], np.cumsum(active.sum(axis=1)))).astype(np.int64)
        self.active_topics = np.nonzero(active)[1].astype(np.int64)
        self.active_phi = np.ascontiguousarray(self.phi[active])
        self.largest_eigenvalue, self.smallest_eigenvalue = self._extreme_eigenvalues()
        self.condition_number = check_conditioning(self.largest_eigenvalue, self.smallest_eigenvalue, warn,
                                                   ADVICE)

    # Sizes

    @property
    def n_topics(self) -> int:
        return self.concentration.shape[0]

    @property
    def n_words(self) -> int:
        return self.concentration.shape[1]

    @property
    def n_documents(self) -> int:
        return self.offsets.size - 1

    @property
    def n_sites(self) -> int:
        return self.n_documents

    @property
    def size(self) -> int:
        """G = K V, the number of coordinates."""
        return self.concentration.size

    @property
    def coordinates(self) -> np.ndarray:
        """Fitted g = lambda, shape (K, V)."""
        return self.concentration

    @property
    def dense(self) -> bool:
        """Whether the problem is small enough for dense matrices (K V <= DENSE_LIMIT)."""
        return self.size <= DENSE_LIMIT

    # Construction steps

    def _document_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Run every document's inner loop at the fitted topics, from flat proportions as CAVI does."""
        k_count = self.n_topics
        lengths = np.add.reduceat(self.counts, self.offsets[:-1])
        start = np.repeat((self.alpha + lengths / k_count)[:, None], k_count, axis=1)
        expected_log = psi(self.concentration) - psi(self.concentration.sum(axis=1, keepdims=True))
        return document_updates(self.word_ids, self.counts, self.offsets, np.exp(expected_log), self.alpha,
                                np.ascontiguousarray(start), RESPONSE_MAX_INNER, RESPONSE_INNER_TOL)

    def _middle_matrices(self) -> np.ndarray:
        """(Psi'_d^-1 - M_d)^-1 per document; raise SingularResponseError where it is not positive definite."""
        k_count, gamma, phi = self.n_topics, self.gamma, self.phi
        weighted = self.counts[:, None] * phi
        m = np.zeros((self.n_documents, k_count, k_count))
        np.add.at(m, self.row_documents, -weighted[:, :, None] * phi[:, None, :])
        diagonal = np.arange(k_count)
        m[:, diagonal, diagonal] += np.add.reduceat(weighted, self.offsets[:-1], axis=0)

        # Psi'^-1 = diag(1 / t) + s (1 / t)(1 / t)^T / (1 - s sum 1 / t) (Sherman-Morrison).
        inverse_t = 1.0 / polygamma(1, gamma)
        total = polygamma(1, gamma.sum(axis=1))
        weight = total / (1.0 - total * inverse_t.sum(axis=1))
        matrix = weight[:, None, None] * inverse_t[:, :, None] * inverse_t[:, None, :] - m
        matrix[:, diagonal, diagonal] += inverse_t
        smallest = np.linalg.eigvalsh(matrix)[:, 0]
        unstable = np.flatnonzero(~(smallest > 0.0))
        if unstable.size:
            raise SingularResponseError(
                f"the topic proportions of {unstable.size} documents (first positions: "
                f"{unstable[:10].tolist()}) are not at a stable fixed point of the inner loop at the fitted "
                f"topics (smallest eigenvalue of Psi'^-1 - M: {smallest[unstable[0]]:.3g}), so their "
                f"response, and the linear-response correction, is undefined. Refit with a smaller tol; "
                f"if that does not help, use method='division'"
            )
        middle = np.linalg.inv(matrix)
        return 0.5 * (middle + np.swapaxes(middle, 1, 2))

    def _extreme_eigenvalues(self) -> tuple[float, float]:
        if self.dense:
            values = self._dense_spectrum[0]
            return float(values[-1]), float(values[0])
        size = self.size
        operator = sparse_linalg.LinearOperator(
            (size, size), dtype=float,
            matvec=lambda x: self.symmetric_product(x.reshape(self.concentration.shape)).reshape(-1))
        start = np.random.default_rng(0).standard_normal(size)
        try:
            value = sparse_linalg.eigsh(operator, k=1, which="LA", return_eigenvectors=False, tol=1e-8,
                                        v0=start, maxiter=20 * size)
        except sparse_linalg.ArpackNoConvergence as error:
            if not error.eigenvalues.size:
                raise
            value = error.eigenvalues
        return float(value[0]), 0.0

    # Products in word-major layout (V, K, m), used by the kernels.

    def _missing_information_words(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X)
        active = (self.active_starts, self.active_topics, self.active_phi)
        doc_terms = np.empty((self.n_documents, self.n_topics, X.shape[2]))
        kernels.document_terms(self.word_ids, self.counts, self.offsets, *active, self.middle, X, doc_terms)
        out = np.empty_like(X)
        kernels.word_terms(self.word_rows, self.word_offsets, self.row_documents, self.counts, *active, X,
                           doc_terms, out)
        return out

    @cached_property
    def _word_major(self) -> dict[str, np.ndarray]:
        return {
            "root": np.ascontiguousarray(np.sqrt(self.trigamma).T),
            "scale": np.ascontiguousarray(self.scale.T),
            "ones": np.ones((self.n_words, self.n_topics)),
            "coefficient": np.ascontiguousarray(self.factor_coefficient),
        }

    def _symmetric_words(self, X: np.ndarray) -> np.ndarray:
        """B X for X of shape (V, K, m)."""
        w = self._word_major
        X = np.ascontiguousarray(X)
        sums = np.empty((self.n_topics, X.shape[2]))
        # L x = t^1/2 x - c (v . x) 1, then L^T y = t^1/2 y - c v (1 . y).
        kernels.weighted_word_sums(w["scale"], X, sums)
        lower = np.empty_like(X)
        kernels.scale_and_shift(w["root"], w["ones"], sums, w["coefficient"], X, lower)
        middle = self._missing_information_words(lower)
        kernels.weighted_word_sums(w["ones"], middle, sums)
        kernels.scale_and_shift(w["root"], w["scale"], sums, w["coefficient"], middle, lower)
        return lower

    # Public products, x of shape (..., K, V).

    def _check_vectors(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim < 2 or x.shape[-2:] != self.concentration.shape:
            raise ValueError(f"x must have shape (..., {self.n_topics}, {self.n_words}) (topics, words), "
                             f"got {x.shape}")
        return x

    def _apply_words(self, function, x) -> np.ndarray:
        x = self._check_vectors(x)
        lead = x.shape[:-2]
        columns = x.reshape(-1, self.n_topics, self.n_words)
        result = function(np.ascontiguousarray(columns.transpose(2, 1, 0)))
        return np.ascontiguousarray(result.transpose(2, 1, 0)).reshape(lead + self.concentration.shape)

    def missing_information_product(self, x) -> np.ndarray:
        """V x, shape (..., K, V)."""
        return self._apply_words(self._missing_information_words, x)

    def hessian_product(self, x) -> np.ndarray:
        """H x = t x - s (sum_w x_kw) per topic, shape (..., K, V)."""
        x = self._check_vectors(x)
        return self.trigamma * x - self.total_trigamma[:, None] * x.sum(axis=-1, keepdims=True)

    def jacobian_product(self, x) -> np.ndarray:
        """J x = V H x, shape (..., K, V): the first-order change of one CAVI iteration's topics."""
        return self.missing_information_product(self.hessian_product(x))

    def symmetric_product(self, x) -> np.ndarray:
        """B x = L^T V L x, shape (..., K, V)."""
        return self._apply_words(self._symmetric_words, x)

    def cholesky_product(self, x) -> np.ndarray:
        """L x = t^1/2 x - c (v . x) per topic, shape (..., K, V)."""
        x = self._check_vectors(x)
        return (np.sqrt(self.trigamma) * x
                - self.factor_coefficient[:, None] * np.sum(self.scale * x, axis=-1, keepdims=True))

    def cholesky_transpose_product(self, x) -> np.ndarray:
        """L^T x = t^1/2 x - c v (sum_w x_kw) per topic, shape (..., K, V)."""
        x = self._check_vectors(x)
        return (np.sqrt(self.trigamma) * x
                - self.factor_coefficient[:, None] * self.scale * x.sum(axis=-1, keepdims=True))

    def cholesky_transpose_solve(self, x) -> np.ndarray:
        """L^-T x = v (x + c' v (v . x)) per topic, shape (..., K, V)."""
        x = self._check_vectors(x)
        return self.scale * (x + self.inverse_coefficient[:, None] * self.scale
                             * np.sum(self.scale * x, axis=-1, keepdims=True))

    # Dense matrices, for small problems.

    def _check_dense(self, what: str) -> None:
        if not self.dense:
            raise ValueError(
                f"the dense {what} has {self.size} x {self.size} entries (K V = {self.size} coordinates, "
                f"above DENSE_LIMIT = {DENSE_LIMIT}); use the matrix-free products such as "
                f"jacobian_product instead"
            )

    @cached_property
    def hessian(self) -> np.ndarray:
        """H, shape (G, G)."""
        self._check_dense("Hessian")
        return linalg.block_diag(*[np.diag(t) - s for t, s in zip(self.trigamma, self.total_trigamma)])

    @cached_property
    def cholesky(self) -> np.ndarray:
        """L with H = L L^T, shape (G, G); block k is diag(t^1/2) - c 1 v^T (not triangular)."""
        self._check_dense("factor of H")
        return linalg.block_diag(*[np.diag(np.sqrt(t)) - c * np.outer(np.ones_like(v), v)
                                   for t, c, v in zip(self.trigamma, self.factor_coefficient, self.scale)])

    def document_missing_information(self, document: int) -> np.ndarray:
        """V_d, document d's term of V, shape (G, G), assembled directly from its words."""
        self._check_dense("missing information")
        out = np.zeros((self.size, self.size))
        self._add_document_missing_information(document, out)
        return out

    def _add_document_missing_information(self, document: int, out: np.ndarray) -> None:
        k_count, n_words = self.n_topics, self.n_words
        rows = slice(self.offsets[document], self.offsets[document + 1])
        words, counts, phi = self.word_ids[rows], self.counts[rows], self.phi[rows]
        scaled = counts[:, None, None] * (phi[:, :, None] * np.eye(k_count)[None]
                                          - phi[:, :, None] * phi[:, None, :])
        cross = np.einsum("akm,bml->akbl", scaled @ self.middle[document], scaled)
        cross[np.arange(words.size), :, np.arange(words.size), :] += scaled
        # Position k V + w of each (word, topic) pair; a document's words are distinct.
        index = (np.arange(k_count)[None, :] * n_words + words[:, None]).reshape(-1)
        out[np.ix_(index, index)] += cross.reshape(words.size * k_count, words.size * k_count)

    @cached_property
    def missing_information(self) -> np.ndarray:
        """V = sum_d V_d, shape (G, G)."""
        self._check_dense("missing information")
        total = np.zeros((self.size, self.size))
        for document in range(self.n_documents):
            self._add_document_missing_information(document, total)
        return 0.5 * (total + total.T)

    @cached_property
    def jacobian(self) -> np.ndarray:
        """J = V H, shape (G, G)."""
        return self.missing_information @ self.hessian

    @cached_property
    def symmetric(self) -> np.ndarray:
        """B = L^T V L, shape (G, G)."""
        b = self.cholesky.T @ self.missing_information @ self.cholesky
        return 0.5 * (b + b.T)

    def site_jacobian(self, site: int) -> np.ndarray:
        """J_d = V_d H, document d's own term of J, shape (G, G)."""
        return self.document_missing_information(site) @ self.hessian

    # Messages and corrected coordinates.

    def site_messages(self, sites) -> np.ndarray:
        """Expected word counts s_d of the given documents (what division subtracts), shape (n, K, V)."""
        sites = np.asarray(sites, dtype=np.int64).reshape(-1)
        out = np.zeros((sites.size, self.n_words, self.n_topics))
        for position, site in enumerate(sites):
            rows = slice(self.offsets[site], self.offsets[site + 1])
            np.add.at(out[position], self.word_ids[rows], self.counts[rows, None] * self.fitted_phi[rows])
        return np.ascontiguousarray(out.transpose(0, 2, 1))

    def solve(self, vectors) -> np.ndarray:
        """Apply (I - J)^-1 = L^-T (I - B)^-1 L^T to each of ``vectors`` (n, K, V), shape (n, K, V)."""
        vectors = np.asarray(vectors, dtype=float).reshape((-1,) + self.concentration.shape)
        y = self.cholesky_transpose_product(vectors)
        if self.dense:
            inner = linalg.cho_solve(self._dense_factor, y.reshape(y.shape[0], -1).T).T
            inner = inner.reshape(y.shape)
        else:
            inner = y + self.response_directions(y)[0]
        return self.cholesky_transpose_solve(inner)

    @cached_property
    def _dense_factor(self):
        return linalg.cho_factor(np.eye(self.size) - self.symmetric, lower=True)

    def corrected_coordinates(self, sites) -> np.ndarray:
        """Return g - (I - J)^-1 s_d for each given document, shape (n, K, V)."""
        return self.coordinates[None] - self.solve(self.site_messages(sites))

    # The response of many documents at once, in the coordinates L^T g.

    @cached_property
    def _dense_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_dense("eigen-decomposition of B")
        return linalg.eigh(self.symmetric, driver="evd")

    @cached_property
    def eigen_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvectors (G, r) of B whose gain exceeds RANK_TOL, and their eigenvalues (r,); dense only."""
        values, vectors = self._dense_spectrum
        gains = values / np.maximum(1.0 - values, np.finfo(float).tiny)
        keep = np.flatnonzero(gains > RANK_TOL)
        return vectors[:, keep], values[keep]

    @cached_property
    def _preconditioner(self) -> np.ndarray:
        """(I - B_ww)^-1 for each word's K x K diagonal block of B, shape (V, K, K).

        B_ww is taken as T_w^1/2 V_ww T_w^1/2, without the rank-one terms of
        L that couple the words of a topic. Eigenvalues of I - B_ww below
        1e-3 are raised to 1e-3, so the preconditioner stays positive
        definite whatever the fit.
        """
        k_count = self.n_topics
        phi, counts = self.phi, self.counts
        scaled = counts[:, None, None] * (phi[:, :, None] * np.eye(k_count)[None] - phi[:, :, None] * phi[:, None, :])
        per_row = scaled + scaled @ self.middle[self.row_documents] @ scaled
        blocks = np.zeros((self.n_words, k_count, k_count))
        np.add.at(blocks, self.word_ids, per_row)
        root = np.sqrt(self.trigamma).T
        blocks = np.eye(k_count)[None] - root[:, :, None] * blocks * root[:, None, :]
        values, vectors = np.linalg.eigh(0.5 * (blocks + np.swapaxes(blocks, 1, 2)))
        values = np.maximum(values, 1e-3)
        return np.ascontiguousarray((vectors / values[:, None, :]) @ np.swapaxes(vectors, 1, 2))

    def response_directions(self, y: np.ndarray) -> tuple[np.ndarray, int]:
        """Solve (I - B) z = B y for each y (n, K, V); return z (n, K, V) and the iterations used.

        Dense problems use the kept eigen-directions (z = U diag(gain) U^T y,
        0 iterations). Larger ones use block conjugate gradients,
        preconditioned per word, to a relative residual of SOLVE_TOL.

        Warns
        -----
        IllConditionedResponseWarning
            If some solve has not converged after MAX_SOLVE_ITER iterations.
        """
        y = np.asarray(y, dtype=float)
        if self.dense:
            basis, values = self.eigen_directions
            flat = y.reshape(y.shape[0], -1)
            z = ((flat @ basis) * (values / (1.0 - values))) @ basis.T
            return z.reshape(y.shape), 0
        Y = np.ascontiguousarray(y.transpose(2, 1, 0))
        Z, iterations = self._conjugate_gradients(self._symmetric_words(Y))
        return np.ascontiguousarray(Z.transpose(2, 1, 0)), iterations

    def _conjugate_gradients(self, rhs: np.ndarray) -> tuple[np.ndarray, int]:
        """Solve (I - B) Z = rhs column by column, rhs of shape (V, K, m); converged columns drop out."""
        preconditioner = self._preconditioner
        solution = np.zeros_like(rhs)
        squares = np.empty(rhs.shape[2])
        kernels.column_dots(rhs, rhs, squares)
        target = SOLVE_TOL * np.sqrt(squares)
        live = np.arange(rhs.shape[2])
        x = np.zeros_like(rhs)
        residual = rhs.copy()
        search = np.empty_like(rhs)
        kernels.block_solve(preconditioner, residual, search)
        product = np.empty(live.size)
        kernels.column_dots(residual, search, product)
        for iteration in range(MAX_SOLVE_ITER + 1):
            squares = np.empty(live.size)
            kernels.column_dots(residual, residual, squares)
            done = np.sqrt(squares) <= target[live]
            if done.any():
                solution[:, :, live[done]] = x[:, :, done]
                keep = ~done
                live, product = live[keep], product[keep]
                x, residual, search = (np.ascontiguousarray(a[:, :, keep]) for a in (x, residual, search))
            if live.size == 0:
                return solution, iteration
            if iteration == MAX_SOLVE_ITER:
                break

            # One step: applied = (I - B) search, then the usual updates.
            applied = self._symmetric_words(search)
            np.subtract(search, applied, out=applied)
            curvature = np.empty(live.size)
            kernels.column_dots(search, applied, curvature)
            kernels.conjugate_gradient_step(product / curvature, search, applied, x, residual)
            preconditioned = applied
            kernels.block_solve(preconditioner, residual, preconditioned)
            new_product = np.empty(live.size)
            kernels.column_dots(residual, preconditioned, new_product)
            kernels.next_direction(preconditioned, new_product / product, search)
            product = new_product
        solution[:, :, live] = x
        squares = np.empty(live.size)
        kernels.column_dots(residual, residual, squares)
        remaining = np.sqrt(squares) / (target[live] / SOLVE_TOL)
        warnings.warn(
            f"the conjugate-gradient solves of the linear-response correction stopped after {MAX_SOLVE_ITER} "
            f"iterations with a relative residual of up to {remaining.max():.3g} (target {SOLVE_TOL:g}); "
            f"the largest eigenvalue of J is {self.largest_eigenvalue:.6g}. {ADVICE['ill_conditioned']}",
            IllConditionedResponseWarning,
            stacklevel=4,
        )
        return solution, MAX_SOLVE_ITER

    @property
    def chunk_size(self) -> int:
        """Documents per chunk of the all-document pass."""
        return int(np.clip(CHUNK_FLOATS // self.size, 8, 256))


def build_lda_response_system(posterior: Posterior, *, warn: bool = True) -> LDAResponseSystem:
    """Evaluate J at a fitted LDA posterior and check that I - J is invertible.

    Raises
    ------
    NotImplementedError
        If the graph is not LDA.
    SingularResponseError
        If J has an eigenvalue of at least 1 (the fit is not a stable CAVI
        fixed point), or some document's inner loop is not at a stable
        fixed point.

    Warns
    -----
    IllConditionedResponseWarning
        If the condition number of I - J exceeds CONDITION_WARN.
    """
    return LDAResponseSystem(posterior, warn=warn)


def newton_corrected_coordinates(system: LDAResponseSystem, site: int) -> np.ndarray:
    """Take one Newton step from the fit towards the fixed point without document d, shape (K, V).

    The fixed-point equation without d is F(g) = g - eta - S(g) + s_d(g) = 0.
    At the fit F = s_d and F' = I - (J - J_d), so the Newton step is
    g - (I - J + J_d)^-1 s_d = g - s_d - (I - J + J_d)^-1 (J - J_d) s_d: division
    plus a response term. The all-document estimate uses J in place of
    J - J_d. This solves a dense G x G system and is meant for checks on
    small problems.
    """
    site = int(check_site_indices([site], system.n_sites)[0])
    without = system.jacobian - system.site_jacobian(site)
    message = system.site_messages([site])[0].reshape(-1)
    step = np.linalg.solve(np.eye(system.size) - without, message)
    return system.coordinates - step.reshape(system.coordinates.shape)


# All-document summaries.


def dirichlet_rows_kl(fitted: np.ndarray, other: np.ndarray) -> np.ndarray:
    """KL(Dir(fitted_k) || Dir(other_k)) for each row k, batched over leading axes, shape (..., K)."""
    fitted_total = fitted.sum(axis=-1)
    other_total = other.sum(axis=-1)
    expected_log = psi(fitted) - psi(fitted_total)[..., None]
    return (gammaln(fitted_total) - gammaln(other_total)
            - np.sum(gammaln(fitted) - gammaln(other), axis=-1)
            + np.sum((fitted - other) * expected_log, axis=-1))


class LDALinearResponseSummaries:
    """Per-document summaries of the linear-response corrected topics, document axis first.

    Each document's KL is division's exact KL plus the response term's
    share to second order, y_d . z_d + |z_d|^2 / 2 in the coordinates L^T g
    (never negative), split between the topics by the coordinates of each.
    The estimate needs no corrected posterior, so it stays finite when the
    corrected concentration lambda - s_d - L^-T z_d has an entry at or
    below 0. Such documents are listed in ``nonpositive_concentration``:
    there the other documents' word topics respond too strongly for a
    first-order estimate, and exact refits gave KL values several times
    larger than either estimate. Division offers no predictive density and
    no shifts for LDA, and neither does this correction.

    Attributes
    ----------
    system : LDAResponseSystem
    kl_by_variable : dict of str to ndarray, shape (D,)
        0 for improper documents.
    kl_by_topic : ndarray, shape (D, K)
        0 for improper documents.
    improper : ndarray of bool, shape (D,)
        Documents whose divided posterior is improper (as for division).
    nonpositive_concentration : ndarray of bool, shape (D,)
    iterations : int
        Largest number of conjugate-gradient iterations over the chunks of
        documents (0 on the dense route).
    """

    def __init__(self, posterior: Posterior, *, warn: bool = True):
        self.posterior = posterior
        self.system = system = build_lda_response_system(posterior, warn=warn)
        factor = lda_factor(posterior)
        self.improper = np.zeros(system.n_documents, dtype=bool)
        self.kl_by_topic = factor.loo_kl_by_topic(posterior, self.improper)
        self.nonpositive_concentration = np.zeros(system.n_documents, dtype=bool)
        self.iterations = 0
        for start in range(0, system.n_documents, system.chunk_size):
            sites = np.arange(start, min(system.n_documents, start + system.chunk_size))
            self._add_response(sites)
        self.kl_by_topic = np.maximum(self.kl_by_topic, 0.0)
        self.kl_by_topic[self.improper] = 0.0
        self.kl_by_variable = {system.topics: self.kl_by_topic.sum(axis=1)}

    def _add_response(self, sites: np.ndarray) -> None:
        system = self.system
        messages = system.site_messages(sites)
        y = system.cholesky_transpose_product(messages)
        z, iterations = system.response_directions(y)
        self.iterations = max(self.iterations, iterations)
        self.kl_by_topic[sites] += np.sum(y * z + 0.5 * z * z, axis=2)
        corrected = system.coordinates[None] - messages - system.cholesky_transpose_solve(z)
        self.nonpositive_concentration[sites] = np.any(corrected <= 0.0, axis=(1, 2))

    def corrected_coordinates(self, sites) -> np.ndarray:
        """Return lambda - s_d - L^-T z_d, the corrected concentration of each given document, shape (n, K, V)."""
        sites = check_site_indices(sites, self.system.n_documents)
        messages = self.system.site_messages(sites)
        z, _ = self.system.response_directions(self.system.cholesky_transpose_product(messages))
        return self.system.coordinates[None] - messages - self.system.cholesky_transpose_solve(z)

    def exact_corrected_kl(self, sites) -> np.ndarray:
        """KL(q || Dir(corrected)) of the given documents evaluated exactly, shape (n,); NaN where improper.

        For checking the second-order KL of the all-document pass.
        """
        corrected = self.corrected_coordinates(sites)
        bad = np.any(corrected <= 0.0, axis=(1, 2))
        safe = np.where(bad[:, None, None], self.system.coordinates[None], corrected)
        values = dirichlet_rows_kl(self.system.coordinates[None], safe).sum(axis=1)
        values[bad] = np.nan
        return values

    @property
    def loo_log_predictive(self) -> np.ndarray:
        """Not offered for LDA: raises the ValueError that division raises."""
        from . import closed_form

        return closed_form.all_site_log_predictive(self.posterior, self.improper.copy())

    @property
    def shift_names(self) -> list[str]:
        return []

    @property
    def shifts(self) -> dict[str, np.ndarray]:
        return {}


def all_document_summaries(posterior: Posterior, *, warn: bool = True) -> LDALinearResponseSummaries:
    """Linear-response KL of every document of a fitted LDA model, in total and per topic."""
    return LDALinearResponseSummaries(posterior, warn=warn)


def topic_kl(result) -> np.ndarray:
    """KL(q(beta_k) || q(beta_k) without document d) of an LDA ``InfluenceResult``, shape (D, K).

    The values follow the result's method: division's closed form, or the
    linear-response correction's per-topic share. Improper documents give inf.
    """
    if result.method == "linear-response":
        values = result._response.kl_by_topic.copy()
    else:
        improper = result.improper.copy()
        values = lda_factor(result.posterior).loo_kl_by_topic(result.posterior, improper)
    values[result.improper] = np.inf
    return values
