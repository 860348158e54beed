"""Argument types and options shared by the subcommands."""

from __future__ import annotations

import argparse
import inspect
import math
import re
from pathlib import Path

from ..influence.exact import REFIT_TOL


#: Arguments that are negative numbers, such as -1, -.5, -1e-9, -inf and -nan.
#: argparse's own pattern (Python 3.11) matches only the first two forms, so
#: it reads "--tol -1e-9" as an option and reports "expected one argument"
#: instead of passing the value to the option's type function for its range check.
NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that reads every negative number in NEGATIVE_NUMBER as a value, not an option.

    Subparsers made by ``add_subparsers`` are of the same class. No option
    string here looks like a negative number, which argparse requires for
    treating such arguments as values.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # NOTE: _negative_number_matcher is private to argparse (checked with Python
        # 3.11). test_bad_tol_is_one_error_line in tests/test_cli_tol.py fails if it stops working.
        self._negative_number_matcher = NEGATIVE_NUMBER


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def exact_count(text: str):
    if text == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def positive_finite_float(text: str) -> float:
    """Parse a positive finite number, such as the value of --tol."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}") from None
    # float() also accepts 'nan' and 'inf', and rounds '1e-400' to 0.
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def relative_tolerance(text: str) -> float:
    """Parse a relative ELBO change tolerance, the value of --tol: a finite number in (0, 1)."""
    message = f"expected a relative tolerance between 0 and 1 (such as 1e-9), got {text!r}"
    try:
        value = positive_finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(message) from None
    # A relative change of 1 or more is met at the second iteration whatever
    # the fit does, so the fit would stop early and report convergence.
    if value >= 1:
        raise argparse.ArgumentTypeError(message)
    return value


def default_tol(*model_classes) -> float:
    """Return the ``tol`` default that the constructors of ``model_classes`` share."""
    defaults = {inspect.signature(cls).parameters["tol"].default for cls in model_classes}
    if len(defaults) != 1:
        names = [cls.__name__ for cls in model_classes]
        raise RuntimeError(f"the models {names} have different tol defaults {sorted(defaults)}; "
                           f"give each its own --tol default")
    return defaults.pop()


def add_tol_option(parser: argparse.ArgumentParser, default: float) -> None:
    """Add --tol, the relative ELBO change at which the CAVI fit stops.

    ``default`` is the model's own default (see :func:`default_tol`), so
    leaving the option out fits the model exactly as the Python API does.
    """
    parser.add_argument("--tol", type=relative_tolerance, default=default, metavar="TOL",
                        help=f"relative ELBO change at which the CAVI fit stops, between 0 and 1: it ends when the "
                             f"ELBO changes by at most TOL times |ELBO| between iterations; a smaller "
                             f"TOL runs more iterations (default {default:g})")


#: Values of --method: the two estimates and exact refits.
METHODS = ("division", "linear-response", "exact")


def add_method_option(parser: argparse.ArgumentParser, *, exact: bool = True) -> None:
    """Add --method, for subcommands whose model offers the linear-response correction.

    With ``exact=False`` the choice 'exact' is not offered.
    """
    help_text = ("how to compute the posterior without each row: 'division' holds the other rows' "
                 "responsibilities fixed; 'linear-response' adds their first-order response, which "
                 "is closer to exact refits where components overlap, and closer still with a "
                 "tighter --tol (such as 1e-12)")
    if exact:
        help_text += ("; 'exact' refits CAVI without each row, warm-started from the fit, which "
                      "costs one refit per row and cannot be combined with --exact")
    parser.add_argument("--method", choices=METHODS if exact else METHODS[:2], default="division",
                        help=help_text + " (default: division)")


#: --exact help text on how a refit is computed, for models fitted by CAVI.
CAVI_REFITS = f"each refit runs CAVI to a relative ELBO change of {REFIT_TOL:g}"


def add_site_options(parser: argparse.ArgumentParser, sites: str = "rows", *, top: int = 10,
                     json_contents: str = "the posterior", exact_default: str = "no refits",
                     refits: str = CAVI_REFITS) -> None:
    """Add --top, --exact and --json, naming the sites (rows, groups, ...) in their help.

    ``exact_default`` describes, in the help, what happens without --exact,
    and ``refits`` how each refit is computed.
    """
    parser.add_argument("--top", type=positive_int, default=top, metavar="N",
                        help=f"number of most influential {sites} to print (default {top})")
    parser.add_argument("--exact", type=exact_count, default=None, metavar="N|all",
                        help=f"refit without each of the N {sites} of largest estimated KL, or 'all' "
                             f"{sites}, and report the agreement with the estimates (default: "
                             f"{exact_default}; {refits})")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help=f"write {json_contents} and one record per {sites.rstrip('s')} to this "
                             f"JSON file")


def add_report_options(parser: argparse.ArgumentParser, *, exact_default: str = "no refits",
                       random_start: bool = True, refits: str = CAVI_REFITS) -> None:
    """Add the options every model subcommand shares: --top, --exact, --seed, --n-init, --json, --plot.

    ``random_start=False`` leaves out --seed and --n-init, for models whose
    CAVI has no random starting point (linear regression). ``refits`` is
    passed on to :func:`add_site_options`.
    """
    add_site_options(parser, "rows", json_contents="the priors, posterior", exact_default=exact_default,
                     refits=refits)
    if random_start:
        parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                            help="random seed for the k-means start of CAVI (default 0)")
        parser.add_argument("--n-init", type=positive_int, default=3, metavar="N",
                            help="number of CAVI starting points; the best ELBO is kept (default 3)")
    parser.add_argument("--plot", type=Path, default=None, metavar="PATH",
                        help="write a PNG report (influence by row, the data coloured by influence, "
                             "and the estimates against exact refits when --exact is given) to this "
                             "file; needs Matplotlib")


def parse_columns(text: str | None) -> list[str] | None:
    """Split the --columns value at commas, or return None when the option is absent.

    Every subcommand with --columns parses it here, so that empty entries and
    repeated names are rejected the same way everywhere.
    """
    if text is None:
        return None
    columns = [name.strip() for name in text.split(",")]
    if "" in columns:
        raise ValueError(
            f"--columns must be comma-separated column names without empty entries, got {text!r}"
        )
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(
            f"--columns names {', '.join(map(repr, repeated))} more than once in {text!r}; "
            f"list each column once"
        )
    return columns


def format_spearman(value: float) -> str:
    """Spearman correlation to four places, or why it is undefined."""
    if value != value:
        return "undefined (the estimates or the exact values are all equal)"
    return f"{value:.4f}"


def format_relative_error(value: float) -> str:
    """Format a relative error as a percentage to three significant digits, as every command prints it."""
    return f"{100 * value:.3g}%"


def other_optimum_note(result) -> tuple[str | None, list]:
    """Describe the refits that landed at another local optimum, with the agreement without them.

    Returns the line to print (None when no refit was flagged) and the
    labels of the flagged rows, for the JSON document.
    """
    import numpy as np
    from scipy.stats import spearmanr

    from ..influence.result import relative_errors

    other = getattr(result, "exact_other_optimum", None)
    if other is None or not np.any(other):
        return None, []
    labels = [result.labels[i] for i in result.exact_sites[other]]
    listed = ", ".join(str(label) for label in labels[:10]) + (", ..." if len(labels) > 10 else "")
    line = f"{len(labels)} of these refits landed at another local optimum (rows {listed})"
    same_optimum = ~other & np.isfinite(result.exact_kl)
    if same_optimum.sum() >= 3:
        estimate = result.kl[result.exact_sites[same_optimum]]
        exact = result.exact_kl[same_optimum]
        median = float(np.median(relative_errors(estimate, exact)))
        line += (f"; without them: Spearman {format_spearman(spearmanr(estimate, exact)[0])}, median "
                 f"relative error {format_relative_error(median)}")
    return line, labels
