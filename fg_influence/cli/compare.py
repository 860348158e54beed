"""``fg-influence compare``: variational division, EM-influence and the influence function against exact refits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .._csv import read_numeric_csv
from ..models import GaussianMixture
from ..reference import compare_methods
from ._mixture_report import _check_json_path, name_x_columns, reject_constant_columns
from ._options import add_tol_option, default_tol, exact_count, non_negative_int, parse_columns, positive_int
from ._plot_option import add_plot_option, check_plot_path


def register(commands) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare influence methods with exact refits on a Gaussian mixture",
        description="Fit a full-covariance Gaussian mixture to numeric columns of a CSV file by "
                    "variational Bayes and by MAP-EM with the same prior, estimate every row's "
                    "influence by variational division, EM-influence and the Newton influence "
                    "function, refit without rows, and report each method's Spearman correlation "
                    "and top-set overlap with the refits, and its run time.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--components", "-k", type=positive_int, required=True, metavar="K",
                        help="number of mixture components")
    parser.add_argument("--columns", type=str, default=None, metavar="a,b",
                        help="comma-separated columns to model (default: every numeric column except "
                             "'rownames')")
    parser.add_argument("--standardize", action="store_true",
                        help="centre each column and divide by its standard deviation before fitting")
    parser.add_argument("--exact", type=exact_count, default="all", metavar="N|all",
                        help="refit without every row ('all', the default) or without N rows drawn at "
                             "random with --seed")
    parser.add_argument("--top", type=positive_int, default=10, metavar="N",
                        help="size of the top sets whose overlap is reported (default 10)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                        help="random seed for the CAVI starts and the rows refitted (default 0)")
    parser.add_argument("--n-init", type=positive_int, default=3, metavar="N",
                        help="number of CAVI starting points; the best ELBO is kept (default 3)")
    add_tol_option(parser, default_tol(GaussianMixture))
    add_plot_option(parser)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write every method's per-row scalar, the exact values, the timings and "
                             "the --tol of the variational fit to this JSON file")
    parser.set_defaults(handler=run)


def _report_progress(stage: str, done: int, total: int) -> None:
    if done == 1 or done == total or done % 50 == 0:
        print(f"exact {stage} refits: {done}/{total}", file=sys.stderr)


def run(args) -> None:
    _check_json_path(args.json)
    check_plot_path(args.plot)
    data, columns, labels = read_numeric_csv(args.file, parse_columns(args.columns))
    if args.standardize:
        scale = data.std(axis=0)
        if np.any(scale == 0):
            constant = [columns[i] for i in np.flatnonzero(scale == 0)]
            raise ValueError(f"cannot standardize constant column(s) {constant}; drop them with --columns")
        data = (data - data.mean(axis=0)) / scale
    reject_constant_columns(data, columns)
    if args.exact != "all" and args.exact < 3:
        raise ValueError(f"--exact must be at least 3 rows for a rank correlation, got {args.exact}")

    try:
        comparison = compare_methods(data, args.components, exact=args.exact, top=args.top,
                                     random_state=args.seed, n_init=args.n_init,
                                     progress=_report_progress, tol=args.tol)
    except ValueError as error:
        renamed = name_x_columns(error, columns)
        if renamed is error:
            raise
        raise renamed from None
    units = "standardized" if args.standardize else "raw"
    print(f"{args.file}: Gaussian mixture with K = {args.components} on {', '.join(columns)} ({units} units), "
          f"{data.shape[0]} rows")
    print(comparison.format_table())
    if args.plot is not None:
        from ..plotting import save_comparison_report

        save_comparison_report(comparison, args.plot)
        print(f"Wrote {args.plot}")
    if args.json is not None:
        document = comparison.to_dict()
        document["rows"] = labels
        document["columns"] = columns
        document["standardize"] = bool(args.standardize)
        document["tol"] = args.tol
        args.json.write_text(json.dumps(document, indent=1))
