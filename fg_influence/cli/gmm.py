"""``fg-influence gmm``: a full-covariance Gaussian mixture on columns of a CSV file."""

from __future__ import annotations

from pathlib import Path

from .._csv import read_numeric_csv
from ..models import GaussianMixture
from ._catalogue_report import (
    add_missing_option,
    default_numeric_columns,
    numeric_matrix,
    read_columns,
    split_columns,
)
from ._mixture_report import run_mixture
from ._options import (
    add_method_option,
    add_report_options,
    add_tol_option,
    default_tol,
    positive_int,
)


def register(commands) -> None:
    parser = commands.add_parser(
        "gmm",
        help="Gaussian mixture on numeric columns of a CSV file",
        description="Fit a full-covariance Gaussian mixture to numeric columns of a CSV file with a "
                    "header row and rank the rows by influence. A 'rownames' column, if present, "
                    "labels the rows.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--components", "-k", type=positive_int, required=True, metavar="K",
                        help="number of mixture components")
    parser.add_argument("--columns", type=str, default=None, metavar="a,b",
                        help="comma-separated columns to model (default: every numeric column except "
                             "'rownames')")
    add_missing_option(parser)
    parser.add_argument("--standardize", action="store_true",
                        help="centre each column and divide by its standard deviation before fitting; "
                             "the printed data values and component means stay in the file's units, while KL "
                             "and LOO log predictive densities refer to the standardized data")
    add_report_options(parser)
    add_method_option(parser)
    add_tol_option(parser, default_tol(GaussianMixture))
    parser.set_defaults(handler=run)


def run(args) -> None:
    # Both readers check the file alike (encoding, repeated header names, row
    # lengths). The default keeps read_numeric_csv, whose error names the
    # column and line of the first missing value; --missing drop needs the
    # row-dropping reader.
    if args.missing == "raise":
        try:
            data, columns, labels = read_numeric_csv(args.file, split_columns(args.columns))
        except ValueError as error:
            if "an empty field" not in str(error) and "'NA'" not in str(error):
                raise
            raise ValueError(f"{error}; or drop the rows with missing values with --missing drop") from None
    else:
        columns = split_columns(args.columns)
        if columns is None:
            columns = default_numeric_columns(args.file, [])
        table, labels, lines = read_columns(args.file, columns, args.missing)
        data = numeric_matrix(table, columns, lines)
    run_mixture(
        data, columns, labels, components=args.components, standardize=args.standardize,
        top=args.top, exact=args.exact, seed=args.seed, n_init=args.n_init, json_path=args.json,
        plot_path=args.plot, method=args.method, tol=args.tol,
        title=f"{args.file}: Gaussian mixture with K = {args.components} on {', '.join(columns)}",
    )
