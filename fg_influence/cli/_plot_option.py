"""The --plot option for subcommands that define their own report options."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._mixture_report import _check_plot_path


def add_plot_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", type=Path, default=None, metavar="PATH",
                        help="write a PNG report (influence by site, and the estimates against exact "
                             "refits when --exact is given) to this file; needs Matplotlib")


def check_plot_path(path: Path | None) -> None:
    """Reject an unwritable --plot path, or a missing Matplotlib, before the fit runs."""
    _check_plot_path(path)


def write_plot(result, path: Path | None, out, labels=None) -> None:
    """Write the PNG report of ``result`` to ``path`` when it is given, labelling sites with ``labels``."""
    if path is None:
        return
    from ..plotting import save_report

    if labels is not None:
        result.row_labels = list(labels)
    save_report(result, path)
    print(f"Wrote {path}", file=out)
