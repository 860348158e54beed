"""``fg-influence factor-analysis``: Bayesian factor analysis, influence of each row."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..models.factor_analysis import FactorAnalysis
from ._catalogue_report import add_missing_option, default_numeric_columns, numeric_matrix, read_columns
from ._mixture_report import TITLE_METHODS, _check_json_path, _finite_or_none, _json_accuracy, progress_bar
from ._options import (METHODS, add_site_options, add_tol_option, default_tol, format_spearman, parse_columns,
                       other_optimum_note, positive_int)
from ._plot_option import add_plot_option, check_plot_path, write_plot


def register(commands) -> None:
    parser = commands.add_parser(
        "factor-analysis",
        help="Bayesian factor analysis on numeric columns, influence of each row",
        description="Fit Bayesian factor analysis (latent factors z_i ~ N(0, I), x_i ~ N(W z_i + m, "
                    "diag(psi)^-1)) to standardized numeric columns of a CSV file and rank the rows "
                    "by KL(q || q without the row). By default, rows with a missing value (empty "
                    "or NA) in a modelled column are dropped with a warning; see --missing.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--factors", "-k", type=positive_int, default=2, metavar="L",
                        help="number of latent factors, less than the number of columns (default 2)")
    parser.add_argument("--columns", default=None, metavar="a,b",
                        help="comma-separated numeric columns (default: every column whose present "
                             "values are all numeric, except 'rownames')")
    # Unlike the other subcommands, factor-analysis has always dropped such
    # rows, so "drop" stays its default.
    add_missing_option(parser, default="drop")
    parser.add_argument("--method", choices=METHODS[:2], default="division",
                        help="how to estimate the posterior without each row: 'division' keeps the "
                             "other rows' latent factors at their fitted posterior; 'linear-response' "
                             "adds their first-order response, which is much closer to exact refits "
                             "and closer still with a tighter --tol such as 1e-12 (recommended with "
                             "two or more factors); with two or more factors both it and --exact "
                             "compare the posteriors in the rotation of the factors closest to the "
                             "fit (default: division)")
    add_site_options(parser, "rows")
    add_plot_option(parser)
    add_tol_option(parser, default_tol(FactorAnalysis))
    parser.set_defaults(handler=run)


def read_complete_rows(path: Path, columns: list[str] | None,
                       missing: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Read numeric columns of a CSV file, dropping or rejecting rows with missing values as ``missing`` requests."""
    if columns is None:
        columns = default_numeric_columns(path, [])
    table, labels, lines = read_columns(path, columns, missing)
    data = numeric_matrix(table, columns, lines)
    if len(data) < 2:
        raise ValueError(f"CSV file {path} has {len(data)} complete row(s) in {columns}; need at least 2")
    return data, columns, labels


def _row_record(i: int, label: str, result, exact_lookup: dict) -> dict:
    """Build the JSON record of row ``i`` in the layout of the mixture subcommands.

    ``row`` is the 0-based position and ``label`` the file's row label.
    Factor analysis has no closed-form LOO predictive density, so the record
    has no ``loo_log_predictive``; ``exact_kl`` is present only for refitted rows.
    """
    record = {"row": i, "label": label, "kl": _finite_or_none(result.kl[i]),
              "improper": bool(result.improper[i])}
    if i in exact_lookup:
        record["exact_kl"] = _finite_or_none(exact_lookup[i])
    return record


def run(args, out=None) -> dict:
    out = sys.stdout if out is None else out
    _check_json_path(args.json)
    check_plot_path(args.plot)
    columns = parse_columns(args.columns)
    start = time.perf_counter()
    data, columns, labels = read_complete_rows(args.file, columns, args.missing)
    center, scale = data.mean(axis=0), data.std(axis=0)
    if np.any(scale == 0):
        constant = [c for c, s in zip(columns, scale) if s == 0]
        raise ValueError(f"cannot standardize constant column(s) {constant}; drop them with --columns")
    model = FactorAnalysis(args.factors, tol=args.tol).fit((data - center) / scale)
    result = model.influence(method=args.method)
    # Labels first, so that warnings about refits name rows as the table does.
    result.row_labels = labels
    if args.exact is not None:
        count = args.exact if args.exact == "all" else min(args.exact, result.n_sites)
        result.compute_exact(count, progress=progress_bar(result.n_sites if count == "all" else count))

    print(f"{args.file}: factor analysis with {args.factors} factor(s) on standardized "
          f"{', '.join(columns)} ({result.n_sites} rows)", file=out)
    print(f"ELBO {model.lower_bound_:.4f} after {model.n_iter_} CAVI iterations"
          f"{'' if model.converged_ else ' (not converged)'}", file=out)
    for name, row, noise in zip(columns, model.loadings_, model.noise_variance_):
        print(f"  {name}: loadings {np.round(row, 3).tolist()}, noise variance {noise:.3g}", file=out)
    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    order = result.top(args.top)
    print(f"\nThe {len(order)} most influential rows, by KL(q || q without the row)"
          f"{TITLE_METHODS[args.method]}:", file=out)
    header = ["row"] + columns + ["KL"] + (["exact KL"] if exact_lookup else [])
    table = []
    for i in order:
        cells = [labels[i]] + [f"{v:.4g}" for v in data[i]] + [f"{result.kl[i]:.5f}"]
        if exact_lookup:
            value = exact_lookup.get(int(i))
            cells.append("" if value is None else f"{value:.5f}")
        table.append(cells)
    widths = [max([8, len(h)] + [len(row[c]) for row in table]) for c, h in enumerate(header)]
    for cells in [header] + table:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=out)
    accuracy = None
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
        print(f"\nAgreement with exact refits over {accuracy['n_sites']} rows: Spearman "
              f"{format_spearman(accuracy['spearman'])}, top-{accuracy['top_k']} overlap {accuracy['top_k_overlap']:.0%}, "
              f"median relative error {100 * accuracy['median_relative_error']:.3g}%", file=out)
        note, other_rows = other_optimum_note(result)
        if note is not None:
            print(note, file=out)
            accuracy["other_optimum_rows"] = other_rows
    print(f"Total time: {time.perf_counter() - start:.2f} s", file=out)

    document = {
        "model": {
            "type": "FactorAnalysis",
            "n_factors": args.factors,
            "columns": columns,
            "center": center.tolist(),
            "scale": scale.tolist(),
            "loadings": model.loadings_.tolist(),
            "noise_variance": model.noise_variance_.tolist(),
            "elbo": model.lower_bound_,
            "tol": model.tol,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
        },
        "method": args.method,
        "accuracy": _json_accuracy(accuracy),
        "rows": [_row_record(i, labels[i], result, exact_lookup) for i in range(result.n_sites)],
    }
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise ValueError(f"could not write --json file {args.json}: {error.strerror or error}") from None
        print(f"Wrote {args.json}", file=out)
    write_plot(result, args.plot, out)
    return document
