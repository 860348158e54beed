"""The ``fg-influence`` command: fit a model and rank the rows that move it most.

Each subcommand is a module with ``register(commands)``, which adds its
parser and sets ``handler`` to a function of the parsed arguments.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .. import __version__
from . import compare, demo, factor_analysis, gmm, hierarchical, hmm, lda, linreg, mixreg, mixture

SUBCOMMANDS = (demo, gmm, hierarchical, hmm, factor_analysis, lda, compare, linreg, mixture, mixreg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = build_parser().parse_args(argv)
    # Warnings print as one line, without the library's file path and source line.
    original_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        args.handler(args)
    except (ValueError, TypeError, NotImplementedError) as error:
        print(f"fg-influence: error: {_command_line_words(str(error))}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = original_format
    return 0


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"fg-influence: warning: {_command_line_words(str(message))} ({category.__name__})\n"


def _command_line_words(message: str) -> str:
    """Replace the Python names in a library message by the command-line options."""
    return (message.replace("method='division'", "--method division")
            .replace("(compute_exact)", "(--exact)"))


if __name__ == "__main__":
    sys.exit(main())
