"""``fg-influence lda``: topics of the standard library's docstrings and their most influential documents."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..datasets.stdlib_docstrings import load_stdlib_docstrings
from ..models.lda import LatentDirichletAllocation
from ._mixture_report import _check_json_path, _finite_or_none, _json_accuracy, progress_bar
from ._options import exact_count, format_spearman, non_negative_int, positive_int
from ._plot_option import add_plot_option, check_plot_path, write_plot


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
    model = LatentDirichletAllocation(args.topics, random_state=args.seed).fit(corpus.counts)
    result = model.influence()
    by_topic = model.influence_by_topic()
    if args.exact is not None:
        count = args.exact if args.exact == "all" else min(args.exact, n_documents)
        result.compute_exact(count, progress=progress_bar(n_documents if count == "all" else count))

    vocabulary = np.array(corpus.vocabulary)
    names = corpus.document_names
    print(f"Docstrings of the standard library: {n_documents} documents, {n_words} words, "
          f"{corpus.counts.nnz} nonzero counts; {args.topics} topics", file=out)
    print(f"ELBO {model.lower_bound_:.1f} after {model.n_iter_} CAVI iterations"
          f"{'' if model.converged_ else ' (not converged)'}", file=out)
    topics = []
    for k, words in enumerate(model.top_words(args.words)):
        order = np.argsort(-by_topic[:, k], kind="stable")[: args.top]
        print(f"\ntopic {k}: {' '.join(vocabulary[words])}", file=out)
        for d in order:
            print(f"    {by_topic[d, k]:9.4f}  {names[d]}", file=out)
        topics.append({"topic": k, "words": vocabulary[words].tolist(),
                       "influential_documents": [{"document": names[d], "kl": _finite_or_none(by_topic[d, k])}
                                                 for d in order]})
    accuracy = None
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
        print(f"\nAgreement with exact refits over {accuracy['n_sites']} documents: Spearman "
              f"{format_spearman(accuracy['spearman'])}", file=out)
    print(f"Total time: {time.perf_counter() - start:.1f} s", file=out)

    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    document = {
        "model": {"type": "LatentDirichletAllocation", "n_topics": args.topics, "n_documents": n_documents,
                  "n_words": n_words, "elbo": model.lower_bound_, "n_iter": model.n_iter_,
                  "converged": model.converged_},
        "topics": topics,
        "accuracy": _json_accuracy(accuracy),
        "documents": [{"document": names[d], "kl": _finite_or_none(result.kl[d]),
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
