"""The linear-response correction: accuracy on iris, summaries, errors and the CLI option."""

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from fg_influence.cli import main
from fg_influence.datasets import load_galaxies, load_iris, load_penguins
from fg_influence.families import Dirichlet
from fg_influence.graph import GaussianMixtureFactor
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import divide
from fg_influence.influence import linear_response as lr
from fg_influence.models import GaussianMixture
from tests.helpers import standardized_faithful


def standardized(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


@pytest.fixture(scope="module")
def iris_fit():
    X = standardized(load_iris().data)
    return GaussianMixture(3, random_state=0, n_init=3).fit(X)


@pytest.fixture(scope="module")
def iris_results(iris_fit):
    response = iris_fit.influence(method="linear-response")
    response.compute_exact("all")
    return response


def corrected_globals(system, site):
    """Family objects of the corrected posterior for one site, built through from_natural."""
    parts = system.split(system.corrected_coordinates([site])[0])
    return {b.variable: b.to_posterior(parts[b.variable]) for b in system.blocks}


def test_iris_ranking_matches_exact_refits(iris_results):
    accuracy = iris_results.accuracy()
    # Measured on this fit (the one benchmarks/linear_response_accuracy.py
    # uses): Spearman 1.0000 over all 150 rows, top-10 overlap 100%, median
    # relative error 1.6e-5. Division on the same fit: Spearman 1.0000 (to
    # four places), top-10 overlap 100%, median relative error 5.2e-4.
    assert accuracy["spearman"] >= 0.99
    assert accuracy["top_k_overlap"] >= 0.9
    assert accuracy["median_relative_error"] <= 1e-3


def test_iris_closer_than_division(iris_fit, iris_results):
    # Division's KL from explicit division (family KLs), independent of the
    # closed-form kernels, against the same exact refits.
    posterior = iris_fit.posterior_
    division_kl = np.empty(posterior.n_sites)
    for site in range(posterior.n_sites):
        divided = divide(posterior, [site])
        division_kl[site] = sum(float(np.sum(posterior.globals[name].kl(divided[name]))) for name in divided)
    exact = iris_results.exact_kl
    division_error = np.median(np.abs(division_kl[iris_results.exact_sites] - exact) / exact)
    response_error = iris_results.accuracy()["median_relative_error"]
    # Measured: 1.6e-5 against 5.2e-4, a factor of about 30.
    assert response_error < 0.2 * division_error
    assert spearmanr(iris_results.kl, exact).statistic >= spearmanr(division_kl, exact).statistic


def test_kl_matches_family_kl(iris_fit, iris_results):
    system = iris_results._response.system
    for site in (0, 41, 118):
        corrected = corrected_globals(system, site)
        for name, values in iris_results.kl_by_variable.items():
            expected = float(np.sum(iris_fit.posterior_.globals[name].kl(corrected[name])))
            # The kernel and the family code compute the same closed form by
            # different routes (Cholesky of W'^-1 against inv and slogdet).
            assert values[site] == pytest.approx(expected, rel=1e-9, abs=1e-13)


def test_loo_predictive_matches_student_mixture(iris_fit, iris_results):
    system = iris_results._response.system
    posterior = iris_fit.posterior_
    factor = posterior.graph.factors["likelihood"]
    for site in (3, 77, 149):
        state = Posterior(posterior.graph, corrected_globals(system, site), {}, posterior.data)
        x = posterior.data["x"][site:site + 1]
        q = factor.quadratic_forms(state, x)
        expected = factor.log_predictive(state, q, np.zeros_like(q), np.zeros(1, dtype=bool))[0]
        # Same density through two kernels; only rounding differs.
        assert iris_results.loo_log_predictive[site] == pytest.approx(expected, rel=1e-10)


def test_shifts_match_corrected_means(iris_fit, iris_results):
    system = iris_results._response.system
    fitted = iris_fit.posterior_.globals
    for site in (5, 60):
        corrected = corrected_globals(system, site)
        assert np.allclose(iris_results.mean_shift[site], corrected["components"].mean - fitted["components"].mean,
                           rtol=1e-10, atol=1e-14)
        assert np.allclose(iris_results.weight_shift[site],
                           corrected["weights"].mean() - fitted["weights"].mean(), rtol=1e-10, atol=1e-14)


def test_zero_response_reproduces_division(iris_fit):
    posterior = iris_fit.posterior_
    system = lr.build_response_system(posterior)
    sites = np.arange(10)
    divided_coords = system.coordinates[None] - system.site_messages(sites)
    parts = system.split(divided_coords)
    improper = np.zeros(sites.size, dtype=bool)
    summary = system.blocks[1].summarize(parts["components"], sites, improper)
    for site in sites:
        divided = divide(posterior, [site])["components"]
        expected = float(np.sum(posterior.globals["components"].kl(divided)))
        # Two closed-form routes to the same KL; rounding only.
        assert summary["kl"][site] == pytest.approx(expected, rel=1e-9)
    assert not improper.any()


def test_group_of_one_equals_site(iris_fit):
    system = lr.build_response_system(iris_fit.posterior_)
    assert np.allclose(system.group_corrected_coordinates([7]), system.corrected_coordinates([7])[0],
                       rtol=1e-12, atol=1e-12)


def test_group_correction_is_additive(iris_fit):
    system = lr.build_response_system(iris_fit.posterior_)
    g = system.coordinates
    pair = system.group_corrected_coordinates([7, 90]) - g
    single = (system.corrected_coordinates([7])[0] - g) + (system.corrected_coordinates([90])[0] - g)
    assert np.allclose(pair, single, rtol=1e-10, atol=1e-10)


def test_division_stays_default(iris_fit):
    default = iris_fit.influence()
    explicit = iris_fit.influence(method="division")
    assert default.method == "division"
    assert np.array_equal(default.kl, explicit.kl)
    assert np.array_equal(default.loo_log_predictive, explicit.loo_log_predictive)


def test_unknown_method_rejected(iris_fit):
    with pytest.raises(ValueError, match="method must be one of"):
        iris_fit.influence(method="newton")


def test_unregistered_factor_raises(iris_fit, monkeypatch):
    monkeypatch.delitem(lr.RESPONSE_PROVIDERS, GaussianMixtureFactor)
    with pytest.raises(NotImplementedError, match="type GaussianMixtureFactor: no Jacobian block is registered"):
        iris_fit.influence(method="linear-response")


def test_saddle_point_raises():
    # Equal responsibilities on bimodal data are a fixed point of CAVI in
    # which both components are identical; it is a saddle, so J has an
    # eigenvalue above 1.
    X = standardized_faithful()
    model = GaussianMixture(2, max_iter=3, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, init_resp=np.full((len(X), 2), 0.5))
    with pytest.raises(lr.SingularResponseError, match="singular or indefinite.*eigenvalue"):
        model.influence(method="linear-response")


def test_ill_conditioned_warns(iris_fit, monkeypatch):
    monkeypatch.setattr(lr, "CONDITION_WARN", 1.0)
    with pytest.warns(lr.IllConditionedResponseWarning, match="condition number .* fewer components"):
        lr.build_response_system(iris_fit.posterior_)


def test_improper_site_flagged_not_nan():
    # A Dirichlet block whose correction removes more than a concentration
    # is improper: flagged, with KL 0 here and no NaN.
    posterior_alpha = np.array([0.5, 3.0])
    improper = np.zeros(2, dtype=bool)
    corrected = np.array([[[0.4], [2.0]], [[-0.1], [2.5]]])

    class Stub:
        weights = "weights"

    state = Posterior(graph=_StubGraph(posterior_alpha), globals={"weights": Dirichlet(posterior_alpha)},
                      locals={}, data={})
    summary = lr._categorical_block(Stub(), state).summarize(corrected, np.arange(2), improper)
    assert improper.tolist() == [False, True]
    assert np.all(np.isfinite(summary["kl"]))
    assert summary["kl"][1] == 0.0


class _StubGraph:
    n_sites = 2

    def __init__(self, alpha):
        from types import SimpleNamespace

        self.variables = {"weights": SimpleNamespace(prior=Dirichlet(np.ones_like(alpha)))}


def test_cli_method_option(tmp_path, capsys):
    path = tmp_path / "iris.csv"
    X = load_iris().data
    path.write_text("a,b,c,d\n" + "\n".join(",".join(str(v) for v in row) for row in X) + "\n")
    code = main(["gmm", str(path), "-k", "3", "--standardize", "--method", "linear-response", "--top", "3",
                 "--n-init", "1", "--exact", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Agreement with exact refits over 5 rows" in out


def test_cli_rejects_unknown_method(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--method", "newton"])
    assert "invalid choice" in capsys.readouterr().err


def test_dataset_loaders():
    assert load_iris().data.shape == (150, 4)
    assert load_galaxies().data.shape == (82, 1)
    penguins = load_penguins()
    assert penguins.data.shape == (344, 4)
    # Rows 4 and 272 of palmerpenguins lack all four measurements.
    assert penguins.complete.sum() == 342
    assert not np.isnan(penguins.data[penguins.complete]).any()
