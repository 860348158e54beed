"""Shared reading, printing and JSON output of the linreg, mixture and mixreg subcommands."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .._csv import (MISSING_VALUES, ROW_LABEL_COLUMN, _parses_as_float, numeric_column, read_csv_rows,
                    read_csv_table, separator_error)
from ._mixture_report import _check_output_path, _check_plot_path, progress_bar
from ._options import format_relative_error, format_spearman, other_optimum_note, parse_columns


def add_missing_option(parser, default: str = "raise") -> None:
    """Add --missing, which chooses what happens to rows with a missing value in a used column."""
    parser.add_argument("--missing", choices=("raise", "drop"), default=default,
                        help=f"rows with an empty or NA field in a used column: 'raise' stops with an "
                             f"error naming the first such row, 'drop' removes them with a warning that "
                             f"gives their count (default {default})")


def split_columns(text: str | None) -> list[str] | None:
    """Split a comma-separated --columns value; None when the option is absent."""
    return parse_columns(text)


def header_of(path: Path) -> list[str]:
    """Return the header names of a CSV file, for the default column choice."""
    header, _, _ = read_csv_rows(path)
    return header


def read_columns(path: Path, columns: list[str],
                 missing: str) -> tuple[dict[str, list[str]], list[str], list[int]]:
    """Read columns as text, passing the --missing warning on to stderr.

    Returns the table, the row labels and the CSV line of each row kept.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        table, labels, lines = read_csv_table(path, columns, missing=missing, line_numbers=True)
    for warning in caught:
        print(f"fg-influence: warning: {warning.message}", file=sys.stderr)
    return table, labels, lines


def numeric_matrix(table: dict[str, list[str]], columns: list[str], lines: list[int],
                   option: str = "--columns") -> np.ndarray:
    """Convert the named text columns to a float64 matrix; ``option`` is the option that named them."""
    return np.column_stack([numeric_column(table[name], name, lines, option) for name in columns])


def default_numeric_columns(path: Path, exclude: list[str]) -> list[str]:
    """List every column except ``rownames`` and ``exclude`` that has values, all of them numeric.

    Missing values (empty fields, ``NA`` and ``NaN``) are ignored, so a column with
    nothing but missing values is left out, and so is a text column. A column
    whose present values are partly numeric and partly text raises a
    ValueError naming the CSV line of its first text value: leaving it out
    would fit a different model than the file suggests.
    """
    header, body, lines = read_csv_rows(path)
    numeric = []
    for j, name in enumerate(header):
        if name == ROW_LABEL_COLUMN or name in exclude:
            continue
        # Each column is judged on its own present values, so that missing
        # values in other columns do not hide any of its rows.
        present = [(row[j].strip(), line) for row, line in zip(body, lines)
                   if row[j].strip() not in MISSING_VALUES]
        text = [(value, line) for value, line in present if not _parses_as_float(value)]
        if present and not text:
            numeric.append(name)
        elif text and len(text) < len(present):
            value, line = text[0]
            raise ValueError(
                f"column {name!r} of {path} is numeric except at line {line} ({value!r}); correct or "
                f"remove that value, or leave the column out with --columns"
            )
    if not numeric:
        error = separator_error(path, header)
        if error is not None:
            raise error
        besides = f" besides {list(exclude)}" if exclude else ""
        raise ValueError(f"CSV file {path} has no numeric columns{besides}; name them with --columns")
    return numeric


def finite_or_none(value):
    return float(value) if np.isfinite(value) else None


def report(*, model, result, labels: list[str], shown: dict[str, np.ndarray], extra: dict[str, np.ndarray],
           top: int, exact, json_path: Path | None, title: str, model_document: dict, summary: list[str],
           row_vectors: dict[str, np.ndarray] | None = None, out=None,
           plot_path: Path | None = None) -> dict:
    """Rank rows, optionally refit, print the table and write the JSON document; return the document.

    ``shown`` contains data columns printed beside each top row, and ``extra``
    contains further per-row measures (such as Cook's distance) printed and saved;
    ``row_vectors`` contains per-row arrays (such as coefficient shifts) saved only.
    """
    out = sys.stdout if out is None else out
    if json_path is not None and (json_path.is_dir() or not json_path.parent.is_dir()):
        raise ValueError(f"cannot write --json file {json_path}: it is a directory or its directory is missing")
    _check_plot_path(plot_path)
    start = time.perf_counter()
    kl = result.kl
    loo = result.loo_log_predictive
    # Labels first, so that warnings about refits name rows as the table does.
    result.row_labels = labels
    if exact is not None:
        count = exact if exact == "all" else min(exact, result.n_sites)
        result.compute_exact(count, progress=progress_bar(result.n_sites if count == "all" else count))
    seconds = time.perf_counter() - start

    print(title, file=out)
    for line in summary:
        print(line, file=out)
    order = result.top(top)
    exact_lookup = dict(zip(result.exact_sites.tolist(), result.exact_kl.tolist()))
    header = ["row"] + list(shown) + ["KL", "LOO log pred"] + list(extra) + (["exact KL"] if exact_lookup else [])
    widths = [max(8, len(name)) for name in header]
    estimated = ", estimated by linear response" if result.method == "linear-response" else ""
    print(f"\nThe {len(order)} most influential rows, by KL(q || q without the row){estimated}:", file=out)
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)), file=out)
    for i in order:
        cells = [labels[i]] + [f"{values[i]:.4g}" if isinstance(values[i], (float, np.floating)) else str(values[i])
                               for values in shown.values()]
        cells += [f"{kl[i]:.5f}", f"{loo[i]:.4f}"] + [f"{values[i]:.4g}" for values in extra.values()]
        if exact_lookup:
            value = exact_lookup.get(int(i))
            cells.append("" if value is None else f"{value:.5f}")
        print("  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=out)
    if result.improper.any():
        print(f"  {int(result.improper.sum())} rows leave an improper posterior when removed; their KL is "
              f"reported as inf", file=out)

    accuracy = None
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
        print(f"\nAgreement with exact refits over {accuracy['n_sites']} rows: Spearman "
              f"{format_spearman(accuracy['spearman'])}, top-{accuracy['top_k']} overlap {accuracy['top_k_overlap']:.0%}, "
              f"median relative error {format_relative_error(accuracy['median_relative_error'])}", file=out)
        note, other_rows = other_optimum_note(result)
        if note is not None:
            print(note, file=out)
            accuracy["other_optimum_rows"] = other_rows
    print(f"All-row estimates and refits: {seconds:.2f} s", file=out)

    rows = []
    for i in range(result.n_sites):
        record = {"row": i, "label": labels[i], "kl": finite_or_none(kl[i]),
                  "loo_log_predictive": finite_or_none(loo[i]), "improper": bool(result.improper[i])}
        for name, values in extra.items():
            record[name] = finite_or_none(values[i])
        for name, values in (row_vectors or {}).items():
            record[name] = [finite_or_none(v) for v in np.ravel(values[i])]
        if i in exact_lookup:
            record["exact_kl"] = finite_or_none(exact_lookup[i])
        rows.append(record)
    document = {
        "method": result.method,
        "model": model_document,
        "accuracy": None if accuracy is None else {
            key: finite_or_none(value) if isinstance(value, float) else value for key, value in accuracy.items()
        },
        "rows": rows,
    }
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise ValueError(f"could not write --json file {json_path}: {error.strerror or error}") from None
        print(f"Wrote {json_path}", file=out)
    if plot_path is not None:
        from ..plotting import save_report

        result.row_labels = labels
        save_report(result, plot_path)
        print(f"Wrote {plot_path}", file=out)
    return document
