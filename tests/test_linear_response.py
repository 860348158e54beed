"""The linear-response correction: accuracy on iris, summaries, errors and the CLI option."""

import dataclasses
import threading
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import spearmanr

from fg_influence.cli import main
from fg_influence.datasets import load_galaxies, load_iris, load_penguins
from fg_influence.families import Dirichlet
from fg_influence.graph import GaussianMixtureFactor
from fg_influence.inference.posterior import Posterior
from fg_influence.influence import divide
from fg_influence.influence import linear_response as lr
from fg_influence.kernels import linear_response as lr_kernels
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
    # relative error 2.4e-5. Division on the same fit: Spearman 1.0000 (to
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
    # Measured: 2.4e-5 against 5.2e-4, a factor of about 21.
    assert response_error < 0.2 * division_error
    assert spearmanr(iris_results.kl, exact).statistic >= spearmanr(division_kl, exact).statistic


def exact_summaries(system, sites):
    """KL and LOO log predictive density evaluated exactly at each site's corrected coordinates."""
    parts = system.split(system.corrected_coordinates(sites))
    improper = np.zeros(len(sites), dtype=bool)
    kl = np.zeros(len(sites))
    log_terms = np.zeros((len(sites), system.n_categories))
    for block in system.blocks:
        summary = block.summarize(parts[block.variable], np.asarray(sites), improper)
        kl += summary["kl"]
        log_terms += summary.get("log_weights", 0.0) + summary.get("log_density", 0.0)
    assert not improper.any()
    return kl, logsumexp(log_terms, axis=1)


@pytest.fixture(scope="module")
def iris_untruncated(iris_fit):
    """All-site summaries keeping every direction with a positive gain."""
    saved = lr.RANK_TOL
    lr.RANK_TOL = 0.0
    try:
        summaries = lr.all_site_summaries(iris_fit.posterior_)
        summaries.loo_log_predictive
    finally:
        lr.RANK_TOL = saved
    return summaries


def test_exact_kl_routes_agree(iris_fit, iris_results):
    # The kernel behind `summarize` and the family code compute the same
    # closed form by different routes (Cholesky of W'^-1 against inv and
    # slogdet), so they agree to rounding.
    system = iris_results._response.system
    for site in (0, 41, 118):
        corrected = corrected_globals(system, site)
        expected = sum(float(np.sum(iris_fit.posterior_.globals[name].kl(corrected[name])))
                       for name in corrected)
        assert exact_summaries(system, [site])[0][0] == pytest.approx(expected, rel=1e-9)


def test_second_order_kl_tracks_exact_kl(iris_fit, iris_untruncated):
    system = iris_untruncated.system
    sites = np.arange(iris_fit.posterior_.n_sites)
    exact, _ = exact_summaries(system, sites)
    fast = sum(iris_untruncated.kl_by_variable.values())
    division = sum(iris_fit.influence().kl_by_variable.values())
    # The all-site KL adds a second-order response term to division's exact
    # KL, so it differs from the exact KL at the corrected coordinates by
    # third-order terms. Measured on this fit: median relative difference
    # 6e-6, largest 3.6e-3, and every site closer than division.
    relative = np.abs(fast - exact) / exact
    assert np.median(relative) <= 1e-4
    assert relative.max() <= 1e-2
    # It moves division's KL towards the exact one for most sites.
    assert np.mean(np.abs(fast - exact) < np.abs(division - exact)) >= 0.9


def test_first_order_predictive_tracks_exact(iris_fit, iris_untruncated):
    system = iris_untruncated.system
    sites = np.arange(iris_fit.posterior_.n_sites)
    _, exact = exact_summaries(system, sites)
    fast = iris_untruncated.loo_log_predictive
    division = iris_fit.influence().loo_log_predictive
    # First order in the response, so the error is second order. Measured
    # on this fit: largest |difference| 1.6e-5 nats, against a largest
    # response effect of 1.3e-2 nats; median ratio of the two 4e-5.
    assert np.abs(fast - exact).max() <= 2e-4
    ratio = np.abs(fast - exact) / np.maximum(np.abs(exact - division), 1e-300)
    assert np.median(ratio) <= 1e-2


def test_shifts_match_corrected_means(iris_fit, iris_untruncated):
    system = iris_untruncated.system
    fitted = iris_fit.posterior_.globals
    shifts = iris_untruncated.shifts
    for site in (5, 60):
        corrected = corrected_globals(system, site)
        # Means and weights are exact functions of the corrected coordinates;
        # with every direction kept, only rounding differs: the two routes to
        # M s_i (eigenvectors against a Cholesky solve) each carry about
        # 1e-16 |M| |s_i| (measured differences up to 4e-13, shifts near 2e-2).
        assert np.allclose(shifts["components.mean"][site],
                           corrected["components"].mean - fitted["components"].mean, rtol=1e-8, atol=1e-11)
        assert np.allclose(shifts["weights.mean"][site],
                           corrected["weights"].mean() - fitted["weights"].mean(), rtol=1e-8, atol=1e-11)


def test_truncation_error_is_bounded(iris_fit, monkeypatch):
    # The eigenbasis route drops the directions with gain g <= RANK_TOL, each
    # adding (g + g^2 / 2) c^2, and the c^2 sum to at most y^T y. And y^T y
    # is about twice division's KL; 2.5 leaves room for division's KL
    # differing from its quadratic approximation.
    tolerance = lr.RANK_TOL
    truncated = lr.LinearResponseSummaries(iris_fit.posterior_, kl_route="eigenbasis")
    truncated_rank = truncated.system.rank
    monkeypatch.setattr(lr, "RANK_TOL", 0.0)
    untruncated = lr.LinearResponseSummaries(iris_fit.posterior_, kl_route="eigenbasis")
    assert 0 < truncated_rank < untruncated.system.rank
    untruncated_kl = sum(untruncated.kl_by_variable.values())
    truncated_kl = sum(truncated.kl_by_variable.values())
    division = sum(iris_fit.influence().kl_by_variable.values())
    assert np.all(np.abs(untruncated_kl - truncated_kl) <= 2.5 * tolerance * division)


@pytest.mark.parametrize("exact", [True, False])
def test_kl_routes_agree_on_iris(iris_fit, monkeypatch, exact):
    posterior = iris_fit.posterior_
    # Both kinds of site occur: the moments route treats them differently.
    _, ambiguous = lr.pair_activity(posterior.locals["assignment"])
    assert ambiguous.any()
    assert not ambiguous.all()
    monkeypatch.setattr(lr, "RANK_TOL", 0.0)
    if exact:
        monkeypatch.setattr(lr, "RESP_TOL", 0.0)
    eigenbasis = lr.LinearResponseSummaries(posterior, kl_route="eigenbasis")
    moments = lr.LinearResponseSummaries(posterior, kl_route="moments")
    # With every direction and every responsibility kept in both, the routes
    # differ by rounding only, through an eigen-decomposition against a
    # Cholesky solve (condition number of I - J 1.02 here, measured up to
    # 3e-15 relative). With RESP_TOL, the eigenbasis route leaves out
    # categories with r_k at most RESP_TOL and the moments route pairs with
    # r_k r_l at most RESP_TOL. Each such term is at most RESP_TOL times a
    # site's quadratic form in one pair, so at most K^2 RESP_TOL = 9e-8
    # relative in all (measured 4.4e-9).
    rtol = 1e-9 if exact else 1e-7
    # The moments route gives the total first and splits it on first access.
    assert "kl_by_variable" not in moments.__dict__
    assert np.allclose(moments.kl, eigenbasis.kl, rtol=rtol, atol=1e-12)
    for name, values in moments.kl_by_variable.items():
        assert np.allclose(values, eigenbasis.kl_by_variable[name], rtol=rtol, atol=1e-12)
    # The parts add up to the total up to the rounding of three sums.
    assert np.allclose(sum(moments.kl_by_variable.values()), moments.kl, rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("dataset", ["iris", "galaxies"])
def test_share_threshold_moves_density_little(iris_fit, monkeypatch, dataset):
    if dataset == "iris":
        fit = iris_fit
    else:
        X = standardized(np.asarray(load_galaxies().data, dtype=float).reshape(-1, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = GaussianMixture(4, random_state=0, n_init=3).fit(X)
    thresholded = lr.LinearResponseSummaries(fit.posterior_).loo_log_predictive
    monkeypatch.setattr(lr, "PREDICTIVE_SHARE_TOL", 0.0)
    complete = lr.LinearResponseSummaries(fit.posterior_).loo_log_predictive
    division = fit.influence().loo_log_predictive
    assert np.any(thresholded != complete)
    # Each left-out part is a share product w_ik r_il below 1e-10 times one
    # category's part of the first-order change. Measured: 6e-13 nats on iris
    # and 1.2e-10 on galaxies, below 1e-9 of the largest response effects
    # (0.013 and 0.17 nats). The bound 1e-7 leaves room for gradients far
    # larger than the effect they sum to.
    assert np.abs(thresholded - complete).max() <= 1e-7 * np.abs(complete - division).max()


@pytest.mark.parametrize("kl_route", ["moments", "eigenbasis"])
def test_lower_bounds_flag_exactly_the_crossing_sites(iris_fit, monkeypatch, kl_route):
    # Raise the bound on kappa' to a value that some sites' corrected
    # coordinates cross, and compare the flags with the dense corrected
    # coordinates of every site.
    posterior = iris_fit.posterior_
    n, d = posterior.n_sites, posterior.data["x"].shape[1]
    system = lr.build_response_system(posterior)
    kappa = system.split(system.corrected_coordinates(np.arange(n)))["components"][:, :, d]
    bound = float(np.quantile(kappa.min(axis=1), 0.3))
    provider = lr.RESPONSE_PROVIDERS[GaussianMixtureFactor]

    def raised_bound(factor, fitted, variable):
        block = provider(factor, fitted, variable)
        block.lower_bounds = {**block.lower_bounds, d: bound}
        return block

    monkeypatch.setitem(lr.RESPONSE_PROVIDERS, GaussianMixtureFactor, raised_bound)
    monkeypatch.setattr(lr, "RANK_TOL", 0.0)
    summaries = lr.LinearResponseSummaries(posterior, kl_route=kl_route)
    expected = np.any(kappa <= bound, axis=1)
    assert 0 < expected.sum() < n
    assert np.array_equal(summaries.improper, expected)


@pytest.mark.parametrize("data", ["iris", "faithful", "part"])
def test_kl_form_matches_dense_inverse(iris_fit, data):
    posterior = iris_fit.posterior_
    if data == "faithful":
        posterior = GaussianMixture(2, random_state=0).fit(standardized_faithful()).posterior_
    system = lr.build_response_system(posterior, warn=False)
    if data == "part":
        # A group that leaves coordinates out, as for a component that
        # shares no ambiguous site with the others.
        system = dataclasses.replace(system, groups=[np.arange(2 * system.block_size)])
    size = system.symmetric.shape[0]
    response, form = np.zeros((size, size)), np.zeros((size, size))
    for index in system.groups:
        sub = system.symmetric[np.ix_(index, index)]
        part = np.linalg.inv(np.eye(index.size) - sub) - np.eye(index.size)
        response[np.ix_(index, index)] = part
        form[np.ix_(index, index)] = part + 0.5 * part @ part
    assert system.groups
    # A Cholesky inverse and an LU inverse of I - B (condition numbers 1.02
    # and 1.25 here) differ by up to 2.1e-13 of the largest entry, measured.
    scale = np.abs(form).max()
    assert np.allclose(system.symmetric_response, response, rtol=0.0, atol=1e-12 * scale)
    assert np.allclose(system.kl_form, form, rtol=0.0, atol=1e-12 * scale)
    assert np.array_equal(system.kl_form, system.kl_form.T)


def test_division_beside_dense_steps_changes_nothing(iris_fit, monkeypatch):
    from fg_influence.influence import closed_form

    posterior = iris_fit.posterior_
    threads = []
    all_site_kl = closed_form.all_site_kl

    def recording(*args):
        threads.append(threading.current_thread() is threading.main_thread())
        return all_site_kl(*args)

    monkeypatch.setattr(closed_form, "all_site_kl", recording)
    beside = lr.LinearResponseSummaries(posterior)
    # A threading layer that is not thread-safe runs every task on this thread.
    monkeypatch.setattr(lr.numba, "threading_layer", lambda: "workqueue")
    in_turn = lr.LinearResponseSummaries(posterior)
    # Without the second thread division runs here. With it, it runs there
    # unless this thread needs the result before that thread has started
    # it, which is a matter of timing on data this small.
    assert threads[-1]
    assert len(threads) == 2
    assert np.array_equal(beside.kl, in_turn.kl)
    assert np.array_equal(beside.improper, in_turn.improper)
    for name, values in beside.kl_by_variable.items():
        assert np.array_equal(values, in_turn.kl_by_variable[name])
    # B's eigenvalues come from the second thread when it is free, and from
    # build_response_system in one go. All three agree to the bit.
    whole = lr.build_response_system(posterior)
    for summaries in (beside, in_turn):
        assert summaries.system.largest_eigenvalue == whole.largest_eigenvalue
        assert summaries.system.condition_number == whole.condition_number
    assert 0.0 < whole.largest_eigenvalue < 1.0


def test_second_thread_runs_tasks_beside_or_in_place(monkeypatch):
    # Report a thread-safe layer and two threads, so that the second thread
    # starts whatever layer this process has.
    monkeypatch.setattr(lr.numba, "threading_layer", lambda: "omp")
    monkeypatch.setattr(lr.numba, "get_num_threads", lambda: 2)
    started, release = threading.Event(), threading.Event()

    def on_main_thread():
        return threading.current_thread() is threading.main_thread()

    def blocking():
        started.set()
        release.wait(10)
        return on_main_thread()

    with lr._SecondThread() as second:
        first = second.submit(blocking)
        assert started.wait(10)
        # The second thread is busy, so the next task has not started and runs here.
        waiting = second.submit(on_main_thread)
        assert second.take(waiting) is True
        release.set()
        assert second.take(first) is False


def test_second_thread_absent_runs_every_task_in_place(monkeypatch):
    monkeypatch.setattr(lr.numba, "threading_layer", lambda: "workqueue")
    calls = []
    with lr._SecondThread() as second:
        task = second.submit(lambda: calls.append(threading.current_thread() is threading.main_thread()) or 7)
        assert calls == []
        assert second.take(task) == 7
    assert calls == [True]


def test_well_separated_clusters_keep_no_direction():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 40.0])
    model = GaussianMixture(2, random_state=0).fit(X)
    division = model.influence()
    response = model.influence(method="linear-response")
    # No site is ambiguous, so J is zero to rounding and the correction
    # changes nothing.
    assert response._response.system.rank == 0
    assert response._response.system.largest_eigenvalue < 1e-12
    assert np.array_equal(response.kl, division.kl)
    assert np.array_equal(response.loo_log_predictive, division.loo_log_predictive)
    assert np.allclose(response.mean_shift, division.mean_shift, rtol=1e-12, atol=1e-15)


def test_predictive_gradient_matches_finite_differences(iris_fit):
    posterior = iris_fit.posterior_
    system = lr.build_response_system(posterior)
    fitted = posterior.globals["components"]
    X = posterior.data["x"]
    d = X.shape[1]
    rows, cols = np.triu_indices(d)
    site = 41
    k_count = system.n_categories
    gaps = lr_kernels.predictive_statistic_gaps(
        X, np.full(k_count, site, dtype=np.int64), np.arange(k_count, dtype=np.int64), system.resp,
        fitted.mean, fitted.beta, fitted.scale, np.einsum("kab,kb->ka", fitted.scale, fitted.mean), fitted.dof,
        rows.astype(np.int64), cols.astype(np.int64))
    divided = system.split(system.coordinates[None] - system.site_messages([site]))["components"]
    block = system.blocks[1]

    def log_density(coords):
        return block.summarize(coords, np.array([site]), np.zeros(1, dtype=bool))["log_density"][0]

    for k in range(k_count):
        numeric = np.empty(divided.shape[2])
        for j in range(divided.shape[2]):
            step = 1e-6 * max(1.0, abs(divided[0, k, j]))
            plus, minus = divided.copy(), divided.copy()
            plus[0, k, j] += step
            minus[0, k, j] -= step
            numeric[j] = (log_density(plus)[k] - log_density(minus)[k]) / (2 * step)
        # Central differences with relative step 1e-6 have truncation error
        # near 1e-12 and rounding error near 1e-10 relative to the log density.
        # The largest measured difference was 9e-8, against entries up to 14.
        assert np.abs(numeric - gaps[k]).max() <= 1e-6 * max(1.0, np.abs(gaps[k]).max())


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
    # The three-iteration fit has not converged, which the correction also warns about.
    with pytest.warns(lr.IllConditionedResponseWarning, match="without converging"):
        with pytest.raises(lr.SingularResponseError, match="singular or indefinite.*eigenvalue"):
            model.influence(method="linear-response")


def test_ill_conditioned_warns(iris_fit, monkeypatch):
    monkeypatch.setattr(lr, "CONDITION_WARN", 1.0)
    with pytest.warns(lr.IllConditionedResponseWarning, match="condition number .* fewer components"):
        lr.build_response_system(iris_fit.posterior_)


def test_failed_factorisation_still_warns(iris_fit, monkeypatch):
    # A Cholesky factorisation that fails although J's largest eigenvalue is
    # below 1 (rounding near 1) raises, after the conditioning warning.
    monkeypatch.setattr(lr, "CONDITION_WARN", 1.0)
    monkeypatch.setattr(lr.lapack, "dpotrf", lambda matrix, **options: (matrix, 1))
    with pytest.warns(lr.IllConditionedResponseWarning, match="condition number"):
        with pytest.raises(lr.SingularResponseError, match="not positive definite"):
            lr.LinearResponseSummaries(iris_fit.posterior_)


def test_kl_blocks_take_any_iterable(iris_fit):
    system = lr.build_response_system(iris_fit.posterior_, warn=False)
    pairs = [(0, 1), (1, 1), (0, 2)]
    from_list = system.kl_blocks(pairs)
    assert from_list.shape == (3, system.block_size, system.block_size)
    assert np.array_equal(system.kl_blocks(iter(pairs)), from_list)
    assert system.kl_blocks([]).shape == (0, system.block_size, system.block_size)


def test_many_categories_find_pairs_first(iris_fit, monkeypatch):
    # Where the sums of every pair would take more than MOMENT_CHUNK_FLOATS,
    # pair_activity's pass finds the active pairs first. V is the same.
    posterior = iris_fit.posterior_
    one_pass = lr._assemble_response_system(posterior)
    monkeypatch.setattr(lr, "MOMENT_CHUNK_FLOATS", 1)
    two_passes = lr._assemble_response_system(posterior)
    # The passes block the sites differently, so their sums round differently.
    scale = np.abs(one_pass[5]).max()
    np.testing.assert_allclose(two_passes[5], one_pass[5], rtol=0.0, atol=1e-13 * scale)
    assert np.array_equal(two_passes[7][0], one_pass[7][0])
    assert np.array_equal(two_passes[7][1], one_pass[7][1])


def test_improper_site_flagged_not_nan():
    # A Dirichlet block whose correction removes more than a concentration
    # is improper: flagged, with KL 0 here and no NaN.
    posterior_alpha = np.array([0.5, 3.0])
    improper = np.zeros(2, dtype=bool)
    corrected = np.array([[[0.4], [2.0]], [[-0.1], [2.5]]])

    class Stub:
        weights = "weights"
        assignment = "assignment"

    state = Posterior(graph=_StubGraph(posterior_alpha), globals={"weights": Dirichlet(posterior_alpha)},
                      locals={"assignment": np.full((2, 2), 0.5)}, data={})
    summary = lr._categorical_block(Stub(), state, "weights").summarize(corrected, np.arange(2), improper)
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


def test_saved_result_keeps_method(iris_fit, tmp_path):
    from fg_influence import io

    result = iris_fit.influence(method="linear-response")
    path = tmp_path / "result.npz"
    io.save(result, path)
    loaded = io.load(path)
    assert loaded.method == "linear-response"
    # The reload recomputes the estimate from the saved posterior, with the
    # same code, so the numbers agree to the last bit.
    assert np.array_equal(loaded.kl, result.kl)
    assert json_method(loaded) == "linear-response"


def json_method(result):
    import json

    return json.loads(result.to_json())["method"]


def test_hierarchical_result_through_influence_result():
    from fg_influence.datasets import load_radon
    from fg_influence.influence import InfluenceResult
    from fg_influence.models import HierarchicalNormal

    data = load_radon().data
    model = HierarchicalNormal().fit(data[:, 0], data[:, 3].astype(int))
    direct = InfluenceResult(model.posterior_, method="linear-response")
    through_model = model.influence(method="linear-response")
    assert through_model.method == "linear-response"
    assert np.array_equal(direct.kl, through_model.kl)
    assert not np.array_equal(direct.kl, model.influence().kl)


def test_model_without_latents_gives_division_numbers():
    from fg_influence.datasets import load_stackloss
    from fg_influence.models import BayesianLinearRegression

    data = load_stackloss().data
    model = BayesianLinearRegression().fit(data[:, :3], data[:, 3])
    response = model.influence(method="linear-response")
    division = model.influence()
    # Without local variables J = 0, so the correction is exactly zero.
    assert response.method == "linear-response"
    assert np.array_equal(response.kl, division.kl)
    assert np.array_equal(response.loo_log_predictive, division.loo_log_predictive)
    assert response.shift_names == division.shift_names


def test_unsupported_block_model_raises():
    import scipy.sparse

    from fg_influence.graph.lda_factors import LDAFactor
    from fg_influence.inference import fit_cavi
    from fg_influence.influence import InfluenceResult
    from fg_influence.models.lda import build_lda_graph

    # LDA with a second field per document (two LDA factors sharing the
    # topics) has no linear-response route.
    counts = scipy.sparse.csr_matrix(np.random.default_rng(0).poisson(2.0, size=(20, 6)).astype(float))
    graph = build_lda_graph(counts.indices, counts.data, counts.indptr, 6, 2, alpha=0.5, eta=0.1)
    graph.add_block("title_topics", plate="documents", owner="title_words")
    graph.add_ragged_observed("titles", np.column_stack([counts.indices, counts.data]), counts.indptr,
                              plate="documents")
    graph.add_factor(LDAFactor("title_words", "titles", "title_topics", "topics", 0.5))
    posterior = fit_cavi(graph, max_iter=2000, warn=False)
    with pytest.raises(NotImplementedError, match="latent Dirichlet allocation.*method='division'"):
        InfluenceResult(posterior, method="linear-response")


def test_method_type_checked(iris_fit):
    with pytest.raises(TypeError, match="method must be a string"):
        iris_fit.influence(method=None)
    with pytest.raises(ValueError, match=r"compute_exact\('all'\)"):
        iris_fit.influence(method="exact")


def test_division_only_shift_named(iris_results):
    with pytest.raises(ValueError, match="'weights.mode' is offered by method='division' only"):
        iris_results.shift("weights.mode")


def test_unconverged_fit_warns():
    X = standardized(load_iris().data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(3, random_state=0, max_iter=2).fit(X)
    assert not model.converged_
    with pytest.warns(lr.IllConditionedResponseWarning, match="without converging.*larger max_iter"):
        try:
            model.influence(method="linear-response")
        except lr.SingularResponseError:
            pass


def test_cli_unsupported_method_is_one_line(tmp_path, capsys):
    path = tmp_path / "constant.csv"
    path.write_text("colour,ship\n" + "\n".join(f"{c},T" for c in "rgbrgbrrgb") + "\n")
    code = main(["mixture", str(path), "--family", "categorical", "-k", "2", "--method", "linear-response"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fg-influence: error: the linear-response correction is not available")
    assert "--method division" in err
    assert "Traceback" not in err


def test_loo_summary_names_its_posteriors(iris_fit, iris_results):
    assert str(iris_results.loo_summary).startswith("LOO from linear-response corrected posteriors")
    assert str(iris_fit.influence().loo_summary).startswith("LOO from divided posteriors")


def test_block_model_rejects_non_string_method():
    # Saving block models is tested in tests/test_io_blocks.py.
    from fg_influence.datasets import load_sleepstudy
    from fg_influence.models import HierarchicalNormal

    data = load_sleepstudy().data
    model = HierarchicalNormal().fit(data[:, 0], data[:, 2].astype(int), data[:, 1])
    with pytest.raises(TypeError, match="method must be a string"):
        model.influence(method=None)


def test_export_without_predictive_density():
    import json

    from fg_influence.models import FactorAnalysis

    X = standardized(load_iris().data)
    result = FactorAnalysis(1, random_state=0).fit(X).influence(method="linear-response")
    document = json.loads(result.to_json())
    # Factor analysis offers no LOO predictive density, so the export leaves it out.
    assert document["method"] == "linear-response"
    assert document["loo_log_predictive"] is None
    assert document["loo"] is None
    assert len(document["kl"]) == X.shape[0]
    frame = result.summary_frame()
    assert "loo_log_predictive" not in frame.columns
    assert np.allclose(frame["kl"].to_numpy(), result.kl)


def test_unscaled_diagonal_mixture_has_linear_response():
    from fg_influence.models import DiagonalGaussianMixture

    # Velocities near 2e4 km/s: the Hessian's entries span many orders of
    # magnitude, which an unscaled definiteness check mistook for singular.
    X = load_galaxies().data
    model = DiagonalGaussianMixture(3, random_state=0, n_init=3).fit(X)
    response = model.influence(method="linear-response")
    rescaled = DiagonalGaussianMixture(3, random_state=0, n_init=3).fit(X / 1000.0)
    assert np.all(np.isfinite(response.kl))
    # The default priors follow the data's scale, so the KL hardly depends on
    # the units (measured: Spearman 1.0, largest relative difference 1.3e-3,
    # from rounding amplified by the badly scaled coordinates).
    assert spearmanr(response.kl, rescaled.influence(method="linear-response").kl).statistic >= 0.99
