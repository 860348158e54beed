"""The ``fg-influence`` command: fit a model and rank the rows that move it most.

Each subcommand is a module with ``register(commands)``, which adds its
parser and sets ``handler`` to a function of the parsed arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings

from .. import __version__
from . import compare, demo, factor_analysis, gmm, hierarchical, hmm, lda, linreg, mixreg, mixture
from ._options import ArgumentParser

SUBCOMMANDS = (demo, gmm, hierarchical, hmm, factor_analysis, lda, compare, linreg, mixture, mixreg)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="fg-influence",
        description="Leave-one-out influence of each row on a variational Bayes model, estimated by "
                    "dividing each row's site message out of the fitted posterior.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Invalid input, and a method the model does not support, give exit code
    2 and one error line on stderr. Usage errors found by argparse raise
    SystemExit(2) from ``parse_args`` instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    options = _subcommand_options(parser, args.command)

    def format_warning(message, category, filename, lineno, line=None) -> str:
        # One line, without the library's file path and source line.
        return f"fg-influence: warning: {_command_line_words(str(message), options)} ({category.__name__})\n"

    original_format = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        args.handler(args)
    except (ValueError, TypeError, NotImplementedError) as error:
        print(f"fg-influence: error: {_command_line_words(str(error), options)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = original_format
    return 0


def _subcommand_options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """Return the option strings (such as '--tol') that subcommand ``command`` accepts."""
    subparsers = next(action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction))
    return {name for action in subparsers.choices[command]._actions for name in action.option_strings}


#: Advice about the iteration limit. The command line has no option for it,
#: so the advice points to the Python API instead.
_ITERATION_LIMIT = "the Python API's max_iter raises the iteration limit"

#: Library phrases and their command-line wording, tried in order. A
#: replacement that names an option applies only when the subcommand has
#: that option, so the advice never names an option the user cannot pass.
_PHRASES = [
    # (pattern, replacement, option the replacement needs, or None)
    (r"method='division'", "--method division", "--method"),
    (r"\(compute_exact\)", "(--exact)", "--exact"),
    (r"increase max_iter, loosen tol, or try more n_init",
     f"loosen --tol or try a larger --n-init ({_ITERATION_LIMIT})", "--n-init"),
    (r"increase max_iter, loosen tol, or try more n_init", f"loosen --tol ({_ITERATION_LIMIT})", "--tol"),
    (r"increase max_iter or loosen tol", f"loosen --tol ({_ITERATION_LIMIT})", "--tol"),
    (r"Refit with a larger max_iter \(and check the fit\) before using it",
     f"Check the fit before using it ({_ITERATION_LIMIT})", None),
    (r"max_iter=(\d+) iterations", r"\1 iterations", None),
    (r",? (?:or|and) a\s+larger max_iter", "", "--tol"),
    (r"\btol=([-+.\deE]+)", r"--tol \1", "--tol"),
    (r"(?<![-\w.=])tol\b", "--tol", "--tol"),
    (r"more n_init", "a larger --n-init", "--n-init"),
    (r"\bn_init\b", "--n-init", "--n-init"),
    (r"\brandom_state\b", "--seed", "--seed"),
]


def _command_line_words(message: str, options: set[str] | frozenset[str] = frozenset()) -> str:
    """Replace the Python names in a library message by the options of the subcommand.

    ``options`` contains the option strings the subcommand accepts.
    """
    for pattern, replacement, option in _PHRASES:
        if option is None or option in options:
            message = re.sub(pattern, replacement, message)
    return message


if __name__ == "__main__":
    sys.exit(main())
