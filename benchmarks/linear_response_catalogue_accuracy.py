"""Accuracy of division and of the linear-response correction on the catalogue mixtures.

For each mixture of the model catalogue on shipped data, this fits the
model (``n_init=3, random_state=0, tol=1e-13``, the fits of
``docs/model-catalogue.md``), refits it without each row (warm-started CAVI
to the library's relative ELBO tolerance of 1e-12), and compares the
KL(q || q without the row) of both estimates with the refits: Spearman rank
correlation, overlap of the ten rows with the largest KL, and median
relative error.

Rows with identical values have identical estimates and identical refits.
So count, binary and categorical data are refitted once per distinct row,
and the other data sets at every row.

Usage::

    python benchmarks/linear_response_catalogue_accuracy.py [--cases epil,galaxies-2,...]

All cases together take about 40 seconds on two cores, most of it in the
272 refits of the mixture of regressions on faithful.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fg_influence.datasets import (
    load_biochemists,
    load_epil,
    load_faithful,
    load_galaxies,
    load_iris,
    load_stackloss,
    load_titanic,
)
from fg_influence.models import (
    BernoulliMixture,
    CategoricalMixture,
    DiagonalGaussianMixture,
    MixtureOfRegressions,
    PoissonMixture,
)

FIT = {"n_init": 3, "random_state": 0, "tol": 1e-13, "max_iter": 20000}


def _regression(data, response_column):
    design = np.delete(data, response_column, axis=1)
    return design, data[:, response_column]


#: name -> (description, model factory, fit arguments loader, refit distinct rows only).
CASES = {
    "galaxies-2": ("diagonal Gaussian, galaxies / 1000", lambda: DiagonalGaussianMixture(2, **FIT),
                   lambda: (load_galaxies().data / 1000,), False),
    "galaxies-3": ("diagonal Gaussian, galaxies / 1000", lambda: DiagonalGaussianMixture(3, **FIT),
                   lambda: (load_galaxies().data / 1000,), False),
    "iris": ("diagonal Gaussian, iris", lambda: DiagonalGaussianMixture(3, **FIT),
             lambda: (load_iris().data,), False),
    "epil": ("Poisson, epil (y)", lambda: PoissonMixture(2, **FIT), lambda: (load_epil().data[:, :1],), True),
    "bioChemists": ("Poisson, bioChemists (art)", lambda: PoissonMixture(2, **FIT),
                    lambda: (load_biochemists().data[:, :1],), True),
    "titanic": ("categorical, titanic", lambda: CategoricalMixture(2, **FIT),
                lambda: (load_titanic().codes,), True),
    "titanic-binary": ("Bernoulli, titanic (age, sex, survived)", lambda: BernoulliMixture(2, **FIT),
                       lambda: (load_titanic().codes[:, 1:],), True),
    "faithful": ("regressions, faithful (waiting on eruptions)", lambda: MixtureOfRegressions(2, **FIT),
                 lambda: _regression(load_faithful().data, 1), False),
    "stackloss": ("regressions, stackloss", lambda: MixtureOfRegressions(2, **FIT),
                  lambda: _regression(load_stackloss().data, 3), False),
}


def refitted_rows(data: np.ndarray, distinct: bool) -> np.ndarray:
    """Select every row, or the first row of each distinct value."""
    if not distinct:
        return np.arange(len(data))
    _, first = np.unique(data, axis=0, return_index=True)
    return np.sort(first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated names from: " + ", ".join(CASES))
    args = parser.parse_args()
    names = args.cases.split(",")
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    print(f"{'model, data':46} {'K':>2} {'rows refitted':>13}  {'method':16} {'Spearman':>9} {'top-10':>7} "
          f"{'median rel. err':>16}")
    for name in names:
        description, make, load, distinct = CASES[name]
        fit_args = load()
        model = make().fit(*fit_args)
        rows = refitted_rows(np.column_stack(fit_args), distinct)

        start = time.perf_counter()
        division = model.influence()
        response = model.influence(method="linear-response")
        seconds = time.perf_counter() - start
        response.compute_exact(rows)
        division.exact_sites, division.exact_kl = response.exact_sites, response.exact_kl

        label = f"{rows.size} distinct" if distinct else f"all {rows.size}"
        for method, result in (("division", division), ("linear-response", response)):
            accuracy = result.accuracy()
            # With 10 rows or fewer the top-10 sets are every row.
            overlap = f"{accuracy['top_k_overlap']:7.0%}" if rows.size > 10 else f"{'n/a':>7}"
            print(f"{description:46} {model.n_components:2d} {label:>13}  {method:16} "
                  f"{accuracy['spearman']:9.4f} {overlap} {accuracy['median_relative_error']:16.2e}")
        system = response._response.system
        print(f"{'':46} largest eigenvalue of J {system.largest_eigenvalue:.3f}, condition number "
              f"{system.condition_number:.3g}; KL of both estimates for all "
              f"{model.posterior_.n_sites} rows in {seconds:.2f} s")


if __name__ == "__main__":
    main()
