"""The ``fg-influence`` command: fit a model and rank the rows that move it most."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._csv import read_numeric_csv
from .datasets import load_faithful
from .models import GaussianMixture


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _exact_count(text: str):
    return "all" if text == "all" else _positive_int(text)


def _add_fit_options(parser: argparse.ArgumentParser, *, components_default: int | None) -> None:
    parser.add_argument("--top", type=_positive_int, default=10, metavar="N",
                        help="number of most influential rows to print (default 10)")
    parser.add_argument("--exact", type=_exact_count, default=None, metavar="N|all",
                        help="refit without each of the N rows of largest estimated KL, or 'all' "
                             "rows, and report the agreement with the estimates (default: no refits)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed for the k-means start of CAVI (default 0)")
    parser.add_argument("--n-init", type=_positive_int, default=3, metavar="N",
                        help="number of CAVI starting points; the best ELBO is kept (default 3)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the priors, posterior and one record per row to this JSON file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fg-influence",
        description="Leave-one-out influence of each row on a variational Bayes model, estimated by "
                    "dividing each row's site message out of the fitted posterior.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="Gaussian mixture (K = 2) on the bundled Old Faithful data, checked against exact refits",
        description="Fit a two-component Gaussian mixture to standardised Old Faithful eruptions "
                    "(duration and waiting time, minutes), print the ten rows with the largest "
                    "KL(q || q without the row), and compare the estimates with exact refits of all "
                    "272 rows.",
    )
    _add_fit_options(demo, components_default=2)
    demo.set_defaults(exact="all")

    gmm = commands.add_parser(
        "gmm",
        help="Gaussian mixture on numeric columns of a CSV file",
        description="Fit a full-covariance Gaussian mixture to numeric columns of a CSV file with a "
                    "header row and rank the rows by influence. A 'rownames' column, if present, "
                    "labels the rows.",
    )
    gmm.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    gmm.add_argument("--components", "-k", type=_positive_int, required=True, metavar="K",
                     help="number of mixture components")
    gmm.add_argument("--columns", type=str, default=None, metavar="a,b",
                     help="comma-separated columns to model (default: every numeric column except "
                          "'rownames')")
    gmm.add_argument("--standardize", action="store_true",
                     help="centre each column and divide by its standard deviation before fitting; "
                          "printed values stay in the file's units")
    _add_fit_options(gmm, components_default=None)
    return parser


def _progress_bar(total: int):
    """A stderr progress bar for exact refits (tqdm)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="exact refits", unit="refit", file=sys.stderr, mininterval=0.5,
               delay=1.0, leave=False)

    def update(done: int, total_count: int) -> None:
        bar.update(done - bar.n)
        if done == total_count:
            bar.close()

    return update


def run_mixture(data: np.ndarray, columns: list[str], labels: list[str], *, components: int,
                standardize: bool, top: int, exact, seed: int, n_init: int, json_path: Path | None,
                title: str, out=sys.stdout) -> dict:
    """Fit, rank and report; return the JSON document."""
    start = time.perf_counter()
    center = data.mean(axis=0) if standardize else np.zeros(data.shape[1])
    scale = data.std(axis=0) if standardize else np.ones(data.shape[1])
    if standardize and np.any(scale == 0):
        constant = [c for c, s in zip(columns, scale) if s == 0]
        raise ValueError(f"cannot standardize constant column(s) {constant}; drop them with --columns")
    X = (data - center) / scale

    model = GaussianMixture(components, n_init=n_init, random_state=seed).fit(X)
    result = model.influence()
    fit_seconds = time.perf_counter() - start

    if exact is not None:
        count = exact if exact == "all" else min(exact, len(X))
        result.compute_exact(count, progress=_progress_bar(len(X) if count == "all" else count))
    total_seconds = time.perf_counter() - start

    _print_report(model, result, data, columns, labels, center, scale, top, title, out)
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size))
        print(
            f"\nAgreement with exact refits over {accuracy['n_sites']} rows: Spearman "
            f"{accuracy['spearman']:.4f}, top-{accuracy['top_k']} overlap "
            f"{accuracy['top_k_overlap']:.0%}, median relative error "
            f"{accuracy['median_relative_error']:.2%}",
            file=out,
        )
    else:
        accuracy = None
    print(f"Fit and all-row estimates: {fit_seconds:.2f} s; total with refits: {total_seconds:.2f} s",
          file=out)

    document = _json_document(model, result, columns, labels, center, scale, standardize, accuracy)
    if json_path is not None:
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"Wrote {json_path}", file=out)
    return document


def _print_report(model, result, data, columns, labels, center, scale, top, title, out) -> None:
    print(title, file=out)
    print(f"ELBO {model.lower_bound_:.4f} after {model.n_iter_} CAVI iterations"
          f"{'' if model.converged_ else ' (not converged)'}", file=out)
    print("\nFitted components (posterior means, in the data's units):", file=out)
    for k in np.argsort(-model.weights_):
        mean = model.means_[k] * scale + center
        sd = np.sqrt(np.diag(model.covariances_[k])) * scale
        parts = ", ".join(f"{c} {m:.4g} (sd {s:.3g})" for c, m, s in zip(columns, mean, sd))
        print(f"  component {k}: weight {model.weights_[k]:.3f}; {parts}", file=out)

    order = result.top(top)
    print(f"\nThe {len(order)} most influential rows, by KL(q || q without the row):", file=out)
    header = ["row"] + columns + ["KL", "mean shift", "LOO log pred"]
    if result.exact_sites.size:
        header.append("exact KL")
        exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    widths = [max(8, len(h)) for h in header]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)), file=out)
    for i in order:
        cells = [labels[i]] + [f"{v:.4g}" for v in data[i]]
        cells += [f"{result.kl[i]:.5f}", f"{result.mean_shift_norm[i]:.4f}",
                  f"{result.loo_log_predictive[i]:.4f}"]
        if result.exact_sites.size:
            value = exact_lookup.get(int(i))
            cells.append("" if value is None else f"{value:.5f}")
        print("  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=out)
    print("  (mean shift: largest move of a component mean without the row, as a Mahalanobis "
          "length under that component's expected precision E[Lambda_k])", file=out)
    if result.improper.any():
        print(f"  {int(result.improper.sum())} rows leave an improper posterior when removed; "
              f"their KL is reported as inf", file=out)


def _finite_or_none(value: float):
    return float(value) if np.isfinite(value) else None


def _json_document(model, result, columns, labels, center, scale, standardize, accuracy) -> dict:
    priors = model.priors(model.posterior_.data["x"])
    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    rows = []
    for i in range(result.n_sites):
        record = {
            "row": i,
            "label": labels[i],
            "kl": _finite_or_none(result.kl[i]),
            "loo_log_predictive": _finite_or_none(result.loo_log_predictive[i]),
            "mean_shift": float(result.mean_shift_norm[i]) if not result.improper[i] else None,
            "improper": bool(result.improper[i]),
        }
        if i in exact_lookup:
            record["exact_kl"] = exact_lookup[i]
        rows.append(record)
    return {
        "model": {
            "type": "GaussianMixture",
            "n_components": int(model.n_components),
            "columns": columns,
            "standardize": bool(standardize),
            "center": center.tolist(),
            "scale": scale.tolist(),
            "units": "parameters are in standardized units: (value - center) / scale",
            "priors": {
                "weight_concentration_prior": priors["weight_concentration_prior"],
                "mean_precision_prior": priors["mean_precision_prior"],
                "mean_prior": priors["mean_prior"].tolist(),
                "degrees_of_freedom_prior": priors["degrees_of_freedom_prior"],
                "covariance_prior": priors["covariance_prior"].tolist(),
            },
            "posterior": {
                "weight_concentration": model.weight_concentration_.tolist(),
                "mean_precision": model.mean_precision_.tolist(),
                "means": model.means_.tolist(),
                "degrees_of_freedom": model.degrees_of_freedom_.tolist(),
                "scale": model.scale_.tolist(),
            },
            "elbo": model.lower_bound_,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
        },
        "accuracy": accuracy,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            dataset = load_faithful()
            run_mixture(
                dataset.data, list(dataset.columns), list(dataset.row_labels), components=2,
                standardize=True, top=args.top, exact=args.exact, seed=args.seed, n_init=args.n_init,
                json_path=args.json,
                title="Old Faithful (272 eruptions), Gaussian mixture with K = 2 on standardised data",
            )
        else:
            columns = None if args.columns is None else [c.strip() for c in args.columns.split(",")]
            data, columns, labels = read_numeric_csv(args.file, columns)
            run_mixture(
                data, columns, labels, components=args.components, standardize=args.standardize,
                top=args.top, exact=args.exact, seed=args.seed, n_init=args.n_init,
                json_path=args.json,
                title=f"{args.file}: Gaussian mixture with K = {args.components} on {', '.join(columns)}",
            )
    except (ValueError, TypeError) as error:
        print(f"fg-influence: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
