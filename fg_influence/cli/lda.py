"""``fg-influence lda``: topics of the standard library's docstrings and their most influential documents."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..datasets.stdlib_docstrings import load_stdlib_docstrings
from ..influence.linear_response_lda import topic_kl
from ..models.lda import LatentDirichletAllocation
from ._mixture_report import TITLE_METHODS, _check_json_path, _finite_or_none, _json_accuracy, progress_bar
from ._options import (METHODS, default_tol, exact_count, format_relative_error, format_spearman, non_negative_int,
                       positive_int, relative_tolerance)
from ._plot_option import add_plot_option, check_plot_path, write_plot

#: --tol without the option: the model's default for division, and a
#: tighter one for linear response, whose Jacobian must be taken at a
#: settled fit (with 1e-7 it often has an eigenvalue above 1).
DEFAULT_TOL = {"division": default_tol(LatentDirichletAllocation), "linear-response": 1e-10}

#: Maximum CAVI iterations of the fit: the model's default for division,
#: and room for the tighter tolerance of linear response (272 iterations
#: on the default corpus with K = 10).
MAX_ITER = {"division": 500, "linear-response": 5000}


def register(commands) -> None:
    parser = commands.add_parser(
        "lda",
        help="topic model of Python's standard-library docstrings, influential documents per topic",
        description="Fit latent Dirichlet allocation to the docstrings of Python's standard library "
                    "(one document per documented function or class, parsed from the source files "
                    "of the running interpreter) and show, for each topic, its most probable words "
                    "and the documents whose removal moves the topic most, by "
                    "KL(q(beta_k) || q(beta_k) without the document).",
    )
    parser.add_argument("--topics", "-k", type=positive_int, default=10, metavar="K",
                        help="number of topics (default 10)")
    parser.add_argument("--max-documents", type=positive_int, default=None, metavar="N",
                        help="use every k-th document so that at most N remain (default: all)")
    parser.add_argument("--vocabulary", type=positive_int, default=3000, metavar="V",
                        help="maximum vocabulary size, the words in most documents (default 3000)")
    parser.add_argument("--words", type=positive_int, default=8, metavar="N",
                        help="number of words shown per topic (default 8)")
    parser.add_argument("--top", type=positive_int, default=3, metavar="N",
                        help="number of most influential documents shown per topic (default 3)")
    parser.add_argument("--exact", type=exact_count, default=None, metavar="N|all",
                        help="refit without each of the N documents of largest total KL (slow: each "
                             "refit runs CAVI on the whole corpus; default: no refits)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                        help="random seed of the starting topics (default 0)")
    parser.add_argument("--method", choices=METHODS[:2], default="division",
                        help="how to estimate the topics without each document: 'division' keeps the "
                             "other documents' word topics at their fitted values; 'linear-response' adds "
                             "their first-order response, which is closer to exact refits but costs far "
                             "more (as long as about 350 CAVI iterations at the default size) (default: "
                             "division)")
    parser.add_argument("--tol", type=relative_tolerance, default=None, metavar="TOL",
                        help=f"relative ELBO change at which the CAVI fit stops, between 0 and 1: it ends when the ELBO "
                             f"changes by at most TOL times |ELBO| between iterations (default "
                             f"{DEFAULT_TOL['division']:g} with --method division, "
                             f"{DEFAULT_TOL['linear-response']:g} with --method linear-response)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the topics and one record per document to this JSON file")
    add_plot_option(parser)
    parser.set_defaults(handler=run)


def run(args, out=None) -> dict:
    out = sys.stdout if out is None else out
    _check_json_path(args.json)
    check_plot_path(args.plot)
    start = time.perf_counter()
    corpus = load_stdlib_docstrings(max_vocabulary=args.vocabulary, max_documents=args.max_documents)
    n_documents, n_words = corpus.counts.shape
    tol = DEFAULT_TOL[args.method] if args.tol is None else args.tol
    model = LatentDirichletAllocation(args.topics, random_state=args.seed, tol=tol,
                                      max_iter=MAX_ITER[args.method]).fit(corpus.counts)
    result = model.influence(method=args.method)
    by_topic = topic_kl(result)
    if args.exact is not None:
        count = args.exact if args.exact == "all" else min(args.exact, n_documents)
        result.compute_exact(count, progress=progress_bar(n_documents if count == "all" else count))

    vocabulary = np.array(corpus.vocabulary)
    names = corpus.document_names
    print(f"Docstrings of the standard library: {n_documents} documents, {n_words} words, "
          f"{corpus.counts.nnz} nonzero counts; {args.topics} topics", file=out)
    print(f"ELBO {model.lower_bound_:.1f} after {model.n_iter_} CAVI iterations"
          f"{'' if model.converged_ else ' (not converged)'}", file=out)
    print(f"\nEach topic's most probable words and the documents whose removal moves it most, by "
          f"KL(q(beta_k) || q(beta_k) without the document){TITLE_METHODS[args.method]}:", file=out)
    topics = []
    for k, words in enumerate(model.top_words(args.words)):
        order = np.argsort(-by_topic[:, k], kind="stable")[: args.top]
        print(f"\ntopic {k}: {' '.join(vocabulary[words])}", file=out)
        for d in order:
            print(f"    {by_topic[d, k]:9.4f}  {names[d]}", file=out)
        topics.append({"topic": k, "words": vocabulary[words].tolist(),
                       "influential_documents": [{"document": names[d], "kl": _finite_or_none(by_topic[d, k])}
                                                 for d in order]})
    if args.method == "linear-response":
        crossing = int(result._response.nonpositive_concentration.sum())
        if crossing:
            print(f"\n{crossing} documents have a corrected topic concentration at or below 0: the other "
                  f"documents respond too strongly there for a first-order estimate (check them with "
                  f"--exact)", file=out)
    accuracy = None
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
        print(f"\nAgreement with exact refits over {accuracy['n_sites']} documents: Spearman "
              f"{format_spearman(accuracy['spearman'])}, top-{accuracy['top_k']} overlap "
              f"{accuracy['top_k_overlap']:.0%}, median relative error "
              f"{format_relative_error(accuracy['median_relative_error'])}", file=out)
    print(f"Total time: {time.perf_counter() - start:.1f} s", file=out)

    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    document = {
        "model": {"type": "LatentDirichletAllocation", "n_topics": args.topics, "n_documents": n_documents,
                  "n_words": n_words, "elbo": model.lower_bound_, "tol": tol, "n_iter": model.n_iter_,
                  "converged": model.converged_},
        "method": args.method,
        "topics": topics,
        "accuracy": _json_accuracy(accuracy),
        "documents": [{"site": d, "label": names[d], "kl": _finite_or_none(result.kl[d]),
                       "exact_kl": _finite_or_none(exact_lookup[d]) if d in exact_lookup else None}
                      for d in range(n_documents)],
    }
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise ValueError(f"could not write --json file {args.json}: {error.strerror or error}") from None
        print(f"Wrote {args.json}", file=out)
    write_plot(result, args.plot, out)
    return document
