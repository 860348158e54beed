"""Influence results as tables and JSON, and the LOO summary in ArviZ's terms."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

from fg_influence import GaussianMixture
from fg_influence.datasets import load_faithful
from fg_influence.exceptions import ConvergenceWarning
from fg_influence.influence import divide
from fg_influence.influence._export import json_array
from fg_influence.influence.loo import log_likelihood_draws, psis_loo, summarize_loo


@pytest.fixture(scope="module")
def faithful_frame() -> pd.DataFrame:
    dataset = load_faithful()
    X = (dataset.data - dataset.data.mean(axis=0)) / dataset.data.std(axis=0)
    labels = [f"eruption-{label}" for label in dataset.row_labels]
    return pd.DataFrame(X, columns=list(dataset.columns), index=labels)


@pytest.fixture(scope="module")
def model(faithful_frame) -> GaussianMixture:
    return GaussianMixture(n_components=2, random_state=0).fit(faithful_frame)


@pytest.fixture(scope="module")
def result(model):
    return model.influence().compute_exact([0, 5, 100])


# Row labels and the summary frame


def test_row_labels_come_from_pandas_index(model, result, faithful_frame):
    assert model.row_labels_ == faithful_frame.index.tolist()
    assert model.feature_names_in_ == ["eruptions", "waiting"]
    assert result.labels == faithful_frame.index.tolist()


def test_numpy_input_labels_rows_by_position(faithful_frame):
    result = GaussianMixture(2, random_state=0).fit(faithful_frame.to_numpy()[:40]).influence()
    assert result.row_labels is None
    assert result.labels == list(range(40))


def test_summary_frame_columns_match_properties(result, faithful_frame):
    frame = result.summary_frame()
    assert frame.index.tolist() == faithful_frame.index.tolist()
    np.testing.assert_array_equal(frame["kl"].to_numpy(), result.kl)
    np.testing.assert_array_equal(frame["loo_log_predictive"].to_numpy(), result.loo_log_predictive)
    np.testing.assert_array_equal(frame["shift.components.mean[1, 0]"].to_numpy(), result.mean_shift[:, 1, 0])
    np.testing.assert_array_equal(frame["shift.weights.mean[0]"].to_numpy(), result.weight_shift[:, 0])
    np.testing.assert_array_equal(frame["kl.weights"] + frame["kl.components"], frame["kl"])


def test_summary_frame_exact_column(result):
    exact = result.summary_frame()["exact_kl"]
    np.testing.assert_array_equal(exact.iloc[[0, 5, 100]].to_numpy(), result.exact_kl)
    assert exact.isna().sum() == result.n_sites - 3


def test_summary_frame_without_pandas(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"fg-influence\[pandas\]"):
        result.summary_frame()


def test_top_follows_kl(result):
    top = result.top(5)
    np.testing.assert_array_equal(top, np.argsort(-result.kl, kind="stable")[:5])


def test_shift_sign_is_without_minus_with(model, result):
    site = int(result.top(1)[0])
    divided = divide(model.posterior_, [site])
    expected = divided["components"].mean - model.posterior_.globals["components"].mean
    # Closed form against explicit subtraction of natural parameters: both are
    # exact, so only rounding (a few ulps of values near 1) separates them.
    np.testing.assert_allclose(result.mean_shift[site], expected, rtol=0, atol=1e-12)


# JSON


def test_to_json_round_trip(result, tmp_path):
    path = tmp_path / "result.json"
    text = result.to_json(path)
    document = json.loads(path.read_text())
    assert document == json.loads(text)
    assert document["row_labels"][:2] == result.labels[:2]
    np.testing.assert_array_equal(np.array(document["kl"], dtype=float), result.kl)
    np.testing.assert_array_equal(np.array(document["shifts"]["components.mean"]), result.mean_shift)
    assert document["exact"]["sites"] == [0, 5, 100]
    assert document["loo"]["elpd_loo"] == result.loo_summary.elpd_loo
    assert "(value without the site) minus (value with all sites)" in document["conventions"]


def test_json_array_writes_infinity_as_null():
    assert json_array(np.array([1.5, np.inf, -np.inf, np.nan])) == [1.5, None, None, None]
    assert json_array(np.array([True, False])) == [True, False]


def test_to_json_rejects_unwritable_path(result, tmp_path):
    with pytest.raises(ValueError, match="could not write JSON file"):
        result.to_json(tmp_path / "missing" / "result.json")


# LOO summary


def _student_t_mixture_logpdf(model, X) -> np.ndarray:
    """log of sum_k w_k St(x | m_k, L_k^-1, nu_k + 1 - D), Bishop (2006) eq. 10.81, via SciPy."""
    d = X.shape[1]
    alpha = model.weight_concentration_
    terms = []
    for k in range(alpha.size):
        dof = model.degrees_of_freedom_[k] + 1 - d
        beta = model.mean_precision_[k]
        shape = np.linalg.inv(dof * beta / (1 + beta) * model.scale_[k])
        terms.append(np.log(alpha[k] / alpha.sum())
                     + stats.multivariate_t(model.means_[k], shape, df=dof).logpdf(X))
    return logsumexp(np.array(terms), axis=0)


def test_loo_summary_definitions(model, result, faithful_frame):
    loo = result.loo_summary
    elpd_i = result.loo_log_predictive
    assert loo.elpd_loo == pytest.approx(np.sum(elpd_i), rel=1e-15)
    assert loo.se == pytest.approx(np.sqrt(elpd_i.size * np.var(elpd_i)), rel=1e-15)
    lppd = np.sum(_student_t_mixture_logpdf(model, faithful_frame.to_numpy()))
    # Two evaluations of the same density (Numba kernel and SciPy); 1e-10
    # relative covers their different summation orders.
    assert loo.lppd == pytest.approx(lppd, rel=1e-10)
    assert loo.p_loo == pytest.approx(lppd - loo.elpd_loo, rel=1e-8)
    # Two components with full covariances in 2-D have 11 parameters; p_loo
    # measured 9.27 here and must stay positive and below that count.
    assert 0 < loo.p_loo < 11


def test_loo_summary_with_improper_site():
    summary = summarize_loo(np.array([-1.0, -np.inf, -2.0]), np.array([-0.5, -0.5, -0.5]))
    assert summary.elpd_loo == -np.inf
    assert summary.se == np.inf
    assert summary.n_improper == 1
    assert "1 sites have an improper divided posterior" in str(summary)


def test_log_likelihood_draws_match_scipy(model, faithful_frame):
    X = faithful_frame.to_numpy()[:7]
    draws = log_likelihood_draws(model.posterior_, n_draws=3, random_state=1)
    assert draws.shape == (3, 272)
    # Re-draw the same parameters and evaluate with SciPy.
    from fg_influence.influence.loo import draw_mixture_parameters

    parameters = draw_mixture_parameters(model.posterior_, 3, random_state=1)
    for s in range(3):
        density = sum(
            parameters["weights"][s, k] * stats.multivariate_normal(
                parameters["means"][s, k], np.linalg.inv(parameters["precisions"][s, k])).pdf(X)
            for k in range(2)
        )
        # Cholesky-based and SciPy's eigen-based log densities differ by rounding only.
        np.testing.assert_allclose(draws[s, :7], np.log(density), rtol=1e-10)


def test_log_likelihood_draws_independent_of_chunk_size(model):
    small = log_likelihood_draws(model.posterior_, n_draws=25, random_state=2, chunk_size=4)
    large = log_likelihood_draws(model.posterior_, n_draws=25, random_state=2, chunk_size=100)
    np.testing.assert_array_equal(small, large)


def test_psis_loo_agrees_with_division(result, model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor on import
        psis = psis_loo(model.posterior_, n_draws=2000, random_state=0)
    loo = result.loo_summary
    # Measured with 2000 draws: elpd_loo -399.40 against -399.48 from division,
    # p_loo 9.27 against 9.27, largest pointwise gap 0.019, largest Pareto k
    # 0.23. The bounds leave room for Monte Carlo error of other seeds while
    # staying far below the standard error (15.2).
    assert abs(psis.elpd_loo - loo.elpd_loo) < 1.0
    assert abs(psis.p_loo - loo.p_loo) < 1.0
    assert np.max(np.abs(psis.loo_i.values - result.loo_log_predictive)) < 0.1
    assert np.max(psis.pareto_k.values) < 0.7


def test_log_likelihood_draws_rejects_bad_count(model):
    with pytest.raises(ValueError, match="n_draws must be at least 1, got 0"):
        log_likelihood_draws(model.posterior_, n_draws=0)


def overlapping_fit(tol):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 2))
    X = centres[rng.integers(0, 4, size=400)] + rng.normal(size=(400, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(4, random_state=0, tol=tol, max_iter=5000).fit(X)


def test_exact_warns_on_loose_fit():
    # Stopped after about a dozen iterations, the fit is KL ~400 from its own
    # optimum, and the refits of 3 rows measure mostly that (measured 300-460).
    result = overlapping_fit(1e-4).influence()
    with pytest.warns(ConvergenceWarning, match=r"not converged to the refits' tolerance.*tol=1e-12"):
        result.compute_exact(3)


def test_exact_quiet_on_tight_fit():
    result = overlapping_fit(1e-12).influence()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result.compute_exact(3)
    assert result.exact_sites.size == 3


@pytest.mark.parametrize(("top_k", "error", "match"), [
    (0, ValueError, "top_k must be at least 1, got 0"),
    (-1, ValueError, "top_k must be at least 1, got -1"),
    ("5", TypeError, "top_k must be an integer"),
    (2.5, TypeError, "top_k must be an integer"),
])
def test_accuracy_rejects_bad_top_k(top_k, error, match):
    result = overlapping_fit(1e-12).influence().compute_exact([0, 1, 2])
    with pytest.raises(error, match=match):
        result.accuracy(top_k=top_k)


def test_accuracy_caps_top_k():
    # With 3 refitted rows a top-3 overlap is 1 whatever the estimates, so
    # the overlap is taken over the top 2.
    result = overlapping_fit(1e-12).influence().compute_exact([0, 1, 2])
    accuracy = result.accuracy(top_k=10)
    assert accuracy["top_k"] == 2
    assert accuracy["top_k_overlap"] in (0.0, 0.5, 1.0)


def test_accuracy_rejects_one_refit():
    result = overlapping_fit(1e-12).influence().compute_exact([0])
    with pytest.raises(ValueError, match=r"at least 2 sites, got 1; call compute_exact with 2 or more sites"):
        result.accuracy()
