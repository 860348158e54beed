"""Fit a Gaussian mixture and print or save its influence report."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from ..models import GaussianMixture
from ._exact_influence import ExactInfluence
from ._options import format_relative_error, format_spearman, other_optimum_note

#: Text that the influence table's title adds for each --method. Division,
#: the default, adds none, so its title is the one it had before the option.
TITLE_METHODS = {
    "division": "",
    "linear-response": ", estimated by linear response",
    "exact": ", from exact refits",
}


def progress_bar(total: int):
    """A stderr progress bar for exact refits (tqdm)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="exact refits", unit="refit", file=sys.stderr, mininterval=0.5,
               delay=1.0, leave=False)

    def update(done: int, total_count: int) -> None:
        bar.update(done - bar.n)
        if done == total_count:
            bar.close()

    return update


def reject_constant_columns(data: np.ndarray, columns: list[str]) -> None:
    """Raise ValueError naming the CSV columns of ``data`` (N, D) whose values are all equal.

    GaussianMixture.fit rejects such columns too, but it names them by their
    position in X. The command line checks first, so that the error uses
    the CSV header's name. With fewer than 2 rows every column is constant,
    so the check is left to the fit, which requires more rows.
    """
    if len(data) < 2:
        return
    constant = [name for name, spread in zip(columns, np.ptp(data, axis=0)) if spread == 0]
    if constant:
        value = data[0, columns.index(constant[0])]
        raise ValueError(
            f"column(s) {constant} are constant (every value of {constant[0]!r} is {value:g}), so "
            f"they have zero variance and no Gaussian mixture can be fitted to them; leave them out "
            f"with --columns"
        )


def name_x_columns(error: ValueError, columns: list[str]) -> ValueError:
    """Return ``error``, or a new ValueError with each "X column <position>" in the message replaced by the CSV name."""

    def column_name(match: re.Match) -> str:
        position = int(match.group(1))
        return f"column {columns[position]!r}" if position < len(columns) else match.group(0)

    message = re.sub(r"\bX column (\d+)\b", column_name, str(error))
    return error if message == str(error) else ValueError(message)


def run_mixture(data: np.ndarray, columns: list[str], labels: list[str], *, components: int,
                standardize: bool, top: int, exact, seed: int, n_init: int, json_path: Path | None,
                title: str, out=None, plot_path: Path | None = None, method: str = "division",
                tol: float | None = None) -> dict:
    """Fit, rank and print the report to ``out`` (default: the current ``sys.stdout``).

    ``method`` is "division", "linear-response" or "exact"; "exact" refits
    without every row and rejects ``exact``, which would compare estimates
    with refits. ``tol`` is the fit's relative ELBO tolerance (None: the
    GaussianMixture default). Returns the JSON document, which is also
    written to ``json_path`` when given.
    """
    # Looked up at call time, because a default of sys.stdout would be bound at
    # import and ignore later redirection such as contextlib.redirect_stdout.
    out = sys.stdout if out is None else out
    _check_method(method, exact)
    _check_json_path(json_path)
    _check_plot_path(plot_path)
    start = time.perf_counter()
    center = data.mean(axis=0) if standardize else np.zeros(data.shape[1])
    scale = data.std(axis=0) if standardize else np.ones(data.shape[1])
    if standardize and np.any(scale == 0):
        constant = [c for c, s in zip(columns, scale) if s == 0]
        raise ValueError(f"cannot standardize constant column(s) {constant}; drop them with --columns")
    reject_constant_columns(data, columns)
    X = (data - center) / scale

    tol_option = {} if tol is None else {"tol": tol}
    try:
        model = GaussianMixture(components, n_init=n_init, random_state=seed, **tol_option).fit(X)
    except ValueError as error:
        # Checks of single columns, such as for nearly constant ones, name them by position in X.
        renamed = name_x_columns(error, columns)
        if renamed is error:
            raise
        raise renamed from None
    if method == "exact":
        fit_seconds = time.perf_counter() - start
        result = ExactInfluence(model.posterior_, progress=progress_bar(len(X)))
    else:
        result = model.influence(method=method)
        fit_seconds = time.perf_counter() - start
    # Labels first, so that warnings about refits name rows as the table does.
    result.row_labels = labels
    if exact is not None:
        count = exact if exact == "all" else min(exact, len(X))
        result.compute_exact(count, progress=progress_bar(len(X) if count == "all" else count))
    total_seconds = time.perf_counter() - start

    _print_report(model, result, data, columns, labels, center, scale, top, title, out, method)
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
        print(
            f"\nAgreement with exact refits over {accuracy['n_sites']} rows: Spearman "
            f"{format_spearman(accuracy['spearman'])}, top-{accuracy['top_k']} overlap "
            f"{accuracy['top_k_overlap']:.0%}, median relative error "
            f"{format_relative_error(accuracy['median_relative_error'])}",
            file=out,
        )
        note, other_rows = other_optimum_note(result)
        if note is not None:
            print(note, file=out)
            accuracy["other_optimum_rows"] = other_rows
    else:
        accuracy = None
    if method == "exact":
        print(f"Fit: {fit_seconds:.2f} s; total with exact refits of all {len(X)} rows: "
              f"{total_seconds:.2f} s", file=out)
    else:
        refits = f"; total with refits: {total_seconds:.2f} s" if result.exact_sites.size else ""
        print(f"Fit and all-row estimates: {fit_seconds:.2f} s{refits}", file=out)

    document = _json_document(model, result, columns, labels, center, scale, standardize, accuracy,
                              method)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise ValueError(f"could not write --json file {json_path}: {error.strerror or error}") from None
        print(f"Wrote {json_path}", file=out)
    if plot_path is not None:
        write_plot(result, plot_path, labels, columns, standardize)
        print(f"Wrote {plot_path}", file=out)
    return document


def write_plot(result, path: Path, labels: list[str], columns: list[str], standardize: bool) -> None:
    """Write the PNG report of ``result`` to ``path``, labelling rows with ``labels``."""
    from ..plotting import save_report

    result.row_labels = labels
    names = [f"{c} (standardized)" for c in columns] if standardize else columns
    save_report(result, path, column_names=names)


def _check_method(method: str, exact) -> None:
    """Reject --exact with --method exact, before the fit and refits run."""
    if method not in TITLE_METHODS:
        raise ValueError(f"--method must be one of {list(TITLE_METHODS)}, got {method!r}")
    if method == "exact" and exact is not None:
        raise ValueError(
            f"--exact {exact} compares the estimates with exact refits, but --method exact already "
            f"refits without every row and has no estimates to compare; drop --exact, or keep it "
            f"with --method division or --method linear-response"
        )


def _check_plot_path(path: Path | None) -> None:
    """Reject a --plot path that cannot be written, or a missing Matplotlib, before the fit and refits run."""
    _check_output_path(path, "--plot")
    if path is None:
        return
    from ..plotting import _require_matplotlib

    try:
        _require_matplotlib()
    except ImportError as error:
        raise ValueError(f"--plot cannot be written: {error}, or leave out --plot") from None


def _check_output_path(path: Path | None, option: str) -> None:
    """Reject an output path that cannot be written, before the fit and refits run."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{option} must name a file, but {path} is a directory")
    if not path.parent.is_dir():
        raise ValueError(
            f"cannot write {option} file {path}: directory {path.parent} not found; create it first"
        )


def _print_report(model, result, data, columns, labels, center, scale, top, title, out, method) -> None:
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
    print(f"\nThe {len(order)} most influential rows, by KL(q || q without the row)"
          f"{TITLE_METHODS[method]}:", file=out)
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


def _json_accuracy(accuracy: dict | None) -> dict | None:
    """Replace NaN or infinite accuracy values with None, because strict JSON has no NaN."""
    if accuracy is None:
        return None
    return {key: _finite_or_none(value) if isinstance(value, float) else value
            for key, value in accuracy.items()}


def _json_document(model, result, columns, labels, center, scale, standardize, accuracy, method) -> dict:
    priors = model.priors(model.posterior_.data["x"])
    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    rows = []
    for i in range(result.n_sites):
        record = {
            "row": i,
            "label": labels[i],
            "kl": _finite_or_none(result.kl[i]),
            "loo_log_predictive": _finite_or_none(result.loo_log_predictive[i]),
            "mean_shift": None if result.improper[i] else _finite_or_none(result.mean_shift_norm[i]),
            "improper": bool(result.improper[i]),
        }
        if i in exact_lookup:
            record["exact_kl"] = _finite_or_none(exact_lookup[i])
        if method == "exact":
            record["other_optimum"] = bool(result.other_optimum[i])
        rows.append(record)
    return {
        "method": method,
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
            "tol": model.tol,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
        },
        "accuracy": _json_accuracy(accuracy),
        "rows": rows,
    }


def _check_json_path(path: Path | None) -> None:
    """Reject a --json path that cannot be written, before the fit and refits run."""
    _check_output_path(path, "--json")
