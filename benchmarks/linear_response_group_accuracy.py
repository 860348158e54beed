"""Accuracy of division and of linear response for groups of sites removed together.

For each fit below, ten groups of sites are drawn by
``numpy.random.default_rng(0)`` (each group without repeats), and
``fg_influence.influence.leave_group_out_kl`` estimates KL(q || q without
the group) by division and by linear response. Both are compared with exact
refits (warm-started CAVI to a relative ELBO tolerance of 1e-12): median and
maximum relative error, and the number of groups for which linear response
is the closer estimate.

* iris: 4 standardized columns, ``GaussianMixture(3, random_state=0, n_init=3)``,
  groups of 5 and of 20 rows;
* galaxies: 1 standardized column, ``GaussianMixture(4, random_state=0, n_init=3)``,
  groups of 5 and of 20 rows;
* sleepstudy: ``HierarchicalNormal`` with a slope on days, groups of 1 and
  of 3 of the 18 subjects;
* radon: ``HierarchicalNormal`` by county, groups of 5 and of 15 of the 85
  counties;
* epil: ``HiddenMarkovModel(2)`` with Poisson emissions, one sequence of
  seizure counts per patient, groups of 3 and of 10 of the 59 patients.

The first group size of iris, sleepstudy (3 subjects) and radon (5
counties) is the one ``tests/test_groups.py`` asserts on.

Usage::

    python benchmarks/linear_response_group_accuracy.py [--own-term]

It takes a few seconds, almost all of it in the refits. ``--own-term``
also prints the median and maximum relative error of the step with the
group's own term J_M taken out of J, g - (I - J + J_M)^-1 s_M. That step
is one Newton step on the fixed-point equations without the group.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fg_influence.datasets import load_epil, load_galaxies, load_iris, load_radon, load_sleepstudy
from fg_influence.influence import leave_group_out_kl, posterior_kl
from fg_influence.influence import linear_response, linear_response_blocks, linear_response_hmm
from fg_influence.models import GaussianMixture, HiddenMarkovModel, HierarchicalNormal

N_GROUPS = 10


def standardized(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def fit_iris():
    return GaussianMixture(3, random_state=0, n_init=3).fit(standardized(load_iris().data)).posterior_


def fit_galaxies():
    return GaussianMixture(4, random_state=0, n_init=3).fit(standardized(load_galaxies().data)).posterior_


def fit_sleepstudy():
    data = load_sleepstudy().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 2].astype(int), data[:, 1]).posterior_


def fit_radon():
    data = load_radon().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 3].astype(int)).posterior_


def fit_epil():
    data = load_epil().data
    counts, patient, period = data[:, 0], data[:, 1].astype(int), data[:, 2]
    sequences = [counts[patient == p][np.argsort(period[patient == p])] for p in np.unique(patient)]
    return HiddenMarkovModel(2).fit(sequences).posterior_


#: Description, fit and group sizes (in sites: rows, subjects, counties or patients).
CASES = [
    ("iris, K = 3", fit_iris, (5, 20)),
    ("galaxies, K = 4", fit_galaxies, (5, 20)),
    ("sleepstudy", fit_sleepstudy, (1, 3)),
    ("radon", fit_radon, (5, 15)),
    ("epil, HMM K = 2", fit_epil, (3, 10)),
]


def build_system(posterior):
    """Return the response system the group step of ``leave_group_out_kl`` uses for this fit."""
    if linear_response_hmm.is_hidden_markov(posterior):
        return linear_response_hmm.build_hidden_markov_response_system(posterior)
    if list(posterior.graph.variables_of_role("local")):
        return linear_response.build_response_system(posterior)
    return linear_response_blocks.build_hierarchical_response_system(posterior)


def own_term_kl(posterior, system, group) -> float:
    """Return the KL at g - (I - J + J_M)^-1 s_M, with one dense solve per group."""
    jacobian = system.jacobian - sum(system.site_jacobian(int(site)) for site in group)
    identity = np.eye(jacobian.shape[0])
    if isinstance(system, linear_response.ResponseSystem):
        message = system.site_messages(group).sum(axis=0).reshape(-1)
        corrected = system.coordinates.reshape(-1) - np.linalg.solve(identity - jacobian, message)
        parts = system.split(corrected.reshape(system.coordinates.shape))
        families = {block.variable: block.to_posterior(parts[block.variable]) for block in system.blocks}
    else:
        message = system.site_messages[group].sum(axis=0)
        families = system.to_globals(system.coordinates - np.linalg.solve(identity - jacobian, message))
    return posterior_kl(posterior.globals, families)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--own-term", action="store_true",
                        help="also report the step with the group's own term J_M taken out of J")
    own_term = parser.parse_args().own_term
    extra = f"  {'own-term median':>15} {'max':>8}" if own_term else ""
    print(f"{'data':16} {'sites removed':>13}  {'division median':>15} {'max':>8}  {'response median':>15} {'max':>8}  "
          f"{'closer':>6}  {'seconds':>7}{extra}")
    for description, fit, sizes in CASES:
        posterior = fit()
        if own_term:
            system = build_system(posterior)
        for size in sizes:
            rng = np.random.default_rng(0)
            groups = [rng.choice(posterior.n_sites, size, replace=False) for _ in range(N_GROUPS)]

            start = time.perf_counter()
            exact = leave_group_out_kl(posterior, groups, method="exact")
            division = leave_group_out_kl(posterior, groups)
            response = leave_group_out_kl(posterior, groups, method="linear-response")
            seconds = time.perf_counter() - start

            division_error = np.abs(division - exact) / exact
            response_error = np.abs(response - exact) / exact
            closer = int(np.sum(response_error < division_error))
            extra = ""
            if own_term:
                values = np.array([own_term_kl(posterior, system, group) for group in groups])
                own_error = np.abs(values - exact) / exact
                extra = f"  {np.median(own_error):15.2e} {own_error.max():8.2e}"
            print(f"{description:16} {f'{size} of {posterior.n_sites}':>13}  {np.median(division_error):15.2e} "
                  f"{division_error.max():8.2e}  {np.median(response_error):15.2e} {response_error.max():8.2e}  "
                  f"{f'{closer}/{N_GROUPS}':>6}  {seconds:7.2f}{extra}")


if __name__ == "__main__":
    main()
