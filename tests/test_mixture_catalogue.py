"""Diagonal Gaussian, Poisson, categorical and regression mixtures on real data.

The diagonal Gaussian mixture is checked against scikit-learn at a shared
fixed point; every mixture's estimated KL is checked against exact refits
with a Spearman floor measured on the named data set.
"""

import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture

from fg_influence.datasets import (
    load_biochemists,
    load_epil,
    load_faithful,
    load_galaxies,
    load_iris,
    load_stackloss,
    load_titanic,
)
from fg_influence.families import Dirichlet, NormalGamma
from fg_influence.influence import divide, exact_kl
from fg_influence.inference.cavi import update_global
from fg_influence.inference.posterior import Posterior
from fg_influence.models import (
    BernoulliMixture,
    CategoricalMixture,
    DiagonalGaussianMixture,
    MixtureOfRegressions,
    PoissonMixture,
)

# Tight CAVI tolerance so the fits sit at a fixed point: exact refits then
# measure the effect of the removed row, not leftover convergence.
TIGHT = dict(n_init=3, random_state=0, tol=1e-13, max_iter=20000)

# Refits stop at a relative ELBO change of 1e-10 instead of the library's
# 1e-12 to keep this file's runtime down. The Spearman values measured with
# both tolerances agree to 3 digits on every data set here.
REFIT_TOL = 1e-10


def spearman_against_refits(model, sites) -> float:
    from scipy.stats import spearmanr

    estimate = model.influence().kl[sites]
    exact, _ = exact_kl(model.posterior_, [[int(i)] for i in sites], tol=REFIT_TOL)
    return float(spearmanr(estimate, exact).statistic)


def sklearn_fixed_point(X, k):
    model = BayesianGaussianMixture(
        n_components=k, covariance_type="diag", weight_concentration_prior_type="dirichlet_distribution",
        reg_covar=0.0, tol=1e-12, max_iter=20000, random_state=0,
    ).fit(X)
    assert model.converged_
    return model, model.predict_proba(X)


def one_global_update(model, X, resp):
    """Our global posteriors after one M-step from the responsibilities ``resp``."""
    graph = model.build_graph(X)
    state = Posterior(graph, {}, {"assignment": resp}, {"x": graph.variables["x"].data})
    for name in ("weights", "components"):
        update_global(state, name)
    model._set_components(state)
    model.posterior_ = state
    return state


@pytest.mark.parametrize("dataset,k", [("galaxies", 3), ("iris", 3)])
def test_diagonal_mixture_m_step_matches_sklearn(dataset, k):
    X = load_galaxies().data / 1000 if dataset == "galaxies" else load_iris().data
    reference, resp = sklearn_fixed_point(X, k)
    model = DiagonalGaussianMixture(k)

    state = one_global_update(model, X, resp)

    # sklearn's parameters come from the responsibilities of its last
    # iteration, which differ from predict_proba's by its tolerance 1e-12.
    np.testing.assert_allclose(state.globals["weights"].concentration, reference.weight_concentration_, rtol=1e-6)
    np.testing.assert_allclose(model.means_, reference.means_, rtol=1e-6)
    np.testing.assert_allclose(model.mean_precision_, reference.mean_precision_, rtol=1e-6)
    np.testing.assert_allclose(model.degrees_of_freedom_, reference.degrees_of_freedom_, rtol=1e-6)
    np.testing.assert_allclose(model.covariances_, reference.covariances_, rtol=1e-6)


def test_diagonal_e_step_matches_sklearn_1d():
    X = load_galaxies().data / 1000
    reference, resp = sklearn_fixed_point(X, 4)
    model = DiagonalGaussianMixture(4)
    state = one_global_update(model, X, resp)
    # Put sklearn's own parameters into our posterior: the Gamma shape is
    # nu / 2 and the rate nu * covariance / 2.
    dof = reference.degrees_of_freedom_[:, None]
    state.globals["weights"] = Dirichlet(reference.weight_concentration_)
    state.globals["components"] = NormalGamma(
        reference.means_[:, :, None], reference.mean_precision_[:, None, None, None],
        0.5 * dof, 0.5 * dof * reference.covariances_,
    )

    ours = model.predict_proba(X)

    # Both evaluate the same closed form at the same parameters, so they
    # agree to rounding, amplified by exponentiating log-responsibilities of
    # size up to about 50.
    np.testing.assert_allclose(ours, reference.predict_proba(X), rtol=1e-9, atol=1e-12)


def test_diagonal_mixture_galaxies_matches_exact_refits():
    X = load_galaxies().data / 1000
    model = DiagonalGaussianMixture(2, **TIGHT).fit(X)

    assert spearman_against_refits(model, np.arange(len(X))) >= 0.95  # measured 0.973 over all 82 rows


def test_diagonal_mixture_shifts_have_site_axis_first():
    X = load_iris().data
    model = DiagonalGaussianMixture(3, n_init=2, random_state=0).fit(X)
    result = model.influence()

    assert result.shift("components.mean").shape == (150, 3, 4)
    assert result.shift("components.precision").shape == (150, 3, 4)
    assert result.loo_log_predictive.shape == (150,)
    assert np.all(result.kl >= 0)


def distinct_rows(X):
    """First position of each distinct row: rows with equal values have equal estimates."""
    _, first = np.unique(X, axis=0, return_index=True)
    return np.sort(first)


def test_poisson_mixture_epil_matches_exact_refits():
    y = load_epil().data[:, :1]
    model = PoissonMixture(2, **TIGHT).fit(y)

    assert spearman_against_refits(model, distinct_rows(y)) >= 0.9  # measured 0.970 over the 36 distinct counts


def test_poisson_mixture_biochemists_matches_exact_refits():
    art = load_biochemists().data[:, :1]
    model = PoissonMixture(2, **TIGHT).fit(art)

    assert spearman_against_refits(model, distinct_rows(art)) >= 0.9  # measured 0.943 over the 15 distinct counts


def test_categorical_mixture_titanic_matches_exact_refits():
    codes = load_titanic().codes
    model = CategoricalMixture(2, **TIGHT).fit(codes)

    assert spearman_against_refits(model, distinct_rows(codes)) >= 0.6  # measured 0.713 over the 20 distinct passengers


def test_bernoulli_mixture_equals_two_category_mixture():
    codes = load_titanic().codes[:, 1:]
    binary = BernoulliMixture(2, init_params="random", random_state=0).fit(codes)
    categorical = CategoricalMixture(2, init_params="random", random_state=0).fit(codes)

    # Beta(a, b) is the two-category Dirichlet, so both fits take the same
    # CAVI steps from the same start; they differ by rounding.
    np.testing.assert_allclose(binary.lower_bound_, categorical.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(binary.influence().kl, categorical.influence().kl, rtol=1e-6, atol=1e-12)


def test_mixture_of_regressions_faithful_matches_exact_refits():
    X = load_faithful().data
    model = MixtureOfRegressions(2, **TIGHT).fit(X[:, :1], X[:, 1])
    sites = np.random.default_rng(0).choice(len(X), 20, replace=False)

    # The two regression lines nearly coincide, so removing a row moves many
    # responsibilities. Division keeps them fixed, and the exact KL is 10 to
    # 60 times the estimate here. Refits stopped at 1e-12 or 1e-14 instead of
    # REFIT_TOL give the same 0.191, so this is not refit noise.
    # NOTE: this floor only asserts a positive rank correlation; a different
    # draw of 40 rows gave 0.546.
    assert spearman_against_refits(model, sites) >= 0.1  # measured 0.191


def test_mixture_of_regressions_stackloss_matches_exact_refits():
    data = load_stackloss().data
    model = MixtureOfRegressions(2, **TIGHT).fit(data[:, :3], data[:, 3])

    assert spearman_against_refits(model, np.arange(len(data))) >= 0.99  # measured 1.0


def test_poisson_rejects_negative_counts():
    with pytest.raises(ValueError, match="X must hold non-negative counts for a Poisson likelihood, got minimum -1"):
        PoissonMixture(2).fit([[1.0], [-1.0], [3.0]])


def test_poisson_rejects_fractional_counts():
    with pytest.raises(ValueError, match="X must hold integer counts for a Poisson likelihood, got 0.5"):
        PoissonMixture(2).fit([[1.0], [0.5], [3.0]])


def test_bernoulli_rejects_values_outside_zero_one():
    with pytest.raises(ValueError, match="X must hold only 0 and 1 for a Bernoulli likelihood, got 2"):
        BernoulliMixture(2).fit([[1.0], [0.0], [2.0]])


def test_categorical_rejects_unseen_category():
    model = CategoricalMixture(2, random_state=0).fit([[0, 1], [1, 0], [1, 1], [0, 0]])

    with pytest.raises(ValueError, match="category code 2 in column 1, unseen in training"):
        model.predict_proba([[0, 2]])


def test_categorical_rejects_too_many_categories():
    with pytest.raises(ValueError, match="column 0 of X has code 3, but n_categories gives it only 2"):
        CategoricalMixture(2, n_categories=[2]).fit([[0], [1], [3]])


def test_categorical_rejects_non_integer_codes():
    with pytest.raises(ValueError, match="non-negative integer category codes, got 1.5"):
        CategoricalMixture(2).fit([[0], [1.5], [1]])


@pytest.mark.parametrize("make,X", [
    (lambda: DiagonalGaussianMixture(2, random_state=0), load_iris().data[::5]),
    (lambda: PoissonMixture(2, random_state=0), load_epil().data[::4, :1]),
    (lambda: BernoulliMixture(2, random_state=0), load_titanic().codes[::20, 1:]),
    (lambda: CategoricalMixture(2, random_state=0), load_titanic().codes[::20]),
])
def test_dividing_every_row_returns_prior(make, X):
    from fg_influence.influence import divided_natural_params

    model = make().fit(X)
    graph = model.posterior_.graph

    divided = divided_natural_params(model.posterior_, np.arange(len(X)))

    for name, natural in divided.items():
        prior = graph.variables[name].prior.natural_params()
        fitted = model.posterior_.globals[name].natural_params()
        for left, right, size in zip(natural, prior, fitted):
            # Subtracting the summed site messages from their sum leaves the
            # rounding of the largest term, a few eps of |fitted|.
            np.testing.assert_allclose(left, right, rtol=0, atol=1e-12 * (np.abs(size).max() + 1.0))


def test_mixture_of_regressions_group_division_matches_messages():
    data = load_stackloss().data
    model = MixtureOfRegressions(2, random_state=0).fit(data[:, :3], data[:, 3])
    group = [0, 2, 3, 20]
    posterior = model.posterior_
    resp = posterior.locals["assignment"][group]
    design = np.column_stack([np.ones(len(data)), data[:, :3]])[group]

    divided = divide(posterior, group)["coefficients"]

    # Removing the group subtracts sum_i r_ik x_i x_i^T / 2 from -precision / 2.
    expected = posterior.globals["coefficients"].precision - np.einsum("nk,ni,nj->kij", resp, design, design)
    np.testing.assert_allclose(divided.precision, expected, rtol=1e-10, atol=1e-10)
    expected_shape = posterior.globals["coefficients"].shape - 0.5 * resp.sum(axis=0)
    np.testing.assert_allclose(divided.shape, expected_shape, rtol=1e-12)


def test_unknown_init_params_named():
    counts = np.array([[0.0, 1.0], [2.0, 3.0], [1.0, 0.0], [4.0, 2.0]])
    with pytest.raises(ValueError, match=r"^init_params must be one of \('kmeans', 'random'\), got 'bogus'"):
        PoissonMixture(2, init_params="bogus").fit(counts)
