"""Products with the Jacobian of LDA's document updates (see ``fg_influence.influence.linear_response_lda``).

For document d with distinct words w (counts n_dw, word topics phi_dw) the
derivative of its messages n_dw phi_dw with respect to E[ln beta] is

    V_d = blockdiag_w(n_dw C_dw) + A_d Mid_d A_d^T,

with C_dw = diag(phi_dw) - phi_dw phi_dw^T, A_d the stack of the n_dw C_dw
and Mid_d a K x K matrix per document. A product V X = sum_d V_d X runs in
two passes that need no atomic updates: one over documents for the
K-vectors Mid_d A_d^T X, one over words for the rows of the result.

Each row (a distinct word of a document) lists only its active topics,
``topics[starts[r]:starts[r + 1]]`` with word-topic probabilities
``weights[...]``: a topic left out contributes at most its probability to
any entry of C_dw.

Vectors are stored word-major, X of shape (V, K, m): X[w, k, j] is entry
(k, w) of the j-th vector.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def document_terms(word_ids, counts, offsets, starts, topics, weights, middle, X, out):
    """out[d] = Mid_d sum_w n_dw C_dw X[w] for every document, shape (D, K, m).

    Parameters
    ----------
    word_ids : int64 array, shape (n_rows,)
    counts : float64 array, shape (n_rows,)
    offsets : int64 array, shape (D + 1,)
        Document d owns rows offsets[d]:offsets[d + 1].
    starts : int64 array, shape (n_rows + 1,)
    topics : int64 array, shape (n_active,)
    weights : float64 array, shape (n_active,)
    middle : float64 array, shape (D, K, K)
    X : float64 array, shape (V, K, m)
    out : float64 array, shape (D, K, m)
    """
    n_documents = offsets.shape[0] - 1
    k_count = middle.shape[1]
    m = X.shape[2]
    for d in prange(n_documents):
        total = np.zeros((k_count, m))
        dots = np.empty(m)
        used = np.zeros(k_count, dtype=np.bool_)
        for row in range(offsets[d], offsets[d + 1]):
            word = word_ids[row]
            n = counts[row]
            for j in range(m):
                dots[j] = 0.0
            for a in range(starts[row], starts[row + 1]):
                k = topics[a]
                p = weights[a]
                used[k] = True
                for j in range(m):
                    dots[j] += p * X[word, k, j]
            for a in range(starts[row], starts[row + 1]):
                k = topics[a]
                p = n * weights[a]
                for j in range(m):
                    total[k, j] += p * (X[word, k, j] - dots[j])
        # Only topics active in some row of the document enter total, and
        # only those are read back by word_terms.
        for k in range(k_count):
            for j in range(m):
                out[d, k, j] = 0.0
            if not used[k]:
                continue
            for l in range(k_count):
                if not used[l]:
                    continue
                value = middle[d, k, l]
                for j in range(m):
                    out[d, k, j] += value * total[l, j]


@njit(cache=True, parallel=True)
def word_terms(word_rows, word_offsets, row_documents, counts, starts, topics, weights, X, doc_terms, out):
    """out[w] = sum over rows r of word w of n_r C_r (X[w] + doc_terms[d_r]), shape (V, K, m).

    ``word_rows`` lists the rows sorted by word and ``word_offsets`` (V + 1)
    delimits each word's rows in it; ``row_documents`` (n_rows,) is each
    row's document.
    """
    n_words = word_offsets.shape[0] - 1
    k_count = X.shape[1]
    m = X.shape[2]
    for w in prange(n_words):
        dots = np.empty(m)
        for k in range(k_count):
            for j in range(m):
                out[w, k, j] = 0.0
        for position in range(word_offsets[w], word_offsets[w + 1]):
            row = word_rows[position]
            d = row_documents[row]
            n = counts[row]
            for j in range(m):
                dots[j] = 0.0
            for a in range(starts[row], starts[row + 1]):
                k = topics[a]
                p = weights[a]
                for j in range(m):
                    dots[j] += p * (X[w, k, j] + doc_terms[d, k, j])
            for a in range(starts[row], starts[row + 1]):
                k = topics[a]
                p = n * weights[a]
                for j in range(m):
                    out[w, k, j] += p * (X[w, k, j] + doc_terms[d, k, j] - dots[j])


# Elementwise steps of the products with L, L^T and of conjugate gradients,
# parallel over words or topics (NumPy would run them on one thread).


@njit(cache=True, parallel=True)
def weighted_word_sums(weights, X, out):
    """out[k, j] = sum_w weights[w, k] X[w, k, j], shape (K, m), with ``weights`` of shape (V, K)."""
    n_words, k_count, m = X.shape
    for k in prange(k_count):
        for j in range(m):
            out[k, j] = 0.0
        for w in range(n_words):
            weight = weights[w, k]
            for j in range(m):
                out[k, j] += weight * X[w, k, j]


@njit(cache=True, parallel=True)
def column_dots(A, B, out):
    """out[j] = sum_{w, k} A[w, k, j] B[w, k, j], shape (m,)."""
    n_words, k_count, m = A.shape
    partial = np.zeros((k_count, m))
    for k in prange(k_count):
        for w in range(n_words):
            for j in range(m):
                partial[k, j] += A[w, k, j] * B[w, k, j]
    for j in range(m):
        total = 0.0
        for k in range(k_count):
            total += partial[k, j]
        out[j] = total


@njit(cache=True, parallel=True)
def scale_and_shift(root, shift_weights, sums, coefficient, X, out):
    """out[w, k, j] = root[w, k] X[w, k, j] - coefficient[k] shift_weights[w, k] sums[k, j].

    With ``shift_weights`` all ones this is L x (``sums`` = v . x); with the
    scale v it is L^T y (``sums`` = 1 . y).
    """
    n_words, k_count, m = X.shape
    for w in prange(n_words):
        for k in range(k_count):
            r = root[w, k]
            s = coefficient[k] * shift_weights[w, k]
            for j in range(m):
                out[w, k, j] = r * X[w, k, j] - s * sums[k, j]


@njit(cache=True, parallel=True)
def conjugate_gradient_step(step, search, applied, x, residual):
    """x += step * search and residual -= step * applied, column by column."""
    n_words, k_count, m = x.shape
    for w in prange(n_words):
        for k in range(k_count):
            for j in range(m):
                x[w, k, j] += step[j] * search[w, k, j]
                residual[w, k, j] -= step[j] * applied[w, k, j]


@njit(cache=True, parallel=True)
def block_solve(inverse_blocks, X, out):
    """out[w] = inverse_blocks[w] @ X[w] for every word, shape (V, K, m)."""
    n_words, k_count, m = X.shape
    for w in prange(n_words):
        for k in range(k_count):
            for j in range(m):
                out[w, k, j] = 0.0
            for l in range(k_count):
                value = inverse_blocks[w, k, l]
                for j in range(m):
                    out[w, k, j] += value * X[w, l, j]


@njit(cache=True, parallel=True)
def next_direction(preconditioned, ratio, search):
    """search = preconditioned + ratio * search, column by column (in place)."""
    n_words, k_count, m = search.shape
    for w in prange(n_words):
        for k in range(k_count):
            for j in range(m):
                search[w, k, j] = preconditioned[w, k, j] + ratio[j] * search[w, k, j]
