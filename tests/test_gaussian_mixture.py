"""GaussianMixture against scikit-learn, closed forms and exact refits."""

import re

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from fg_influence import GaussianMixture

from .helpers import clustered_data, standardized_faithful

sklearn_mixture = pytest.importorskip("sklearn.mixture")


@pytest.fixture(scope="module")
def faithful():
    return standardized_faithful()


@pytest.fixture(scope="module")
def fitted(faithful):
    return GaussianMixture(2, random_state=0).fit(faithful)


@pytest.mark.parametrize("n_components", [2, 3])
def test_posterior_matches_sklearn_at_shared_fixed_point(faithful, n_components):
    reference = sklearn_mixture.BayesianGaussianMixture(
        n_components=n_components,
        weight_concentration_prior_type="dirichlet_distribution",
        reg_covar=0.0, tol=1e-12, max_iter=10000, random_state=0,
    ).fit(faithful)
    _, log_resp = reference._estimate_log_prob_resp(faithful)
    model = GaussianMixture(
        n_components,
        weight_concentration_prior=reference.weight_concentration_prior_,
        mean_precision_prior=reference.mean_precision_prior_,
        mean_prior=reference.mean_prior_,
        degrees_of_freedom_prior=reference.degrees_of_freedom_prior_,
        covariance_prior=reference.covariance_prior_,
        tol=1e-14, max_iter=10000,
    ).fit(faithful, init_resp=np.exp(log_resp))
    # Both sit at the same fixed point; scikit-learn adds 10 machine epsilons
    # to each component count and stops at its own tolerance, which leaves
    # differences near 1e-8, well inside 1e-6.
    rtol = 1e-6
    np.testing.assert_allclose(model.weight_concentration_, reference.weight_concentration_, rtol=rtol)
    np.testing.assert_allclose(model.mean_precision_, reference.mean_precision_, rtol=rtol)
    np.testing.assert_allclose(model.degrees_of_freedom_, reference.degrees_of_freedom_, rtol=rtol)
    np.testing.assert_allclose(model.means_, reference.means_, rtol=rtol)
    np.testing.assert_allclose(model.precisions_, reference.precisions_, rtol=rtol)
    np.testing.assert_allclose(model.predict_proba(faithful), reference.predict_proba(faithful),
                               rtol=rtol, atol=1e-10)


def test_score_samples_is_student_t_mixture(fitted, faithful):
    weights = fitted.weight_concentration_ / fitted.weight_concentration_.sum()
    d = faithful.shape[1]
    terms = []
    for k in range(2):
        dof = fitted.degrees_of_freedom_[k] + 1 - d
        beta = fitted.mean_precision_[k]
        shape = (1 + beta) / (dof * beta) * np.linalg.inv(fitted.scale_[k])
        terms.append(np.log(weights[k]) + stats.multivariate_t(fitted.means_[k], shape, df=dof).logpdf(faithful))
    expected = logsumexp(np.array(terms), axis=0)
    np.testing.assert_allclose(fitted.score_samples(faithful), expected, rtol=1e-10)


def test_predict_matches_argmax_of_proba(fitted, faithful):
    proba = fitted.predict_proba(faithful)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.predict(faithful), proba.argmax(axis=1))


def test_one_column_input_accepted():
    x = np.concatenate([np.linspace(-3, -1, 20), np.linspace(1, 3, 20)])
    model = GaussianMixture(2, random_state=0).fit(x)
    assert model.means_.shape == (2, 1)
    assert sorted(np.round(model.means_[:, 0]).tolist()) == [-2.0, 2.0]


def test_constant_column_rejected_with_index(faithful):
    X = np.column_stack([faithful[:, 0], np.ones(len(faithful))])
    with pytest.raises(ValueError, match=r"X column 1 is constant .*drop that column"):
        GaussianMixture(2, random_state=0).fit(X)


def test_constant_one_column_input_rejected():
    with pytest.raises(ValueError, match=r"X column 0 is constant \(every value is 3\.5\)"):
        GaussianMixture(2, random_state=0).fit(np.full(10, 3.5))


def test_unknown_init_params_named(faithful):
    with pytest.raises(ValueError, match=r"^init_params must be one of \('kmeans', 'random'\), got 'bogus'"):
        GaussianMixture(2, init_params="bogus").fit(faithful)


def test_lost_definiteness_lists_causes(faithful):
    # Columns near 1e9 with unit spread make the Normal-Wishart count
    # coordinates cancel, which is the one cause that fails reliably.
    X = faithful + 1e9
    with pytest.raises(ValueError, match=r"lost positive definiteness") as caught:
        GaussianMixture(2, random_state=0).fit(X)
    message = str(caught.value)
    # Both columns sit 1e9 from 0 with unit spread, so the message names one and lists both.
    assert re.search(r"X column [01] is nearly constant far from 0", message)
    assert "(nearly constant columns: [0, 1])" in message
    assert "Centre and scale that column" in message
    assert f"too few rows per component ({len(X)} rows for 2 components)" in message
    assert "duplicated rows or columns" in message


def test_default_priors_follow_sklearn(faithful):
    priors = GaussianMixture(3).priors(faithful)
    assert priors["weight_concentration_prior"] == pytest.approx(1 / 3)
    assert priors["degrees_of_freedom_prior"] == faithful.shape[1]
    np.testing.assert_allclose(priors["mean_prior"], faithful.mean(axis=0))
    np.testing.assert_allclose(priors["covariance_prior"], np.cov(faithful, rowvar=False))


def test_faithful_ranking_agrees_with_exact_refits(fitted):
    result = fitted.influence().compute_exact("all")
    accuracy = result.accuracy()
    # Measured 0.9987 over all 272 rows (K = 2, seed 0); 0.99 is the target.
    assert accuracy["spearman"] >= 0.99
    # Measured 2.3% median relative error in the KL.
    assert accuracy["median_relative_error"] < 0.05
    assert accuracy["top_k_overlap"] >= 0.8


def test_exact_refit_of_one_site_moves_towards_division(fitted):
    result = fitted.influence()
    site = int(result.top(1)[0])
    result.compute_exact([site])
    # Division ignores the other sites' response, so it is an approximation;
    # on these well-separated clusters it is within 20% of the refit.
    assert result.exact_kl[0] == pytest.approx(result.kl[site], rel=0.2)


def test_exact_refit_on_separable_clusters_is_nearly_division():
    X = clustered_data(np.random.default_rng(3), 80, 2, 2, spread=30.0)
    model = GaussianMixture(2, random_state=0).fit(X)
    result = model.influence().compute_exact("all")
    # With clusters 30 standard deviations apart every responsibility is 0 or
    # 1 to rounding, so no other site responds and division is exact up to
    # the refit tolerance.
    np.testing.assert_allclose(result.kl, result.exact_kl, rtol=1e-6)


def test_influence_requires_fit():
    with pytest.raises(ValueError, match="not fitted yet"):
        GaussianMixture(2).influence()
