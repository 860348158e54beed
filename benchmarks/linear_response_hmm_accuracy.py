"""Accuracy of division and of the linear-response correction for hidden Markov models.

For each shipped panel of sequences this fits a hidden Markov model with
the model's defaults, refits it without every sequence in turn
(warm-started CAVI to a relative ELBO tolerance of 1e-12), and compares
the KL(q || q without the sequence) of both estimates with the refits:
Spearman rank correlation, overlap of the ten sequences with the largest
KL, and median relative error.

The panels are the seizure counts of the 59 epilepsy patients (Poisson
emissions, 4 periods each) and the weight gains of the ChickWeight chicks
(Gaussian emissions, 49 chicks with at least 2 gains, up to 11 each).

The single series is the Nile's annual flow (Gaussian emissions, 100
years), whose sites are time steps. Besides division and linear response,
its rows show one Newton step on the fixed-point equations of the model
without the step, which uses that model's own Jacobian J_t in place of J
(``newton_time_step_coordinates``).

Usage::

    python benchmarks/linear_response_hmm_accuracy.py [--panels epil,chickweight,nile] [--states 2,3] [--tol 1e-9]

Refitting every sequence or time step takes a few seconds per panel on two cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr

from fg_influence.datasets import load_chickweight, load_epil, load_nile
from fg_influence.influence import divide
from fg_influence.influence import linear_response_hmm
from fg_influence.influence.linear_response_blocks import corrected_global_kl
from fg_influence.models.hmm import HiddenMarkovModel


def epil_sequences() -> list[np.ndarray]:
    """Seizure counts of each patient, in period order."""
    data = load_epil().data
    y, subject, period = data[:, 0], data[:, 1].astype(int), data[:, 2]
    return [y[subject == s][np.argsort(period[subject == s])] for s in np.unique(subject)]


def chick_gain_sequences() -> list[np.ndarray]:
    """Weight gains between consecutive weighings of each chick with at least 2 gains."""
    data = load_chickweight().data
    weight, day, chick = data[:, 0], data[:, 1], data[:, 2].astype(int)
    sequences = []
    for label in np.unique(chick):
        rows = np.flatnonzero(chick == label)
        gains = np.diff(weight[rows[np.argsort(day[rows], kind="stable")]])
        if gains.size >= 2:
            sequences.append(gains)
    return sequences


def nile_series() -> np.ndarray:
    """Annual flow of the Nile at Aswan, 1871-1970."""
    return load_nile().data[:, 1]


#: Panel name: (sequences, emission family).
PANELS = {
    "epil": (epil_sequences, "poisson"),
    "chickweight": (chick_gain_sequences, "gaussian"),
}

#: Single series whose sites are time steps: (series, emission family).
SERIES = {
    "nile": (nile_series, "gaussian"),
}


def explicit_division_kl(posterior) -> np.ndarray:
    """Division's KL through the family objects, one divided posterior per sequence."""
    values = np.empty(posterior.n_sites)
    for site in range(posterior.n_sites):
        divided = divide(posterior, [site])
        values[site] = sum(float(np.sum(posterior.globals[name].kl(divided[name]))) for name in divided)
    return values


class NewtonTimeSteps:
    """Each time step's Newton step with the cut model's J_t, in the form ``corrected_global_kl`` reads."""

    def __init__(self, steps: linear_response_hmm.TimeStepResponseSystem):
        self.steps = steps
        self.n_sites = steps.n_sites
        self.coordinates = steps.coordinates
        self.variables = steps.variables
        self.natural_params = steps.natural_params

    def corrected_coordinates(self, sites) -> np.ndarray:
        return np.array([linear_response_hmm.newton_time_step_coordinates(self.steps, int(t)) for t in sites])


def accuracy_row(estimate: np.ndarray, exact: np.ndarray) -> tuple[float, float, float]:
    """Spearman correlation, top-10 overlap and median relative error of an estimate against exact KL."""
    top = len(set(np.argsort(-estimate)[:10].tolist()) & set(np.argsort(-exact)[:10].tolist())) / 10
    relative = np.abs(estimate - exact) / exact
    return float(spearmanr(estimate, exact).statistic), top, float(np.median(relative))


def report_time_steps(name: str, k: int, tol: float | None) -> None:
    """Print division, linear response and the J_t Newton step against exact refits of every time step."""
    load, emission = SERIES[name]
    series = load()
    options = {} if tol is None else {"tol": tol}
    model = HiddenMarkovModel(k, emission=emission, **options).fit(series)
    start = time.perf_counter()
    response = model.time_step_influence(method="linear-response")
    seconds = time.perf_counter() - start
    division = model.time_step_influence(exact="all")
    steps = linear_response_hmm.build_time_step_response_system(model.posterior_)
    _, newton_by_variable, newton_improper = corrected_global_kl(model.posterior_, NewtonTimeSteps(steps))
    newton = sum(newton_by_variable.values())
    newton[newton_improper] = np.inf
    for method, estimate in (("division", division.kl), ("linear-response", response.kl),
                             ("Newton (J_t)", newton)):
        spearman, top, median = accuracy_row(estimate, division.exact_kl)
        print(f"{name:12} {series.size:3d} {k:2d}  {method:16} {spearman:9.4f} {top:7.0%} {median:16.2e}")
    print(f"{'':12} fit: {model.n_iter_} CAVI iterations (tol {model.tol:g}); largest eigenvalue of J "
          f"{steps.system.largest_eigenvalue:.3f}; linear response for all steps in {seconds:.2f} s; "
          f"improper: linear response {int(response.improper.sum())}, Newton {int(newton_improper.sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panels", default=",".join([*PANELS, *SERIES]))
    parser.add_argument("--states", default="2,3", help="comma-separated numbers of states")
    parser.add_argument("--tol", type=float, default=None,
                        help="relative ELBO tolerance of the fit (default: the model's default)")
    args = parser.parse_args()

    header = (f"{'data':12} {'S':>3} {'K':>2}  {'method':16} {'Spearman':>9} {'top-10':>7} "
              f"{'median rel. err':>16}")
    print(header)
    for name in args.panels.split(","):
        if name in SERIES:
            for k in (int(value) for value in args.states.split(",")):
                report_time_steps(name, k, args.tol)
            continue
        load, emission = PANELS[name]
        sequences = load()
        for k in (int(value) for value in args.states.split(",")):
            options = {} if args.tol is None else {"tol": args.tol}
            model = HiddenMarkovModel(k, emission=emission, **options).fit(sequences)
            start = time.perf_counter()
            division = model.influence()
            response = model.influence(method="linear-response")
            seconds = time.perf_counter() - start
            response.compute_exact("all")
            division.exact_sites, division.exact_kl = response.exact_sites, response.exact_kl

            # Report a mismatch between the library's division and explicit division.
            explicit = explicit_division_kl(model.posterior_)
            mismatch = np.max(np.abs(division.kl - explicit) / np.maximum(np.abs(explicit), 1e-300))
            for method, result in (("division", division), ("linear-response", response)):
                accuracy = result.accuracy()
                print(f"{name:12} {len(sequences):3d} {k:2d}  {method:16} {accuracy['spearman']:9.4f} "
                      f"{accuracy['top_k_overlap']:7.0%} {accuracy['median_relative_error']:16.2e}")
            system = response._response.system
            print(f"{'':12} fit: {model.n_iter_} CAVI iterations (tol {model.tol:g}); largest eigenvalue "
                  f"of J {system.largest_eigenvalue:.3f}, condition number {system.condition_number:.3g}; "
                  f"both estimates for all sequences in {seconds:.2f} s; division vs explicit division: "
                  f"max relative difference {mismatch:.1e}")


if __name__ == "__main__":
    main()
