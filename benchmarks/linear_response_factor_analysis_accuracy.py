"""Accuracy of division and of the linear-response correction on factor analysis.

This fits ``FactorAnalysis`` with its default priors to standardized columns
of shipped data sets (the fits of ``fg-influence factor-analysis``), refits
it without each row (warm-started CAVI to the library's relative ELBO
tolerance of 1e-12), and compares the KL(q || q without the row) of both
estimates with the refits: Spearman rank correlation, overlap of the ten
rows with the largest KL, and median and maximum relative error.

* iris: the four measurements, 150 rows;
* faithful: eruption time and waiting time, 272 rows (one factor only);
* penguins: bill length, bill depth, flipper length and body mass, 342
  complete rows.

With two or more factors the fit without a row is defined up to a rotation
of the factors. Each refit is rotated to the rotation with the smallest KL
to the fit, as ``InfluenceResult.compute_exact`` does, and the script also
prints how much that rotation changed the refits' KL.

Usage::

    python benchmarks/linear_response_factor_analysis_accuracy.py [--factors 1,2,3] [--tol T] [--every K]

``--factors`` lists the numbers of factors to fit (default 1,2,3; a data
set is skipped when it has no more columns than factors). ``--tol`` is the
fits' relative ELBO tolerance (default: the model's, 1e-9). ``--every K``
refits every K-th row only (default 1, every row). One factor on the three
data sets takes a few minutes. Two and three factors on iris and penguins
take about 20 minutes on two shared cores, almost all of it in the refits.
The command line gives the same numbers for one data set, for example

    fg-influence factor-analysis fg_influence/datasets/data/iris.csv --factors 2 \\
        --method linear-response --tol 1e-12 --exact all
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fg_influence.cli.factor_analysis import read_complete_rows
from fg_influence.influence import posterior_kl, refit_without
from fg_influence.influence.factor_rotation import align_rotation
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


def aligned_refits(model: FactorAnalysis, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL to each row's refit after and before rotating the refit to the fit.

    ``compute_exact`` returns the first; the refits are made here so that
    the second costs no extra refit.
    """
    posterior = model.posterior_
    aligned, unaligned = np.empty(rows.size), np.empty(rows.size)
    for index, row in enumerate(rows):
        refit = refit_without(posterior, [int(row)])
        unaligned[index] = posterior_kl(posterior.globals, refit.globals)
        aligned[index] = posterior_kl(posterior.globals, align_rotation(posterior, refit).globals)
    return aligned, unaligned


def run_case(name: str, n_factors: int, tol: float | None, every: int) -> None:
    X = standardized(name)
    options = {} if tol is None else {"tol": tol, "max_iter": 100000}
    model = FactorAnalysis(n_factors, **options).fit(X)
    rows = np.arange(0, X.shape[0], every)

    start = time.perf_counter()
    division = model.influence()
    division_seconds = time.perf_counter() - start
    start = time.perf_counter()
    response = model.influence(method="linear-response")
    response_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if n_factors == 1:
        response.compute_exact(rows)
    else:
        exact, unaligned = aligned_refits(model, rows)
        response.exact_sites, response.exact_kl = rows, exact
    exact_seconds = time.perf_counter() - start
    division.exact_sites, division.exact_kl = response.exact_sites, response.exact_kl

    description = f"{name} ({n_factors} factor{'s' if n_factors > 1 else ''})"
    for method, result in (("division", division), ("linear-response", response)):
        report(description, rows.size, method, result.accuracy(top_k=10))
    system = response._response.system
    print(f"{'':28} {model.n_iter_} CAVI iterations; largest eigenvalue of J {system.largest_eigenvalue:.4f}, "
          f"condition number of I - J {system.condition_number:.3g}")
    if n_factors > 1:
        change = np.abs(unaligned - exact) / exact
        print(f"{'':28} rotation directions: eigenvalues of J {np.round(system.rotation_eigenvalues, 7).tolist()}, "
              f"|B u - u| {system.rotation_residual:.2g}; rotating the refits changed their KL by a median "
              f"{np.median(change):.2g} relative (max {change.max():.2g})")
    print(f"{'':28} all {X.shape[0]} rows by division {division_seconds * 1e3:.1f} ms, by linear response "
          f"{response_seconds * 1e3:.1f} ms, {rows.size} exact refits {exact_seconds:.1f} s")
    if np.any(response.improper):
        print(f"{'':28} {int(response.improper.sum())} rows improper under linear response")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="1,2,3", help="comma-separated numbers of factors (default 1,2,3)")
    parser.add_argument("--tol", type=float, default=None,
                        help="relative ELBO tolerance of the fits (default: the model's, 1e-9)")
    parser.add_argument("--every", type=int, default=1, help="refit every K-th row only (default 1)")
    args = parser.parse_args()
    factor_counts = [int(value) for value in args.factors.split(",")]

    print(f"{'data':28} {'rows':>5}  {'method':16} {'Spearman':>9} {'top-10':>7} {'median rel. err':>16} "
          f"{'max rel. err':>13}")
    for n_factors in factor_counts:
        for name in CASES:
            if standardized(name).shape[1] > n_factors:
                run_case(name, n_factors, args.tol, args.every)


if __name__ == "__main__":
    main()
