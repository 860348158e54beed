"""Factor analysis: Gaussian latent blocks per example."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris

from fg_influence.cli import main
from fg_influence.influence import divide, posterior_kl
from fg_influence.influence.linear_response import IllConditionedResponseWarning
from fg_influence.models.factor_analysis import FactorAnalysis


def synthetic(rng, n=400):
    loadings = np.array([[1.0], [0.8], [-0.6], [0.0]])
    noise_sd = np.array([0.3, 0.4, 0.5, 1.0])
    z = rng.normal(size=(n, 1))
    return z @ loadings.T + rng.normal(size=(n, 4)) * noise_sd, loadings, noise_sd


def test_recovers_loadings_and_noise():
    X, loadings, noise_sd = synthetic(np.random.default_rng(0))
    model = FactorAnalysis(1, tol=1e-12).fit(X)
    # With 400 rows the loadings' sampling error is about 0.05, so 0.1
    # absolute (up to the sign of the factor) is a 2-sigma band.
    sign = np.sign(model.loadings_[0, 0])
    np.testing.assert_allclose(sign * model.loadings_, loadings, atol=0.1)
    np.testing.assert_allclose(np.sqrt(model.noise_variance_), noise_sd, rtol=0.15)


def test_elbo_never_decreases():
    X, _, _ = synthetic(np.random.default_rng(1), n=100)
    history = np.array(FactorAnalysis(1).fit(X).posterior_.elbo_history)
    # 1e-9 relative allows rounding.
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))


def test_closed_form_kl_matches_division():
    X, _, _ = synthetic(np.random.default_rng(2), n=60)
    model = FactorAnalysis(1).fit(X)
    result = model.influence()
    for site in (0, 30, 59):
        divided = divide(model.posterior_, [site])
        assert result.kl[site] == pytest.approx(posterior_kl(model.posterior_.globals, divided), rel=1e-9)


def test_outlier_is_most_influential():
    X, _, _ = synthetic(np.random.default_rng(3), n=100)
    X[17] = [4.0, -4.0, 4.0, 6.0]
    result = FactorAnalysis(1).fit(X).influence()
    assert result.top(1)[0] == 17


def test_too_many_factors_rejected():
    with pytest.raises(ValueError, match="n_factors must be less than the number of columns"):
        FactorAnalysis(4).fit(np.random.default_rng(0).normal(size=(10, 4)))


def test_cli_drops_rows_with_missing_values(tmp_path, capsys):
    path = tmp_path / "data.csv"
    rng = np.random.default_rng(4)
    X, _, _ = synthetic(rng, n=40)
    lines = ["a,b,c,d"] + [",".join(f"{v:.4f}" for v in row) for row in X]
    lines[5] = "1.0,NA,2.0,3.0"
    path.write_text("\n".join(lines) + "\n")
    code = main(["factor-analysis", str(path), "--factors", "1", "--top", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert "dropped 1 row(s) with missing values" in captured.err
    assert "(39 rows)" in captured.out


def test_loose_multi_factor_fit_warns():
    X = load_iris().data
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    loose = FactorAnalysis(2).fit(X)
    with pytest.warns(IllConditionedResponseWarning, match=r"2 factors was fitted with tol=1e-09.*tol=1e-12"):
        loose.influence(method="linear-response")
    with warnings.catch_warnings():
        warnings.simplefilter("error", IllConditionedResponseWarning)
        FactorAnalysis(1).fit(X).influence(method="linear-response")
        loose.influence()
