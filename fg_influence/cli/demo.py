"""``fg-influence demo``: the Gaussian mixture on the bundled Old Faithful data."""

from __future__ import annotations

from ..datasets import load_faithful
from ..models import GaussianMixture
from ._mixture_report import run_mixture
from ._options import add_method_option, add_report_options, add_tol_option, default_tol


def register(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="Gaussian mixture (K = 2) on the bundled Old Faithful data, checked against exact refits",
        description="Fit a two-component Gaussian mixture to standardised Old Faithful eruptions "
                    "(duration and waiting time, minutes), print the ten rows with the largest "
                    "KL(q || q without the row), and compare the estimates with exact refits of all "
                    "272 rows.",
    )
    add_report_options(parser, exact_default="all rows, or none with --method exact")
    add_method_option(parser)
    add_tol_option(parser, default_tol(GaussianMixture))
    parser.set_defaults(handler=run)


def run(args) -> None:
    dataset = load_faithful()
    # Without --exact the demo checks every estimate against its refit,
    # unless --method exact already reports the refits themselves.
    exact = args.exact
    if exact is None and args.method != "exact":
        exact = "all"
    run_mixture(
        dataset.data, list(dataset.columns), list(dataset.row_labels), components=2,
        standardize=True, top=args.top, exact=exact, seed=args.seed, n_init=args.n_init,
        json_path=args.json, plot_path=args.plot, method=args.method, tol=args.tol,
        title="Old Faithful (272 eruptions), Gaussian mixture with K = 2 on standardised data",
    )
