"""Accuracy of division and of the linear-response correction on factor analysis.

This fits ``FactorAnalysis`` with its default priors to standardized columns
of shipped data sets (the fits of ``fg-influence factor-analysis``), refits
it without each row (warm-started CAVI to the library's relative ELBO
tolerance of 1e-12), and compares the KL(q || q without the row) of both
estimates with the refits: Spearman rank correlation, overlap of the ten
rows with the largest KL, and median and maximum relative error.

* iris: the four measurements, 150 rows, one factor;
* faithful: eruption time and waiting time, 272 rows, one factor;
* penguins: bill length, bill depth, flipper length and body mass, 342
  complete rows, one factor.

With two factors the correction is undefined (rotating the factors leaves
the ELBO unchanged, so J has an eigenvalue at 1), and the script prints the
division numbers and the largest eigenvalue of J for iris only.

Usage::

    python benchmarks/linear_response_factor_analysis_accuracy.py [--every K]

``--every K`` refits every K-th row only (default 1, every row). All rows of
the three data sets take a few minutes, almost all of it in the refits. The
command line gives the same numbers for one data set, for example

    fg-influence factor-analysis fg_influence/datasets/data/iris.csv --factors 1 \\
        --method linear-response --exact all
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fg_influence.cli.factor_analysis import read_complete_rows
from fg_influence.influence import InfluenceResult
from fg_influence.influence import linear_response_factor_analysis as lrf
from fg_influence.models.factor_analysis import FactorAnalysis

DATA = "fg_influence/datasets/data/"

CASES = {
    "iris": ("iris.csv", None),
    "faithful": ("faithful.csv", None),
    "penguins": ("penguins.csv", ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]),
}


class _Quiet:
    """A stream that drops the warning about rows with missing values (penguins.csv has 2)."""

    def write(self, text):
        pass


def standardized(name: str) -> np.ndarray:
    path, columns = CASES[name]
    data, _, _ = read_complete_rows(Path(DATA) / path, columns, _Quiet())
    return (data - data.mean(axis=0)) / data.std(axis=0)


def report(description: str, n_rows: int, method: str, accuracy: dict) -> None:
    print(f"{description:28} {n_rows:5d}  {method:16} {accuracy['spearman']:9.4f} "
          f"{accuracy['top_k_overlap']:7.0%} {accuracy['median_relative_error']:16.2%} "
          f"{accuracy['max_relative_error']:13.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="refit every K-th row only (default 1)")
    args = parser.parse_args()

    print(f"{'data':28} {'rows':>5}  {'method':16} {'Spearman':>9} {'top-10':>7} {'median rel. err':>16} "
          f"{'max rel. err':>13}")
    for name in CASES:
        X = standardized(name)
        model = FactorAnalysis(1).fit(X)
        rows = np.arange(0, X.shape[0], args.every)

        start = time.perf_counter()
        division = model.influence()
        division_seconds = time.perf_counter() - start
        start = time.perf_counter()
        response = model.influence(method="linear-response")
        response_seconds = time.perf_counter() - start
        start = time.perf_counter()
        response.compute_exact(rows)
        exact_seconds = time.perf_counter() - start
        division.exact_sites, division.exact_kl = response.exact_sites, response.exact_kl

        description = f"{name} (1 factor)"
        for method, result in (("division", division), ("linear-response", response)):
            report(description, rows.size, method, result.accuracy(top_k=10))
        system = response._response.system
        print(f"{'':28} largest eigenvalue of J {system.largest_eigenvalue:.4f}, condition number of "
              f"I - J {system.condition_number:.3g}; all {X.shape[0]} rows by division "
              f"{division_seconds * 1e3:.1f} ms, by linear response {response_seconds * 1e3:.1f} ms, "
              f"{rows.size} exact refits {exact_seconds:.1f} s")
        if np.any(response.improper):
            print(f"{'':28} {int(response.improper.sum())} rows improper under linear response")

    X = standardized("iris")
    model = FactorAnalysis(2).fit(X)
    rows = np.arange(0, X.shape[0], args.every)
    division = InfluenceResult(model.posterior_).compute_exact(rows)
    report("iris (2 factors)", rows.size, "division", division.accuracy(top_k=10))
    try:
        model.influence(method="linear-response")
    except lrf.SingularResponseError as error:
        measured = str(error).split("largest measured here ")[1].split(")")[0]
        print(f"{'':28} linear response rejected: rotation symmetry, largest eigenvalue of J {measured}")


if __name__ == "__main__":
    main()
