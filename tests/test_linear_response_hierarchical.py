"""Linear-response correction for the hierarchical normal model (local Gaussian blocks).

The property tests draw small grouped data sets. They check the analytic J
against central finite differences of the library's own CAVI sweep (update
the block, then every global from the same state). They also check division
plus the response term against one Newton step on the fixed-point equations
without a group, with the Newton Jacobian also taken by finite differences. The
accuracy tests compare both estimates with exact refits on the shipped radon
and sleepstudy data.
"""

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal, spearmanr

from fg_influence.cli import main
from fg_influence.datasets import load_radon, load_sleepstudy
from fg_influence.exceptions import ConvergenceWarning, ImproperDivisionWarning
from fg_influence.families import Gamma
from fg_influence.graph import blocks
from fg_influence.inference.cavi import global_natural_params, update_global
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import InfluenceResult, posterior_kl
from fg_influence.influence import linear_response as lr
from fg_influence.influence import linear_response_blocks as lrb
from fg_influence.models import GaussianMixture, HierarchicalNormal

seeds = st.integers(0, 2**32 - 1)
groups_data = st.fixed_dictionaries({
    "seed": seeds,
    "n_groups": st.integers(3, 8),
    "n_predictors": st.integers(0, 2),
    "spread": st.floats(0.05, 3.0),
    "noise_sd": st.floats(0.3, 2.0),
    "shape": st.floats(0.5, 5.0),
})


def polished_fit(seed, n_groups, n_predictors, spread, noise_sd, shape):
    """A small hierarchical fit, run on from its converged state until the globals stop moving.

    A relative ELBO tolerance leaves the globals about its square root from
    the fixed point, because the ELBO is flat there. The extra CAVI sweeps
    (blocks, then the globals in the library's order) bring them to
    rounding, so the fixed-point equations hold at the fit.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=n_groups)
    # The model needs more rows than coefficients.
    sizes[0] += max(0, n_predictors + 2 - sizes.sum())
    groups = np.repeat(np.arange(n_groups), sizes)
    X = rng.normal(size=(groups.size, n_predictors))
    coefficients = rng.normal(scale=spread, size=(n_groups, n_predictors + 1))
    design = np.column_stack([np.ones(groups.size), X])
    y = np.einsum("ij,ij->i", design, coefficients[groups]) + rng.normal(scale=noise_sd, size=groups.size)
    model = HierarchicalNormal(group_precision_shape=shape, noise_shape=shape, tol=1e-12, max_iter=20000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(y, groups, X)
    posterior = model.posterior_
    state = Posterior(posterior.graph, dict(posterior.globals), dict(posterior.locals), posterior.data)
    _, global_names = posterior.graph.schedule()
    for _ in range(2000):
        before = np.concatenate([np.ravel(p) for name in global_names for p in state.globals[name].natural_params()])
        blocks.update_blocks(state)
        for name in global_names:
            update_global(state, name)
        after = np.concatenate([np.ravel(p) for name in global_names for p in state.globals[name].natural_params()])
        if np.abs(after - before).max() <= 1e-14 * (np.abs(after).max() + 1.0):
            break
    blocks.update_blocks(state)
    return state


def jacobi_sweep(system, coords, graph):
    """prior + S(g): update the block from globals at ``coords``, then every global from that state."""
    data = {v.name: v.data for v in graph.variables_of_role("observed")}
    state = Posterior(graph, system.to_globals(coords), {}, data)
    blocks.update_block(state, "coefficients")
    natural = [global_natural_params(state, name) for name in system.variables]
    return lrb.global_coordinates(system.layout, *natural)


def finite_difference_jacobian(function, coords, scale):
    """Central differences of ``function`` along each coordinate, step scale * 1e-6."""
    columns = []
    for c in range(coords.size):
        step = np.zeros_like(coords)
        step[c] = 1e-6 * scale[c]
        columns.append((function(coords + step) - function(coords - step)) / (2 * step[c]))
    return np.stack(columns, axis=1)


# The Jacobian and the Newton identity on small random problems.


@settings(max_examples=25)
@given(case=groups_data)
def test_jacobian_matches_finite_differences(case):
    posterior = polished_fit(**case)
    system = lrb.build_hierarchical_response_system(posterior, warn=False)
    coords = system.coordinates
    scale = np.abs(coords) + 1.0

    # The fit is a fixed point of the Jacobi sweep. 1e-9 relative is far
    # above the rounding left by the polishing sweeps.
    assert np.abs(jacobi_sweep(system, coords, posterior.graph) - coords).max() <= 1e-9 * scale.max()

    numeric = finite_difference_jacobian(lambda g: jacobi_sweep(system, g, posterior.graph), coords, scale)
    # Compare in the scaled coordinates the steps were taken in. Central
    # differences with relative step 1e-6 have truncation error near 1e-12
    # and rounding error near 1e-10 relative to |g|, so 1e-6 of the largest
    # scaled entry leaves a wide margin and still catches any wrong term.
    analytic = system.jacobian * scale[None, :]
    numeric = numeric * scale[None, :]
    assert np.abs(numeric - analytic).max() <= 1e-6 * max(1.0, np.abs(analytic).max())


@settings(max_examples=25)
@given(case=groups_data)
def test_group_information_is_symmetric(case):
    posterior = polished_fit(**case)
    system = lrb.build_hierarchical_response_system(posterior, warn=False)
    names = system.variables
    raw = lrb.group_information(*(posterior.globals[name] for name in names),
                                posterior.graph.factors["likelihood"].group_stats(posterior))
    # Each W_j is the Hessian of group j's maximised ELBO terms in u, and the
    # formulas build its columns separately, so an asymmetry above rounding
    # (1e-10 of the largest entry) means a wrong term.
    largest = np.abs(raw).max()
    assert np.abs(raw - np.swapaxes(raw, 1, 2)).max() <= 1e-10 * largest
    # H J = H V H is then symmetric too, up to the same rounding.
    product = system.hessian @ system.jacobian
    assert np.abs(product - product.T).max() <= 1e-10 * max(1.0, np.abs(product).max())


@settings(max_examples=25)
@given(case=groups_data)
def test_division_plus_response_is_newton_step(case):
    posterior = polished_fit(**case)
    system = lrb.build_hierarchical_response_system(posterior, warn=False)
    site = int(np.random.default_rng(case["seed"]).integers(system.n_sites))
    reduced = posterior.graph.without_sites([site])
    coords = system.coordinates

    def residual(g):
        return g - jacobi_sweep(system, g, reduced)

    # F(g) = g - prior - S_without_j(g) equals s_j at the fit.
    value = residual(coords)
    scale = np.abs(coords) + 1.0
    derivative = finite_difference_jacobian(residual, coords, scale)
    newton = coords - np.linalg.solve(derivative, value)

    library = lrb.newton_corrected_coordinates(system, site)
    step = np.abs(newton - coords).max()
    # Finite differences carry about 1e-8 relative error into the Newton
    # Jacobian, and the solve amplifies it by the condition number of
    # I - J + J_j. That of I - J was at most 15 over 150 cases like these.
    assert np.abs(library - newton).max() <= 1e-6 * step

    # The same step is division (-s_j) plus a response term in J - J_j.
    without = system.jacobian - system.site_jacobian(site)
    message = system.site_messages[site]
    response = -np.linalg.solve(np.eye(coords.size) - without, without @ message)
    assert np.abs(library - (coords - message + response)).max() <= 1e-10 * (np.abs(coords).max() + 1.0)
    # And division alone misses that term: the step moves beyond s_j.
    assert np.abs(response).max() > 0


@settings(max_examples=25)
@given(case=groups_data)
def test_correction_solves_linear_system(case):
    posterior = polished_fit(**case)
    system = lrb.build_hierarchical_response_system(posterior, warn=False)
    corrected = system.corrected_coordinates(np.arange(system.n_sites))
    identity = np.eye(system.coordinates.size)
    # An independent dense LU solve of (I - J) delta = -s_j. Both routes are
    # backward stable, so they agree to the condition number times 1e-9.
    delta = np.linalg.solve(identity - system.jacobian, -system.site_messages.T).T
    tolerance = 1e-9 * system.condition_number * (np.abs(system.site_messages).max() + 1.0)
    assert np.abs(corrected - (system.coordinates + delta)).max() <= tolerance

    # J's eigenvalues are real, equal those of the symmetric form B, and
    # are below 1 at a maximum of the ELBO.
    eigenvalues = np.sort(np.linalg.eigvals(system.jacobian).real)
    assert np.allclose(eigenvalues, system.eigenvalues, atol=1e-8)
    assert system.eigenvalues.max() < 1.0


# Summaries of the corrected posteriors.


@pytest.fixture(scope="module")
def radon_model():
    data = load_radon().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 3].astype(int))


@pytest.fixture(scope="module")
def sleep_model():
    data = load_sleepstudy().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 2].astype(int), data[:, 1])


@pytest.fixture(scope="module")
def radon_exact(radon_model):
    return InfluenceResult(radon_model.posterior_).compute_exact("all")


def test_summaries_match_corrected_posteriors(sleep_model):
    posterior = sleep_model.posterior_
    result = sleep_model.influence(method="linear-response")
    assert result.method == "linear-response"
    system = result._response.system
    variable = posterior.graph.variables["y"]
    for site in (0, 9, 17):
        corrected = system.to_globals(system.corrected_coordinates([site])[0])
        # The KL sums the families' closed forms through a batched route, so
        # the two evaluations differ by rounding only.
        assert result.kl[site] == pytest.approx(posterior_kl(posterior.globals, corrected), rel=1e-10)
        expected_shift = corrected["mu"].mean - posterior.globals["mu"].mean
        np.testing.assert_allclose(result.shift("mu.mean")[site], expected_shift, rtol=1e-12)

        rows = slice(variable.offsets[site], variable.offsets[site + 1])
        design = variable.covariates[rows]
        covariance = (design @ (corrected["mu"].covariance() + np.diag(1.0 / corrected["tau"].mean())) @ design.T
                      + np.eye(design.shape[0]) / corrected["noise"].mean())
        expected = multivariate_normal(design @ corrected["mu"].mean, covariance).logpdf(variable.data[rows, 0])
        # The same Gaussian density through two factorisations.
        assert result.loo_log_predictive[site] == pytest.approx(expected, rel=1e-10)


def test_result_exports_like_division(sleep_model):
    result = sleep_model.influence(method="linear-response")
    document = result.to_dict()
    assert len(document["kl"]) == 18
    assert set(document["kl_by_variable"]) == {"mu", "tau", "noise"}
    assert result.shift_names == ["mu.mean"]
    assert np.all(np.isfinite(result.kl))


def test_improper_groups_flagged(sleep_model, monkeypatch):
    original = lrb.HierarchicalResponseSystem.corrected_coordinates

    def with_negative_rate(self, sites):
        # Group 3's corrected noise rate becomes -1 and group 5's coordinates NaN.
        coords = original(self, sites)
        coords[3, self.layout.noise.start + 1] = 1.0
        coords[5, 0] = np.nan
        return coords

    monkeypatch.setattr(lrb.HierarchicalResponseSystem, "corrected_coordinates", with_negative_rate)
    with pytest.warns(ImproperDivisionWarning, match="2 sites leave an improper posterior under the linear-response correction"):
        result = sleep_model.influence(method="linear-response")
    assert result.improper.tolist() == [site in (3, 5) for site in range(18)]
    assert np.all(np.isinf(result.kl[[3, 5]]))
    assert np.all(np.isfinite(result.kl[~result.improper]))
    for values in result.kl_by_variable.values():
        assert np.all(np.isfinite(values))
    assert np.all(result.loo_log_predictive[[3, 5]] == -np.inf)
    assert np.all(result.shift("mu.mean")[[3, 5]] == 0.0)
    assert not np.any(np.isnan(result.loo_log_predictive))


def test_globals_off_fixed_point_rejected(sleep_model):
    posterior = sleep_model.posterior_
    globals_ = dict(posterior.globals)
    tau = posterior.globals["tau"]
    # Ten times the fitted E[tau] is far from the fixed point, and J there
    # has an eigenvalue of about 8 (measured), so the check must reject it.
    globals_["tau"] = Gamma(tau.shape, tau.rate / 10.0)
    moved = Posterior(posterior.graph, globals_, posterior.locals, posterior.data)
    with pytest.raises(lrb.SingularResponseError, match=r"has an eigenvalue of [\d.]+ \(at least 1\)"):
        lrb.all_group_summaries(moved)


def test_bad_conditioning_warns(sleep_model, monkeypatch):
    # Measured condition number 1.82; any threshold below it must warn.
    monkeypatch.setattr(lr, "CONDITION_WARN", 1.0)
    with pytest.warns(lrb.IllConditionedResponseWarning, match=r"condition number 1\.8"):
        sleep_model.influence(method="linear-response")


def test_other_graphs_rejected():
    X = np.random.default_rng(0).normal(size=(30, 2))
    posterior = GaussianMixture(2, random_state=0).fit(X).posterior_
    with pytest.raises(NotImplementedError, match="supports the hierarchical normal model only"):
        lrb.all_group_summaries(posterior)


def test_unknown_method_rejected(sleep_model):
    with pytest.raises(ValueError, match="method must be one of .* got 'newton'"):
        sleep_model.influence(method="newton")


# Accuracy against exact refits.


def _relative_errors(estimate, exact):
    return np.abs(estimate - exact) / exact


def test_radon_closer_to_refits_than_division(radon_model, radon_exact):
    exact = radon_exact.exact_kl
    division = radon_exact.kl
    response = radon_model.influence(method="linear-response").kl
    rho_division = spearmanr(division, exact).statistic
    rho_response = spearmanr(response, exact).statistic
    median_division = np.median(_relative_errors(division, exact))
    median_response = np.median(_relative_errors(response, exact))

    assert rho_response >= rho_division
    assert median_response <= median_division
    # Measured on 85 counties: Spearman 0.9997 (division 0.958), median
    # relative error 1.3% (division 60%). The floors leave room for BLAS
    # rounding, not for a response term that stopped working.
    assert rho_response >= 0.995
    assert median_response <= 0.03
    top_response = set(np.argsort(-response)[:10])
    top_exact = set(np.argsort(-exact)[:10])
    # Measured 10 of 10 (division 8 of 10).
    assert len(top_response & top_exact) >= 9


def test_sleepstudy_closer_to_refits_than_division(sleep_model):
    division = sleep_model.influence().compute_exact("all")
    exact = division.exact_kl
    response = sleep_model.influence(method="linear-response").kl
    median_division = np.median(_relative_errors(division.kl, exact))
    median_response = np.median(_relative_errors(response, exact))
    assert median_response <= median_division
    # Measured Spearman 1.000 (division 0.979) and median relative error
    # 2.1% (division 37%) over 18 subjects.
    assert spearmanr(response, exact).statistic >= 0.99
    assert median_response <= 0.05


# The command line.


def test_cli_method_linear_response(sleep_model, tmp_path, capsys):
    path = tmp_path / "sleep.json"
    code = main(["hierarchical", "fg_influence/datasets/data/sleepstudy.csv", "--target", "Reaction",
                 "--group", "Subject", "--columns", "Days", "--method", "linear-response",
                 "--json", str(path)])
    assert code == 0
    assert "estimated by linear response" in capsys.readouterr().out
    document = json.loads(path.read_text())
    assert document["method"] == "linear-response"
    expected = sleep_model.influence(method="linear-response")
    # The command fits the same data with the same defaults in the same
    # process; the group order is the same sorted subject order.
    np.testing.assert_allclose([row["kl"] for row in document["groups"]], expected.kl, rtol=1e-9)
    np.testing.assert_allclose([row["mean_shift"] for row in document["groups"]],
                               expected.shift("mu.mean"), rtol=1e-9, atol=1e-12)


def test_cli_method_default_is_division(tmp_path, capsys):
    path = tmp_path / "sleep.json"
    code = main(["hierarchical", "fg_influence/datasets/data/sleepstudy.csv", "--target", "Reaction",
                 "--group", "Subject", "--columns", "Days", "--json", str(path)])
    assert code == 0
    assert "estimated by" not in capsys.readouterr().out
    assert json.loads(path.read_text())["method"] == "division"


def test_cli_rejects_unknown_method(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["hierarchical", "fg_influence/datasets/data/sleepstudy.csv", "--target", "Reaction",
              "--group", "Subject", "--method", "exact"])
    assert raised.value.code == 2
    assert "invalid choice: 'exact'" in capsys.readouterr().err
