"""``fg-influence linreg``: Bayesian linear regression on columns of a CSV file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models import BayesianLinearRegression
from ._catalogue_report import (
    add_missing_option,
    default_numeric_columns,
    numeric_matrix,
    read_columns,
    report,
    split_columns,
)
from ._options import add_report_options, positive_finite_float


def register(commands) -> None:
    parser = commands.add_parser(
        "linreg",
        help="Bayesian linear regression on a CSV file",
        description="Fit a linear regression with a conjugate Normal-Gamma prior (vague by default, so "
                    "the posterior mean is ordinary least squares) and rank the rows by influence. "
                    "Without latent variables the estimates are the exact leave-one-out values.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--target", required=True, metavar="y", help="response column")
    parser.add_argument("--columns", default=None, metavar="a,b",
                        help="comma-separated covariate columns (default: every other numeric column "
                             "except 'rownames')")
    parser.add_argument("--no-intercept", action="store_true", help="fit without an intercept")
    parser.add_argument("--coef-precision-prior", type=positive_finite_float, default=1e-6, metavar="P",
                        help="prior precision of each coefficient relative to the noise precision "
                             "(default 1e-6)")
    add_missing_option(parser)
    # Without latent variables CAVI has no random start, so --seed and --n-init
    # would do nothing, and a refit is one conjugate update.
    add_report_options(parser, random_start=False,
                       refits="each refit is the exact conjugate posterior without the row, which "
                              "the estimates already equal up to rounding, so the refits only confirm "
                              "them")
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

    model = BayesianLinearRegression(fit_intercept=not args.no_intercept,
                                     coef_precision_prior=args.coef_precision_prior).fit(X, y)
    result = model.influence()
    names = (["intercept"] if not args.no_intercept else []) + covariates
    posterior = model.posterior_.globals["coefficients"]
    shift = result.shift("coefficients.coef")
    extra = {"cooks_distance": model.cooks_distance(result)} if len(y) > len(names) else {}
    extra["max_coef_shift_sd"] = _max_standardised_shift(model, shift)
    summary = ["Posterior mean coefficients: " + ", ".join(f"{n} {v:.4g}" for n, v in zip(names, posterior.mean)),
               f"Noise standard deviation (1 / sqrt(E[tau])): {1 / np.sqrt(model.noise_precision_):.4g}"]
    document = {
        "type": "BayesianLinearRegression",
        "target": args.target,
        "columns": names,
        "fit_intercept": not args.no_intercept,
        "priors": {"coef_precision_prior": model.coef_precision_prior,
                   "noise_shape_prior": model.noise_shape_prior, "noise_rate_prior": model.noise_rate_prior},
        "posterior": {"mean": posterior.mean.tolist(), "precision": posterior.precision.tolist(),
                      "shape": float(posterior.shape), "rate": float(posterior.rate)},
        "n_rows": len(y),
    }
    report(model=model, result=result, labels=labels,
           shown={name: table[name] for name in covariates + [args.target]}, extra=extra,
           top=args.top, exact=args.exact, json_path=args.json, plot_path=args.plot,
           title=f"{args.file}: linear regression of {args.target} on {', '.join(covariates)}",
           model_document=document, summary=summary, row_vectors={"coef_shift": shift})


def _max_standardised_shift(model, shift) -> np.ndarray:
    """Largest coefficient shift in units of that coefficient's posterior standard deviation, shape (N,)."""
    if not hasattr(model, "coef_covariance_"):
        return np.full(shift.shape[0], np.nan)
    sd = np.sqrt(np.diag(model.coef_covariance_))
    return np.abs(shift / sd).max(axis=1)

