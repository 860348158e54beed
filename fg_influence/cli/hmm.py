"""``fg-influence hmm``: a hidden Markov model, influence of each sequence or time step."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .._csv import read_numeric_csv
from ..influence.result import relative_errors
from ..models.hmm import EMISSIONS, HiddenMarkovModel
from ._mixture_report import TITLE_METHODS, _check_json_path, _finite_or_none, _json_accuracy, progress_bar
from ._options import (METHODS, add_site_options, add_tol_option, default_tol, format_relative_error,
                       format_spearman, positive_int)
from ._plot_option import add_plot_option, check_plot_path
from .hierarchical import read_group_column


def register(commands) -> None:
    parser = commands.add_parser(
        "hmm",
        help="hidden Markov model, influence of each sequence (or of each time step of one series)",
        description="Fit a Bayesian hidden Markov model to a column of a CSV file. With --sequence, "
                    "each sequence is one site and the groups are ranked by KL(q || q without the "
                    "sequence); without it the column is one series and each time step (its "
                    "emission and the transition into it) is ranked.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="CSV file with a header row")
    parser.add_argument("--target", required=True, metavar="COL", help="numeric column to model")
    parser.add_argument("--sequence", default=None, metavar="COL",
                        help="column of sequence labels; rows of a sequence keep their file order "
                             "unless --order is given (default: the whole column is one series)")
    parser.add_argument("--order", default=None, metavar="COL",
                        help="numeric column that orders the rows within each sequence, such as time")
    parser.add_argument("--states", "-k", type=positive_int, default=2, metavar="K",
                        help="number of hidden states (default 2)")
    parser.add_argument("--emission", choices=EMISSIONS, default="poisson",
                        help="emission family: poisson for counts, gaussian for real values "
                             "(default poisson)")
    parser.add_argument("--differences", action="store_true",
                        help="model the differences between consecutive values of each sequence "
                             "(such as weight gains) instead of the values")
    parser.add_argument("--method", choices=METHODS[:2], default="division",
                        help="how to estimate the posterior without each sequence or time step: "
                             "'division' keeps the other sequences' state chains (or the other time "
                             "steps' states) at their fitted posterior; 'linear-response' adds their "
                             "first-order response, which is much closer to exact refits. For time "
                             "steps it runs one forward-backward pass per step, so its time grows with "
                             "the square of the series length (default: division)")
    add_site_options(parser, "sites")
    add_plot_option(parser)
    add_tol_option(parser, default_tol(HiddenMarkovModel))
    parser.set_defaults(handler=run)


def read_sequences(args, out_err) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Sequences of the target column, their labels and the label of each time step (single series)."""
    columns = [args.target] + ([args.order] if args.order else [])
    options = {args.target: "--target", **({args.order: "--order"} if args.order else {})}
    data, _, row_labels = read_numeric_csv(args.file, columns, column_options=options)
    values = data[:, 0]
    order_key = data[:, 1] if args.order else np.arange(values.size, dtype=float)
    if args.sequence is None:
        order = np.argsort(order_key, kind="stable")
        series = values[order]
        if args.order:
            steps = [f"{order_key[i]:g}" for i in order]
        else:
            steps = [row_labels[i] for i in order]
        if args.differences:
            series, steps = np.diff(series), steps[1:]
        return [series], ["series"], steps
    labels = read_group_column(args.file, args.sequence, "--sequence")
    distinct = list(dict.fromkeys(labels))
    sequences, kept = [], []
    short = []
    for label in distinct:
        rows = np.array([i for i, value in enumerate(labels) if value == label])
        rows = rows[np.argsort(order_key[rows], kind="stable")]
        sequence = np.diff(values[rows]) if args.differences else values[rows]
        if sequence.size < 2:
            short.append(label)
            continue
        sequences.append(sequence)
        kept.append(label)
    if short:
        print(f"fg-influence: warning: dropped {len(short)} sequence(s) with fewer than 2 values: "
              f"{short[:10]}", file=out_err)
    if not sequences:
        raise ValueError(f"no sequence of {args.target!r} has at least 2 values; an HMM needs transitions")
    return sequences, kept, []


def run(args, out=None) -> dict:
    out = sys.stdout if out is None else out
    _check_json_path(args.json)
    check_plot_path(args.plot)
    if args.sequence is not None and args.sequence in (args.target, args.order):
        raise ValueError("--sequence must name a different column from --target and --order")
    start = time.perf_counter()
    sequences, labels, steps = read_sequences(args, sys.stderr)
    model = HiddenMarkovModel(args.states, emission=args.emission, tol=args.tol).fit(sequences)
    print(f"{args.file}: {args.states}-state hidden Markov model of "
          f"{'differences of ' if args.differences else ''}{args.target} with {args.emission} emissions "
          f"({len(sequences)} sequence(s), {sum(s.size for s in sequences)} values)", file=out)
    print(f"ELBO {model.lower_bound_:.4f} after {model.n_iter_} CAVI iterations"
          f"{'' if model.converged_ else ' (not converged)'}", file=out)
    means = ", ".join(f"{m:.4g}" for m in model.means_)
    print(f"State means: {means}; transition matrix E[A]: {np.round(model.transition_, 3).tolist()}",
          file=out)

    if args.sequence is None:
        sites, kl, exact_sites, exact_values, accuracy = _time_steps(model, args)
        site_labels, what = steps, "time steps"
        site_values = sequences[0]
    else:
        sites, kl, exact_sites, exact_values, accuracy = _sequences(model, args)
        site_labels, what = labels, "sequences"
        site_values = np.array([s.size for s in sequences])
    exact_lookup = dict(zip(exact_sites.tolist(), exact_values.tolist()))

    order = np.argsort(-kl, kind="stable")[: args.top]
    title_method = TITLE_METHODS[args.method]
    print(f"\nThe {len(order)} most influential {what}, by KL(q || q without it){title_method}:", file=out)
    value_header = "length" if args.sequence is not None else "value"
    # The first column shows labels (sequence labels or time steps); "site" in the JSON is a position.
    label_header = args.sequence if args.sequence is not None else (args.order or "step")
    header = [label_header, value_header, "KL"] + (["exact KL"] if exact_lookup else [])
    table = []
    for i in order:
        cells = [str(site_labels[i]), f"{site_values[i]:.6g}", f"{kl[i]:.5f}"]
        if exact_lookup:
            value = exact_lookup.get(int(i))
            cells.append("" if value is None else f"{value:.5f}")
        table.append(cells)
    widths = [max([8, len(h)] + [len(row[c]) for row in table]) for c, h in enumerate(header)]
    for cells in [header] + table:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=out)
    if accuracy is not None:
        median = accuracy.get("median_relative_error")
        print(f"\nAgreement with exact refits over {accuracy['n_sites']} {what}: Spearman "
              f"{format_spearman(accuracy['spearman'])}, top-{accuracy['top_k']} overlap "
              f"{accuracy['top_k_overlap']:.0%}"
              f"{'' if median is None else f', median relative error {format_relative_error(median)}'}",
              file=out)
    print(f"Total time: {time.perf_counter() - start:.2f} s", file=out)

    records = []
    for i in range(kl.size):
        records.append({
            "site": i,
            "label": str(site_labels[i]),
            "kl": _finite_or_none(kl[i]),
            "exact_kl": _finite_or_none(exact_lookup[i]) if i in exact_lookup else None,
        })
    document = {
        "method": args.method,
        "model": {
            "type": "HiddenMarkovModel",
            "target": args.target,
            "emission": args.emission,
            "n_states": args.states,
            "differences": bool(args.differences),
            "sites": what,
            "means": np.asarray(model.means_).tolist(),
            "transition": model.transition_.tolist(),
            "initial": model.initial_.tolist(),
            "elbo": model.lower_bound_,
            "tol": model.tol,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
        },
        "accuracy": _json_accuracy(accuracy),
        "sites": records,
    }
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise ValueError(f"could not write --json file {args.json}: {error.strerror or error}") from None
        print(f"Wrote {args.json}", file=out)
    if args.plot is not None:
        from ..plotting import SiteScores, save_report

        save_report(SiteScores(kl, site_labels, exact_sites, exact_values), args.plot)
        print(f"Wrote {args.plot}", file=out)
    return document


def _sequences(model, args):
    result = model.influence(method=args.method)
    if args.exact is not None:
        n_sites = result.n_sites
        count = args.exact if args.exact == "all" else min(args.exact, n_sites)
        result.compute_exact(count, progress=progress_bar(n_sites if count == "all" else count))
    accuracy = None
    if result.exact_sites.size >= 2:
        accuracy = result.accuracy(top_k=min(10, result.exact_sites.size - 1))
    return np.arange(result.n_sites), result.kl, result.exact_sites, result.exact_kl, accuracy


def _time_steps(model, args):
    exact = args.exact
    if isinstance(exact, int):
        exact = min(exact, model.posterior_.graph.variables["x"].data.shape[0])
    influence = model.time_step_influence(exact=exact, method=args.method)
    accuracy = None
    if influence.exact_steps.size >= 2:
        k = min(10, influence.exact_steps.size - 1)
        estimate = influence.kl[influence.exact_steps]
        top_estimate = set(influence.exact_steps[np.argsort(-estimate, kind="stable")[:k]].tolist())
        top_exact = set(influence.exact_steps[np.argsort(-influence.exact_kl, kind="stable")[:k]].tolist())
        relative = relative_errors(estimate, influence.exact_kl)
        accuracy = {"n_sites": int(influence.exact_steps.size), "spearman": influence.spearman(),
                    "top_k": k, "top_k_overlap": len(top_estimate & top_exact) / k,
                    "median_relative_error": float(np.median(relative)) if relative.size else None}
    return (np.arange(influence.kl.size), influence.kl, influence.exact_steps, influence.exact_kl,
            accuracy)
