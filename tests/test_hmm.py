"""Hidden Markov models: chain blocks, sequence influence and time-step influence."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from fg_influence.cli import main
from fg_influence.datasets import load_epil, load_nile
from fg_influence.families import Dirichlet, Gamma
from fg_influence.graph import FactorGraph, GraphError
from fg_influence.graph.hmm_factors import PoissonHMMFactor
from fg_influence.influence import divide, posterior_kl, refit_without
from fg_influence.models.hmm import HiddenMarkovModel, build_hmm_graph, sequences_to_ragged
from fg_influence.inference import fit_cavi


def epil_sequences():
    data = load_epil().data
    y, subject, period = data[:, 0], data[:, 1].astype(int), data[:, 2]
    return [y[subject == s][np.argsort(period[subject == s])] for s in np.unique(subject)]


@pytest.fixture(scope="module")
def epil_model():
    return HiddenMarkovModel(2).fit(epil_sequences())


def test_epil_loo_patient_spearman(epil_model):
    result = epil_model.influence()
    assert result.n_sites == 59
    result.compute_exact("all")
    rho = spearmanr(result.kl, result.exact_kl).statistic
    # Measured 0.970 over all 59 patients (2 states, default priors).
    assert rho >= 0.93


def test_epil_states_separate_low_and_high_counts(epil_model):
    # Patients' counts range from 0 to 102 with median 4; the two states
    # split them into a low and a high regime.
    assert epil_model.means_[0] < 6
    assert epil_model.means_[1] > 15


def test_hmm_elbo_never_decreases(epil_model):
    history = np.array(epil_model.posterior_.elbo_history)
    # 1e-9 relative allows rounding in the sums of ~250 terms.
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))


def test_final_elbo_matches_last_estep(epil_model):
    # The ELBO recomputed from the stored chain counts and entropies agrees
    # with the forward-backward log-normalisers at convergence (tol 1e-9).
    assert epil_model.lower_bound_ == pytest.approx(epil_model.posterior_.elbo_history[-1], rel=1e-7)


def test_refit_matches_fresh_fit(epil_model):
    sequences = epil_sequences()
    site = 10
    refit = refit_without(epil_model.posterior_, [site])
    values, offsets = sequences_to_ragged(sequences[:site] + sequences[site + 1:])
    graph = build_hmm_graph(values, offsets, emission="poisson", **epil_model._priors)
    fresh = fit_cavi(graph, tol=1e-12, max_iter=5000)
    # Both converge to the same optimum (states ordered the same way by the
    # quantile start); 1e-5 relative covers the ELBO tolerance.
    np.testing.assert_allclose(refit.globals["emission"].rate, fresh.globals["emission"].rate, rtol=1e-5)
    np.testing.assert_allclose(refit.globals["transition"].concentration,
                               fresh.globals["transition"].concentration, rtol=1e-5)


def test_division_subtracts_chain_counts(epil_model):
    posterior = epil_model.posterior_
    chain = posterior.locals["states"]
    divided = divide(posterior, [3, 4])
    expected = posterior.globals["transition"].concentration - chain.transitions[3] - chain.transitions[4]
    np.testing.assert_allclose(divided["transition"].concentration, expected, rtol=1e-12)
    result = epil_model.influence()
    one = divide(posterior, [3])
    assert result.kl[3] == pytest.approx(posterior_kl(posterior.globals, one), rel=1e-10)


def test_nile_time_steps():
    values = load_nile().data[:, 1]
    model = HiddenMarkovModel(2, emission="gaussian").fit(values)
    # Two regimes around the level shift near 1898: about 1100 before and
    # 850 after.
    assert sorted(model.means_) == pytest.approx([850, 1097], rel=0.03)
    influence = model.time_step_influence(exact="all")
    assert influence.kl.shape == (100,)
    assert np.all(influence.kl > 0)
    # The two most influential years, 1913 (the lowest flow) and 1871 (the
    # first year, which also carries the initial-state term): measured
    # estimate / exact 0.943 and 0.995.
    assert set(influence.top(2).tolist()) == {0, 42}
    np.testing.assert_allclose(influence.kl[[0, 42]], influence.exact_kl[[0, 42]], rtol=0.1)
    # Measured Spearman over all 100 years 0.616: dividing a year keeps the
    # neighbouring years' states fixed, which misses most of the effect of
    # years inside a regime (estimate / exact down to 0.01).
    assert influence.spearman() >= 0.5


def test_nile_rejects_per_sequence_steps(epil_model):
    with pytest.raises(ValueError, match="single series"):
        epil_model.time_step_influence()


def test_short_sequence_rejected():
    with pytest.raises(ValueError, match="sequence 1 has 1 value"):
        HiddenMarkovModel(2).fit([np.array([1.0, 2.0]), np.array([3.0])])


def test_negative_counts_rejected():
    with pytest.raises(ValueError, match="non-negative integer counts"):
        HiddenMarkovModel(2).fit([np.array([1.0, -2.0, 3.0])])


def test_bad_emission_rejected():
    with pytest.raises(ValueError, match="emission must be one of"):
        HiddenMarkovModel(2, emission="binomial").fit([np.array([1.0, 2.0, 3.0])])


def test_chain_owner_must_match():
    graph = FactorGraph()
    graph.add_plate("sequences", 1)
    graph.add_global("initial", Dirichlet(np.ones(2)))
    graph.add_global("transition", Dirichlet(np.ones((2, 2))))
    graph.add_global("emission", Gamma(np.ones(2), np.ones(2)))
    graph.add_block("states", plate="sequences", owner="other")
    graph.add_ragged_observed("x", [1.0, 2.0, 3.0], [0, 3], plate="sequences")
    graph.add_factor(PoissonHMMFactor("hmm", "x", "states", "initial", "transition", "emission"))
    with pytest.raises(GraphError, match="block 'states' names owner 'other', which is not a factor connected"):
        graph.validate()


def test_cli_epil_json(tmp_path):
    path = tmp_path / "epil.json"
    code = main(["hmm", "fg_influence/datasets/data/epil.csv", "--target", "y", "--sequence", "subject",
                 "--order", "period", "--exact", "3", "--json", str(path)])
    assert code == 0
    document = json.loads(path.read_text())
    assert len(document["sites"]) == 59
    assert sum(record["exact_kl"] is not None for record in document["sites"]) == 3


def test_cli_drops_short_chick(capsys):
    code = main(["hmm", "fg_influence/datasets/data/ChickWeight.csv", "--target", "weight",
                 "--sequence", "Chick", "--order", "Time", "--differences", "--emission", "gaussian",
                 "--top", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert "dropped 1 sequence(s) with fewer than 2 values: ['18']" in captured.err
    assert "49 sequence(s)" in captured.out



def test_gaussian_values_far_from_zero_suggest_centring():
    x = np.random.default_rng(0).normal(1e8, 1.0, size=200)
    # Values near 1e8 with unit spread make the Normal-Wishart count
    # coordinates cancel, and the error suggests centring and scaling.
    with pytest.raises(ValueError, match=r"lost positive definiteness.*centre and scale") as caught:
        HiddenMarkovModel(2, emission="gaussian").fit([x])
    assert "too few distinct values per state" in str(caught.value)


@pytest.mark.parametrize("exact, error, match", [
    ([200], ValueError, r"exact must be in \[0, 99\]"),
    ([-1], ValueError, r"exact must be in \[0, 99\]"),
    ([3, 3], ValueError, "exact must not repeat a site"),
    ([1.7], TypeError, "exact must contain integer site indices"),
    ([True, False], TypeError, "exact must contain integer site indices"),
])
def test_time_step_exact_list_checked(exact, error, match):
    values = load_nile().data[:, 1]
    model = HiddenMarkovModel(2, emission="gaussian").fit(values)
    with pytest.raises(error, match=match):
        model.time_step_influence(exact=exact)


def test_time_step_spearman_needs_refits():
    values = load_nile().data[:, 1]
    influence = HiddenMarkovModel(2, emission="gaussian").fit(values).time_step_influence()
    with pytest.raises(ValueError, match="spearman needs exact refits of at least 2 time steps, got 0"):
        influence.spearman()
