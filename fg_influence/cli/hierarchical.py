"""``fg-influence hierarchical``: a hierarchical normal model with one site per group."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .._csv import read_csv_rows, read_numeric_csv
from ..models.hierarchical import HierarchicalNormal
from ._mixture_report import TITLE_METHODS, _check_json_path, _finite_or_none, _json_accuracy, progress_bar
from ._options import (METHODS, add_site_options, add_tol_option, default_tol, format_relative_error,
                       format_spearman, parse_columns)
from ._plot_option import add_plot_option, check_plot_path, write_plot


def register(commands) -> None:
    parser = commands.add_parser(
        "hierarchical",
        help="hierarchical normal model, influence of each group",
        description="Fit a hierarchical normal model (group coefficients b_j ~ N(mu, diag(tau)^-1), "
                    "rows y_ij ~ N(x_ij^T b_j, 1/noise), with an intercept and the --columns "
                    "predictors) and rank the groups by the KL divergence between the posterior and "
                    "the posterior without the group.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--target", required=True, metavar="COL", help="numeric response column")
    parser.add_argument("--group", required=True, metavar="COL",
                        help="column of group labels (text or numbers); each group is one site")
    parser.add_argument("--columns", default=None, metavar="a,b",
                        help="comma-separated numeric predictor columns (default: none, so each "
                             "group has a mean only)")
    parser.add_argument("--method", choices=METHODS[:2], default="division",
                        help="how to estimate the posterior without each group: 'division' keeps the "
                             "other groups' coefficients at their fitted posterior; 'linear-response' "
                             "adds their first-order response (they shrink towards the new population "
                             "mean), which is much closer to exact refits, and closer still with a "
                             "tighter --tol (such as 1e-12) (default: division)")
    add_site_options(parser, "groups")
    add_plot_option(parser)
    add_tol_option(parser, default_tol(HierarchicalNormal))
    parser.set_defaults(handler=run)


def read_group_column(path: Path, name: str, option: str = "--group") -> list[str]:
    """Return the text values of column ``name``, which the command-line ``option`` named."""
    header, body, lines = read_csv_rows(path)
    if name not in header:
        raise ValueError(f"unknown {option} column {name!r} in {path}; available columns: {header}")
    position = header.index(name)
    values = [row[position].strip() for row in body]
    empty = [line for line, value in zip(lines, values) if not value]
    if empty:
        raise ValueError(
            f"{option} column {name!r} of {path} has empty labels on line(s) {empty[:5]}; every row "
            f"needs a label"
        )
    return values


def _parse_predictors(text: str | None) -> list[str]:
    return parse_columns(text) or []


def run(args, out=None) -> dict:
    out = sys.stdout if out is None else out
    _check_json_path(args.json)
    check_plot_path(args.plot)
    predictors = _parse_predictors(args.columns)
    if args.target in predictors or args.group in predictors or args.target == args.group:
        raise ValueError("--target, --group and --columns must name different columns")
    start = time.perf_counter()
    data, columns, _ = read_numeric_csv(args.file, [args.target] + predictors,
                                        column_options={args.target: "--target"})
    groups = read_group_column(args.file, args.group)
    y, X = data[:, 0], data[:, 1:]

    labels = np.array(groups)
    if all(label.lstrip("-").isdigit() for label in groups):
        # Numeric group codes sort as numbers (2 before 10), not as text.
        labels = labels.astype(np.int64)
    model = HierarchicalNormal(tol=args.tol).fit(y, labels, X)
    result = model.influence(method=args.method)
    fit_seconds = time.perf_counter() - start
    n_groups = result.n_sites
    if args.exact is not None:
        count = args.exact if args.exact == "all" else min(args.exact, n_groups)
        result.compute_exact(count, progress=progress_bar(n_groups if count == "all" else count))
    total_seconds = time.perf_counter() - start

    coef_names = ["intercept"] + predictors
    _print_report(model, result, coef_names, args, out)
    accuracy = None
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
        print(f"\nAgreement with exact refits over {accuracy['n_sites']} groups: Spearman "
              f"{format_spearman(accuracy['spearman'])}, top-{accuracy['top_k']} overlap "
              f"{accuracy['top_k_overlap']:.0%}, median relative error "
              f"{format_relative_error(accuracy['median_relative_error'])}", file=out)
    refits = f"; total with refits: {total_seconds:.2f} s" if result.exact_sites.size else ""
    print(f"Fit and all-group estimates: {fit_seconds:.2f} s{refits}", file=out)

    document = _json_document(model, result, coef_names, args, accuracy)
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise ValueError(f"could not write --json file {args.json}: {error.strerror or error}") from None
        print(f"Wrote {args.json}", file=out)
    write_plot(result, args.plot, out, labels=[str(label) for label in model.group_labels_])
    return document


def _print_report(model, result, coef_names, args, out) -> None:
    print(f"{args.file}: hierarchical normal model of {args.target} by {args.group} "
          f"({result.n_sites} groups, {model.group_sizes_.sum()} rows)", file=out)
    print(f"ELBO {model.lower_bound_:.4f} after {model.n_iter_} CAVI iterations"
          f"{'' if model.converged_ else ' (not converged)'}", file=out)
    between = ", ".join(
        f"{name} {mean:.4g} (between-group sd {sd:.3g})"
        for name, mean, sd in zip(coef_names, model.coef_mean_, model.group_precision_ ** -0.5)
    )
    print(f"Population coefficients E[mu]: {between}; residual sd {model.noise_precision_ ** -0.5:.4g}",
          file=out)

    order = result.top(args.top)
    shift = result.shift("mu.mean")
    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    print(f"\nThe {len(order)} most influential groups, by KL(q || q without the group)"
          f"{TITLE_METHODS[args.method]}:", file=out)
    header = ["group", "rows"] + [f"E[b] {name}" for name in coef_names] + ["KL", f"shift {coef_names[0]}"]
    if exact_lookup:
        header.append("exact KL")
    table = []
    for j in order:
        cells = [str(model.group_labels_[j]), str(model.group_sizes_[j])]
        cells += [f"{value:.4g}" for value in model.group_coef_[j]]
        cells += [f"{result.kl[j]:.5f}", f"{shift[j, 0]:+.4f}"]
        if exact_lookup:
            value = exact_lookup.get(int(j))
            cells.append("" if value is None else f"{value:.5f}")
        table.append(cells)
    widths = [max([8, len(h)] + [len(row[c]) for row in table]) for c, h in enumerate(header)]
    for cells in [header] + table:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=out)
    print(f"  (shift {coef_names[0]}: change of E[mu] for the {coef_names[0]} without the group)", file=out)
    if result.improper.any():
        print(f"  {int(result.improper.sum())} groups leave an improper posterior when removed; "
              f"their KL is reported as inf", file=out)


def _json_document(model, result, coef_names, args, accuracy) -> dict:
    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    shift = result.shift("mu.mean")
    groups = []
    for j in range(result.n_sites):
        groups.append({
            "site": j,
            "label": str(model.group_labels_[j]),
            "rows": int(model.group_sizes_[j]),
            "coefficients": model.group_coef_[j].tolist(),
            "kl": _finite_or_none(result.kl[j]),
            "exact_kl": _finite_or_none(exact_lookup[j]) if j in exact_lookup else None,
            "mean_shift": [_finite_or_none(v) for v in shift[j]],
            "improper": bool(result.improper[j]),
        })
    return {
        "method": args.method,
        "model": {
            "type": "HierarchicalNormal",
            "target": args.target,
            "group": args.group,
            "coefficients": coef_names,
            "posterior": {
                "mean": model.coef_mean_.tolist(),
                "group_precision": np.asarray(model.group_precision_).tolist(),
                "noise_precision": model.noise_precision_,
            },
            "elbo": model.lower_bound_,
            "tol": model.tol,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
        },
        "accuracy": _json_accuracy(accuracy),
        "groups": groups,
    }
