"""``fg-influence mixture``: Poisson, Bernoulli, categorical or diagonal Gaussian mixture on a CSV file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models import BernoulliMixture, CategoricalMixture, DiagonalGaussianMixture, PoissonMixture
from ._catalogue_report import (
    add_missing_option,
    default_numeric_columns,
    header_of,
    numeric_matrix,
    read_columns,
    report,
    split_columns,
)
from ._options import add_method_option, add_report_options, add_tol_option, default_tol, positive_int

FAMILIES = {
    "poisson": PoissonMixture,
    "bernoulli": BernoulliMixture,
    "categorical": CategoricalMixture,
    "gaussian-diag": DiagonalGaussianMixture,
}


def register(commands) -> None:
    parser = commands.add_parser(
        "mixture",
        help="Poisson, Bernoulli, categorical or diagonal Gaussian mixture on a CSV file",
        description="Fit a mixture of independent per-column likelihoods by CAVI and rank the rows by "
                    "influence. Poisson needs non-negative integer counts, Bernoulli needs 0/1 values, "
                    "categorical reads any text values as categories.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True,
                        help="likelihood of each column given the component")
    parser.add_argument("--components", "-k", type=positive_int, required=True, metavar="K",
                        help="number of mixture components")
    parser.add_argument("--columns", default=None, metavar="a,b",
                        help="comma-separated columns to model (default: every numeric column except "
                             "'rownames'; every column for --family categorical)")
    parser.add_argument("--max-categories", type=positive_int, default=50, metavar="C",
                        help="largest number of distinct values a categorical column may have (default 50)")
    add_missing_option(parser)
    add_method_option(parser, exact=False)
    add_report_options(parser)
    add_tol_option(parser, default_tol(*FAMILIES.values()))
    parser.set_defaults(handler=run)


def encode_categories(table: dict[str, list[str]], columns: list[str], max_categories: int):
    """Codes 0..C_d - 1 (sorted category order) of each column, shape (N, D), and the category names."""
    codes, categories = [], []
    for name in columns:
        names, column_codes = np.unique(np.array(table[name], dtype=str), return_inverse=True)
        if names.size > max_categories:
            raise ValueError(
                f"column {name!r} has {names.size} distinct values, more than --max-categories "
                f"{max_categories}; a categorical column needs few categories (is it numeric?)"
            )
        codes.append(column_codes)
        categories.append(names.tolist())
    return np.column_stack(codes).astype(float), categories


def run(args) -> None:
    columns = split_columns(args.columns)
    if columns is None:
        if args.family == "categorical":
            columns = [name for name in header_of(args.file) if name != "rownames"]
        else:
            columns = default_numeric_columns(args.file, [])
    table, labels, lines = read_columns(args.file, columns, args.missing)
    categories = None
    if args.family == "categorical":
        X, categories = encode_categories(table, columns, args.max_categories)
    else:
        X = numeric_matrix(table, columns, lines)

    model = FAMILIES[args.family](args.components, n_init=args.n_init, random_state=args.seed,
                                  tol=args.tol).fit(X)
    result = model.influence(method=args.method)
    summary = [f"ELBO {model.lower_bound_:.4f} after {model.n_iter_} CAVI iterations"
               f"{'' if model.converged_ else ' (not converged)'}",
               "Weights: " + ", ".join(f"{w:.3f}" for w in model.weights_)]
    document = {
        "type": type(model).__name__,
        "family": args.family,
        "n_components": args.components,
        "columns": columns,
        "categories": categories,
        "weights": model.weights_.tolist(),
        "components": _components(model),
        "elbo": model.lower_bound_,
        "tol": model.tol,
        "n_iter": model.n_iter_,
        "converged": model.converged_,
    }
    report(model=model, result=result, labels=labels, shown={name: table[name] for name in columns}, extra={},
           top=args.top, exact=args.exact, json_path=args.json, plot_path=args.plot,
           title=f"{args.file}: {args.family} mixture with K = {args.components} on {', '.join(columns)}",
           model_document=document, summary=summary)


def _components(model) -> dict:
    """Posterior mean parameters of each component, as nested lists."""
    if isinstance(model, PoissonMixture):
        return {"rates": model.rates_.tolist()}
    if isinstance(model, BernoulliMixture):
        return {"probabilities": model.probabilities_.tolist()}
    if isinstance(model, CategoricalMixture):
        return {"probabilities": [p.tolist() for p in model.probabilities_]}
    return {"means": model.means_.tolist(), "covariances": model.covariances_.tolist()}
