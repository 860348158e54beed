"""Accuracy and cost of division and of the linear-response correction on LDA.

Accuracy. Fits ``LatentDirichletAllocation`` to small corpora of the
standard library's docstrings (``load_stdlib_docstrings`` with a cut
vocabulary and every k-th document, as ``fg-influence lda --vocabulary V
--max-documents N`` does) to a relative ELBO tolerance of 1e-12, refits it
without each document (warm-started CAVI to the library's tolerance of
1e-12), and compares the KL(q || q without the document) of both
estimates with the refits: Spearman rank correlation, overlap of the ten
documents with the largest KL, and median relative error. It also prints
the largest eigenvalue of J and how many documents' corrected
concentration has an entry at or below 0 (where the first-order estimate
is least reliable).

Cost. At the size of ``fg-influence lda``'s defaults (every document, up to
3,000 words, K = 10, fitted to the tolerance that the command uses with
``--method linear-response``, 1e-10), times in the same process one CAVI
iteration from the fit (the fastest of 3), division for all documents and
the linear-response correction for all documents, and prints their ratios.

Usage::

    python benchmarks/linear_response_lda_accuracy.py [--every K] [--no-cost] [--no-accuracy]

``--every K`` refits every K-th document only (default 1, every document).
The accuracy part takes a few minutes, almost all of it in the refits; the
cost part about a minute. The corpus depends on the Python version, so the
numbers do too. The command line gives the same numbers for one corpus, for
example

    fg-influence lda --vocabulary 300 --max-documents 300 --topics 5 --tol 1e-12 \\
        --method linear-response --exact all
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np

from fg_influence.datasets.stdlib_docstrings import load_stdlib_docstrings
from fg_influence.graph.blocks import update_blocks
from fg_influence.inference.cavi import update_global
from fg_influence.influence import InfluenceResult
from fg_influence.models.lda import LatentDirichletAllocation

#: (vocabulary size, maximum number of documents, topics) of the accuracy cases.
CASES = ((300, 300, 3), (300, 300, 4), (300, 300, 5), (200, 200, 5))


def report(description: str, n_documents: int, method: str, accuracy: dict) -> None:
    print(f"{description:30} {n_documents:5d}  {method:16} {accuracy['spearman']:9.4f} "
          f"{accuracy['top_k_overlap']:7.0%} {accuracy['median_relative_error']:16.2%}")


def accuracy(every: int) -> None:
    print(f"{'corpus':30} {'docs':>5}  {'method':16} {'Spearman':>9} {'top-10':>7} {'median rel. err':>16}")
    for vocabulary, max_documents, topics in CASES:
        corpus = load_stdlib_docstrings(max_vocabulary=vocabulary, max_documents=max_documents)
        model = LatentDirichletAllocation(topics, random_state=0, tol=1e-12, max_iter=20000).fit(corpus.counts)
        documents = np.arange(0, corpus.counts.shape[0], every)

        start = time.perf_counter()
        division = model.influence()
        division_seconds = time.perf_counter() - start
        start = time.perf_counter()
        response = model.influence(method="linear-response")
        response_seconds = time.perf_counter() - start
        start = time.perf_counter()
        response.compute_exact(documents)
        exact_seconds = time.perf_counter() - start
        division.exact_sites, division.exact_kl = response.exact_sites, response.exact_kl

        n_documents, n_words = corpus.counts.shape
        description = f"V = {n_words}, D = {n_documents}, K = {topics}"
        for method, result in (("division", division), ("linear-response", response)):
            report(description, documents.size, method, result.accuracy(top_k=10))
        summaries = response._response
        print(f"{'':30} largest eigenvalue of J {summaries.system.largest_eigenvalue:.4f}; "
              f"{int(summaries.nonpositive_concentration.sum())} documents with a corrected "
              f"concentration at or below 0; division {division_seconds * 1e3:.0f} ms, linear response "
              f"{response_seconds * 1e3:.0f} ms, {documents.size} exact refits {exact_seconds:.1f} s",
              flush=True)


def one_cavi_iteration(posterior) -> float:
    """Seconds of one CAVI iteration from the fit (E-step, then M-step), the fastest of 3."""
    best = np.inf
    for _ in range(3):
        state = copy.copy(posterior)
        state.globals, state.locals = dict(posterior.globals), dict(posterior.locals)
        start = time.perf_counter()
        update_blocks(state)
        update_global(state, "topics")
        best = min(best, time.perf_counter() - start)
    return best


def cost() -> None:
    corpus = load_stdlib_docstrings()
    n_documents, n_words = corpus.counts.shape
    start = time.perf_counter()
    model = LatentDirichletAllocation(10, random_state=0, tol=1e-10, max_iter=20000).fit(corpus.counts)
    fit_seconds = time.perf_counter() - start
    iteration = one_cavi_iteration(model.posterior_)

    start = time.perf_counter()
    InfluenceResult(model.posterior_)
    division_seconds = time.perf_counter() - start
    start = time.perf_counter()
    response = InfluenceResult(model.posterior_, method="linear-response")
    response_seconds = time.perf_counter() - start
    summaries = response._response

    print(f"\nCost at the command's default size: {n_documents} documents, {n_words} words, "
          f"{corpus.counts.nnz} nonzero counts, K = 10 (G = {10 * n_words} coordinates); Python "
          f"{sys.version.split()[0]}")
    print(f"  fit (tol 1e-10): {fit_seconds:.1f} s, {model.n_iter_} CAVI iterations")
    print(f"  one CAVI iteration: {iteration * 1e3:.1f} ms")
    print(f"  division, all documents: {division_seconds * 1e3:.1f} ms "
          f"({division_seconds / iteration:.1f} CAVI iterations)")
    print(f"  linear response, all documents: {response_seconds:.1f} s "
          f"({response_seconds / iteration:.0f} CAVI iterations); largest eigenvalue of J "
          f"{summaries.system.largest_eigenvalue:.4f}, at most {summaries.iterations} conjugate-gradient "
          f"iterations per chunk of {summaries.system.chunk_size} documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="refit every K-th document only (default 1)")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost at the command's default size")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy against exact refits")
    args = parser.parse_args()
    if not args.no_accuracy:
        accuracy(args.every)
    if not args.no_cost:
        cost()


if __name__ == "__main__":
    main()
