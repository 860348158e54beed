"""Accuracy of division and of the linear-response correction on the hierarchical normal model.

This fits ``HierarchicalNormal`` with its default priors (the fits of
``fg-influence hierarchical``) to two shipped data sets, refits it without
each group (warm-started CAVI to the library's relative ELBO tolerance of
1e-12), and compares the KL(q || q without the group) of both estimates with
the refits: Spearman rank correlation, overlap of the ten groups with the
largest KL, and median and maximum relative error.

* radon: log radon by county, an intercept per county (85 groups, 919 rows);
* sleepstudy: reaction time on days by subject, an intercept and a slope per
  subject (18 groups, 180 rows).

Usage::

    python benchmarks/linear_response_hierarchical_accuracy.py

Both data sets together take about two seconds, almost all of it in the 103
refits. The command line gives the same numbers for one data set, for example

    fg-influence hierarchical fg_influence/datasets/data/radon.csv --target log.radon \\
        --group county.name --exact all --method linear-response
"""

from __future__ import annotations

import time

import numpy as np

from fg_influence.datasets import load_radon, load_sleepstudy
from fg_influence.influence import linear_response_blocks  # noqa: F401  (imported before the timings)
from fg_influence.models import HierarchicalNormal


def fit_radon() -> HierarchicalNormal:
    data = load_radon().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 3].astype(int))


def fit_sleepstudy() -> HierarchicalNormal:
    data = load_sleepstudy().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 2].astype(int), data[:, 1])


CASES = {
    "radon (log radon by county)": fit_radon,
    "sleepstudy (reaction on days, by subject)": fit_sleepstudy,
}


def main() -> None:
    print(f"{'data':42} {'groups':>6}  {'method':16} {'Spearman':>9} {'top-10':>7} {'median rel. err':>16} "
          f"{'max rel. err':>13}")
    for description, fit in CASES.items():
        model = fit()

        start = time.perf_counter()
        division = model.influence()
        division_seconds = time.perf_counter() - start
        start = time.perf_counter()
        response = model.influence(method="linear-response")
        response_seconds = time.perf_counter() - start
        start = time.perf_counter()
        response.compute_exact("all")
        exact_seconds = time.perf_counter() - start
        division.exact_sites, division.exact_kl = response.exact_sites, response.exact_kl

        for method, result in (("division", division), ("linear-response", response)):
            accuracy = result.accuracy(top_k=10)
            print(f"{description:42} {result.n_sites:6d}  {method:16} {accuracy['spearman']:9.4f} "
                  f"{accuracy['top_k_overlap']:7.0%} {accuracy['median_relative_error']:16.2%} "
                  f"{accuracy['max_relative_error']:13.2%}")
        system = response._response.system
        print(f"{'':42} largest eigenvalue of J {system.largest_eigenvalue:.3f}, condition number of "
              f"I - J {system.condition_number:.3g}; all groups by division {division_seconds * 1e3:.1f} ms, "
              f"by linear response {response_seconds * 1e3:.1f} ms, exact refits {exact_seconds:.2f} s")
        if np.any(response.improper):
            print(f"{'':42} {int(response.improper.sum())} groups improper under linear response")


if __name__ == "__main__":
    main()
