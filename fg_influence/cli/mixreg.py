"""``fg-influence mixreg``: mixture of linear regressions on columns of a CSV file."""

from __future__ import annotations

from pathlib import Path

from ..models import MixtureOfRegressions
from ._catalogue_report import (
    add_missing_option,
    default_numeric_columns,
    numeric_matrix,
    read_columns,
    report,
    split_columns,
)
from ._options import add_method_option, add_report_options, add_tol_option, default_tol, positive_int


def register(commands) -> None:
    parser = commands.add_parser(
        "mixreg",
        help="mixture of linear regressions on a CSV file",
        description="Fit a mixture of K linear regressions with constant mixing weights (each with its "
                    "own coefficients and noise precision, Normal-Gamma priors) and rank the rows by "
                    "influence.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--target", required=True, metavar="y", help="response column")
    parser.add_argument("--components", "-k", type=positive_int, required=True, metavar="K",
                        help="number of regression components")
    parser.add_argument("--columns", default=None, metavar="a,b",
                        help="comma-separated covariate columns (default: every other numeric column "
                             "except 'rownames')")
    add_missing_option(parser)
    add_method_option(parser, exact=False)
    add_report_options(parser)
    add_tol_option(parser, default_tol(MixtureOfRegressions))
    parser.set_defaults(handler=run)


def run(args) -> None:
    covariates = split_columns(args.columns)
    if covariates is None:
        covariates = default_numeric_columns(args.file, [args.target])
    if args.target in covariates:
        raise ValueError(f"--target {args.target!r} is also listed in --columns; remove it from --columns")
    table, labels, lines = read_columns(args.file, covariates + [args.target], args.missing)
    X = numeric_matrix(table, covariates, lines)
    y = numeric_matrix(table, [args.target], lines, "--target")[:, 0]

    model = MixtureOfRegressions(args.components, n_init=args.n_init, random_state=args.seed,
                                 tol=args.tol).fit(X, y)
    result = model.influence(method=args.method)
    names = ["intercept"] + covariates
    summary = [f"ELBO {model.lower_bound_:.4f} after {model.n_iter_} CAVI iterations"
               f"{'' if model.converged_ else ' (not converged)'}"]
    for k in range(args.components):
        summary.append(f"  component {k}: weight {model.weights_[k]:.3f}; "
                       + ", ".join(f"{n} {v:.4g}" for n, v in zip(names, model.coefs_[k]))
                       + f"; noise sd {model.noise_precisions_[k] ** -0.5:.4g}")
    document = {
        "type": "MixtureOfRegressions",
        "target": args.target,
        "n_components": args.components,
        "columns": names,
        "weights": model.weights_.tolist(),
        "coefficients": model.coefs_.tolist(),
        "noise_precisions": model.noise_precisions_.tolist(),
        "elbo": model.lower_bound_,
        "tol": model.tol,
        "n_iter": model.n_iter_,
        "converged": model.converged_,
    }
    report(model=model, result=result, labels=labels, shown={name: table[name] for name in covariates + [args.target]},
           extra={}, top=args.top, exact=args.exact, json_path=args.json, plot_path=args.plot,
           title=f"{args.file}: mixture of {args.components} regressions of {args.target} on "
                 f"{', '.join(covariates)}",
           model_document=document, summary=summary)
