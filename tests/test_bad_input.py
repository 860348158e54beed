"""Invalid input: the library raises ValueError or TypeError with a clear
message, and the command line exits with code 2 and one error line on
stderr. The last tests check that fit, prediction, influence and division
leave the arrays passed to them unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fg_influence import GaussianMixture, ImproperPosteriorError, cli
from fg_influence.datasets import load_faithful
from fg_influence.influence import divide, site_messages

N_ROWS = 272


@pytest.fixture(scope="module")
def faithful_standardized() -> np.ndarray:
    data = load_faithful().data
    return (data - data.mean(axis=0)) / data.std(axis=0)


@pytest.fixture(scope="module")
def fitted(faithful_standardized) -> GaussianMixture:
    return GaussianMixture(n_components=2, random_state=0).fit(faithful_standardized)


def _write_faithful_csv(path, rows=None) -> None:
    dataset = load_faithful()
    lines = ["rownames,eruptions,waiting"]
    for label, (eruptions, waiting) in list(zip(dataset.row_labels, dataset.data))[:rows]:
        lines.append(f"{label},{float(eruptions)!r},{float(waiting)!r}")
    path.write_text("\n".join(lines) + "\n")


def _run_cli_error(argv: list[str], capsys) -> tuple[str, str]:
    """Run the command line, check exit code 2 without a traceback, return (stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse usage errors exit from parse_args
        code = exit_info.code
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    assert "error:" in captured.err
    return captured.out, captured.err


# Data passed to fit


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_fit_rejects_non_finite(faithful_standardized, bad_value):
    X = faithful_standardized.copy()
    X[10, 1] = bad_value
    with pytest.raises(ValueError, match=r"X must contain only finite values; found -?(nan|inf) at index \(10, 1\)"):
        GaussianMixture(n_components=2).fit(X)


@pytest.mark.parametrize("empty", [np.empty((0, 2)), [], np.empty(0)])
def test_fit_rejects_empty_data(empty):
    with pytest.raises(ValueError, match=r"X must have at least 2 rows to fit a mixture, got 0"):
        GaussianMixture(n_components=1).fit(empty)


def test_fit_rejects_zero_columns():
    with pytest.raises(ValueError, match=r"X must have at least one column, got shape \(5, 0\)"):
        GaussianMixture(n_components=1).fit(np.empty((5, 0)))


def test_fit_rejects_one_row():
    with pytest.raises(ValueError, match=r"X must have at least 2 rows to fit a mixture, got 1"):
        GaussianMixture(n_components=1).fit(np.array([[1.0, 2.0]]))


def test_fit_rejects_3d_data():
    with pytest.raises(ValueError, match=r"X must have 1 or 2 dimensions, got shape \(10, 2, 2\)"):
        GaussianMixture(n_components=1).fit(np.zeros((10, 2, 2)))


def test_fit_rejects_strings():
    with pytest.raises(TypeError, match=r"X must be a numeric array, got an array of strings"):
        GaussianMixture(n_components=1).fit([["1.5", "2"], ["3", "4"], ["5", "7"]])
    with pytest.raises(TypeError, match=r"X must be a numeric array, got a string"):
        GaussianMixture(n_components=1).fit("1,2,3")


def test_fit_rejects_ragged_rows():
    with pytest.raises(TypeError, match=r"X must be a numeric array; could not convert it to float64"):
        GaussianMixture(n_components=1).fit([[1.0, 2.0], [3.0]])


# Number of components


def test_zero_components(faithful_standardized):
    with pytest.raises(ValueError, match=r"n_components must be at least 1, got 0"):
        GaussianMixture(n_components=0).fit(faithful_standardized)


def test_more_components_than_rows(faithful_standardized):
    with pytest.raises(ValueError, match=rf"n_components must be at most the number of rows \({N_ROWS}\), got 500"):
        GaussianMixture(n_components=500).fit(faithful_standardized)


@pytest.mark.parametrize("value", [2.5, 2.0, "2", True])
def test_non_integer_components(faithful_standardized, value):
    with pytest.raises(TypeError, match=r"n_components must be an integer, got .* of type"):
        GaussianMixture(n_components=value).fit(faithful_standardized)


# Priors


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mean_precision_prior": -1.0}, r"mean_precision_prior must be greater than 0(\.0)?, got -1\.0"),
        ({"mean_precision_prior": 0.0}, r"mean_precision_prior must be greater than 0(\.0)?, got 0\.0"),
        ({"degrees_of_freedom_prior": 1.0},
         r"degrees_of_freedom_prior must be greater than D - 1 = 1 .*got 1\.0"),
        ({"degrees_of_freedom_prior": 0.5},
         r"degrees_of_freedom_prior must be greater than D - 1 = 1 .*got 0\.5"),
        ({"covariance_prior": [[1.0, 2.0], [2.0, 1.0]]},
         r"covariance_prior must be a symmetric positive definite"),
        ({"covariance_prior": [[1.0, 0.5], [0.0, 1.0]]},
         r"covariance_prior must be a symmetric positive definite"),
        ({"covariance_prior": np.eye(3)}, r"covariance_prior must have shape \(2, 2\), got \(3, 3\)"),
        ({"mean_prior": [0.0, 0.0, 0.0]}, r"mean_prior must have shape \(2,\), got \(3,\)"),
        ({"mean_prior": [0.0]}, r"mean_prior must have shape \(2,\), got \(1,\)"),
        ({"weight_concentration_prior": 0.0},
         r"weight_concentration_prior must be greater than 0(\.0)?, got 0\.0"),
        ({"weight_concentration_prior": -0.5},
         r"weight_concentration_prior must be greater than 0(\.0)?, got -0\.5"),
        ({"degrees_of_freedom_prior": float("nan")}, r"degrees_of_freedom_prior must be finite, got nan"),
    ],
)
def test_invalid_priors(faithful_standardized, settings, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(n_components=2, **settings).fit(faithful_standardized)


def test_prior_of_wrong_type(faithful_standardized):
    with pytest.raises(TypeError, match=r"mean_precision_prior must be a real number, got '1'"):
        GaussianMixture(n_components=2, mean_precision_prior="1").fit(faithful_standardized)


# Prediction


def test_predict_with_other_column_count(fitted):
    with pytest.raises(ValueError, match=r"X must have 2 columns like the training data, got shape \(4, 3\)"):
        fitted.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"X must have 2 columns like the training data, got shape \(4, 1\)"):
        fitted.score_samples(np.zeros(4))


def test_predict_proba_rejects_3d(fitted):
    with pytest.raises(ValueError, match=r"X must have 1 or 2 dimensions, got shape \(4, 2, 1\)"):
        fitted.predict_proba(np.zeros((4, 2, 1)))


def test_score_samples_rejects_nan(fitted):
    with pytest.raises(ValueError, match=r"X must contain only finite values; found nan at index \(1, 0\)"):
        fitted.score_samples(np.array([[0.0, 0.0], [np.nan, 0.0]]))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_predict_before_fit(faithful_standardized, method):
    model = GaussianMixture(n_components=2)
    with pytest.raises(ValueError, match=r"not fitted yet; call fit\(X\) first"):
        getattr(model, method)(faithful_standardized)


def test_influence_before_fit():
    with pytest.raises(ValueError, match=r"not fitted yet; call fit\(X\) first"):
        GaussianMixture(n_components=2).influence()


# Site indices for divide and site_messages

BAD_SITES = [
    pytest.param([N_ROWS], ValueError, rf"sites must be in \[0, {N_ROWS - 1}\].*got \[{N_ROWS}\]", id="past-end"),
    pytest.param([0, 10_000], ValueError, r"sites must be in \[0, 271\].*got \[10000\]", id="far-past-end"),
    pytest.param([-1], ValueError, r"sites must be in \[0, 271\].*got \[-1\]", id="negative"),
    pytest.param([3, 7, 3], ValueError, r"sites must not repeat a site.*repeated: \[3\]", id="duplicate"),
    pytest.param([1.0, 2.0], TypeError, r"sites must contain integer site indices, got dtype float64", id="float"),
    pytest.param([0.5], TypeError, r"sites must contain integer site indices, got dtype float64", id="fraction"),
    pytest.param([True, False], TypeError, r"sites must contain integer site indices, got dtype bool", id="bool"),
    pytest.param([], ValueError, r"sites must contain at least one site index, got an empty list", id="empty"),
    pytest.param(np.array([[0, 1]]), ValueError, r"sites must be a 1-D list of site indices, got shape \(1, 2\)",
                 id="2-D"),
]


@pytest.mark.parametrize(("sites", "error", "message"), BAD_SITES)
def test_divide_rejects_bad_sites(fitted, sites, error, message):
    with pytest.raises(error, match=message):
        divide(fitted.posterior_, sites)


@pytest.mark.parametrize(("sites", "error", "message"), BAD_SITES)
def test_site_messages_rejects_bad_sites(fitted, sites, error, message):
    with pytest.raises(error, match=message):
        site_messages(fitted.posterior_, "components", sites)


def test_site_messages_rejects_unknown_variable(fitted):
    with pytest.raises(ValueError, match=r"variable must name a global variable, got 'assignment'"):
        site_messages(fitted.posterior_, "assignment", [0])


# InfluenceResult


@pytest.mark.parametrize(("k", "error", "message"), [
    (0, ValueError, r"k must be at least 1, got 0"),
    (-3, ValueError, r"k must be at least 1, got -3"),
    (2.0, TypeError, r"k must be an integer, got 2\.0"),
])
def test_top_rejects_bad_count(fitted, k, error, message):
    with pytest.raises(error, match=message):
        fitted.influence().top(k)


def test_top_rejects_unknown_measure(fitted):
    with pytest.raises(ValueError, match=r"measure must be one of \('kl', 'loo_log_predictive'\), got 'elbo'"):
        fitted.influence().top(3, by="elbo")


@pytest.mark.parametrize(("sites", "message"), [
    ("some", r'sites must be "all", a count or a list of sites, got \'some\''),
    (0, r"sites must be at least 1, got 0"),
    (N_ROWS + 1, rf"sites must be at most {N_ROWS}, got {N_ROWS + 1}"),
    ([N_ROWS], r"sites must be in \[0, 271\]"),
])
def test_compute_exact_rejects_bad_sites(fitted, sites, message):
    result = fitted.influence()
    with pytest.raises(ValueError, match=message):
        result.compute_exact(sites)
    assert result.exact_sites.size == 0


@pytest.mark.parametrize(("sites", "error"), [
    pytest.param([1.5], TypeError, id="fraction"),
    pytest.param([4, 4], ValueError, id="duplicate"),
    pytest.param([], ValueError, id="empty"),
])
def test_compute_exact_rejects_bad_site_list(fitted, sites, error):
    with pytest.raises(error, match=r"sites must"):
        fitted.influence().compute_exact(sites)


# Improper division


def test_divide_improper_posterior_raises(fitted):
    # Dividing out every site gives back the prior, which is proper, so the
    # improper case is built by hand: a copy of the fitted Posterior whose
    # responsibilities for row 5 are multiplied by 1e6. Row 5's site message
    # is then 1e6 times too large, and subtracting it from the fitted natural
    # parameters leaves negative Dirichlet concentrations.
    posterior = fitted.posterior_
    inflated = posterior.locals["assignment"].copy()
    inflated[5] *= 1e6
    broken = dataclasses.replace(posterior, locals={"assignment": inflated})

    with pytest.raises(ImproperPosteriorError,
                       match=r"dividing sites \[5\] out of 'weights' leaves an improper Dirichlet") as error:
        divide(broken, [5])
    assert isinstance(error.value, ValueError)
    assert "remove fewer sites" in str(error.value)


def test_divide_every_site_gives_prior(fitted):
    posterior = fitted.posterior_
    divided = divide(posterior, np.arange(N_ROWS))
    for variable in posterior.graph.variables_of_role("global"):
        prior_params = variable.prior.natural_params()
        divided_params = divided[variable.name].natural_params()
        for prior_param, divided_param in zip(prior_params, divided_params):
            np.testing.assert_allclose(divided_param, prior_param, rtol=1e-9, atol=1e-9)


# Command line

def test_cli_non_numeric_column(tmp_path, capsys):
    path = tmp_path / "text.csv"
    path.write_text("rownames,site,x\n1,old faithful,1.0\n2,grand,2.0\n3,castle,3.5\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1", "--columns", "site,x"], capsys)
    assert "column 'site'" in err
    assert "must be numeric, but line 2 has 'old faithful'" in err


def test_cli_unknown_column(tmp_path, capsys):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    _, err = _run_cli_error(["gmm", str(path), "-k", "2", "--columns", "eruptions,duration"], capsys)
    assert "unknown column(s) ['duration']" in err
    assert "available columns: ['rownames', 'eruptions', 'waiting']" in err


def test_cli_header_without_rows(tmp_path, capsys):
    path = tmp_path / "header.csv"
    path.write_text("rownames,eruptions,waiting\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert "has a header but no data rows" in err


def test_cli_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert "is empty; it needs a header row and data rows" in err


def test_cli_missing_file(tmp_path, capsys):
    path = tmp_path / "absent.csv"
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert f"CSV file not found: {path}" in err


def test_cli_directory_as_file(tmp_path, capsys):
    _, err = _run_cli_error(["gmm", str(tmp_path), "-k", "1"], capsys)
    assert "is a directory; pass the path of a CSV file" in err


def test_cli_one_data_row(tmp_path, capsys):
    path = tmp_path / "one.csv"
    _write_faithful_csv(path, rows=1)
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert "at least 2 rows" in err


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_cli_non_finite_value(tmp_path, capsys, text):
    path = tmp_path / "missing.csv"
    path.write_text(f"rownames,a,b\nr1,1,2\nr2,{text},3\nr3,4,5\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert f"column 'a' of {path} must contain only finite values, but line 3 has '{text}'" in err


def test_cli_empty_field(tmp_path, capsys):
    path = tmp_path / "gap.csv"
    path.write_text("a,b\n1,2\n,3\n4,5\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1", "--columns", "a,b"], capsys)
    assert "must be numeric, but line 3 has an empty field;" in err


def test_cli_ragged_row(tmp_path, capsys):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3\n4,5\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert "line 3: expected 2 fields like the header, got 1" in err


def test_cli_repeated_header_name(tmp_path, capsys):
    # Without this check, the second 'a' replaces the first in the column
    # lookup, and both model columns read the second column's values.
    path = tmp_path / "repeated.csv"
    path.write_text("a,a\n1,2\n3,4\n5,7\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    assert "repeats the header name(s) ['a']" in err


def test_cli_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("durée,b\n1,2\n3,4\n5,7\n".encode("latin-1"))
    _, err = _run_cli_error(["gmm", str(path), "-k", "1"], capsys)
    # In Latin-1, "é" is the single byte 0xe9, the fourth byte of the header line.
    assert "is not valid UTF-8 (invalid continuation byte) at line 1, byte 4" in err


def test_cli_rownames_as_column(tmp_path, capsys):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    _, err = _run_cli_error(["gmm", str(path), "-k", "2", "--columns", "rownames,waiting"], capsys)
    assert "column 'rownames'" in err
    assert "contains row labels, not data" in err


@pytest.mark.parametrize("columns", [",", "eruptions,,waiting", "eruptions,"])
def test_cli_empty_column_name(tmp_path, capsys, columns):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    _, err = _run_cli_error(["gmm", str(path), "-k", "2", "--columns", columns], capsys)
    assert "--columns must be comma-separated column names without empty entries" in err


def test_cli_repeated_column(tmp_path, capsys):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    _, err = _run_cli_error(["gmm", str(path), "-k", "2", "--columns", "waiting,waiting"], capsys)
    assert "--columns names 'waiting' more than once in 'waiting,waiting'" in err


def test_cli_too_many_components(tmp_path, capsys):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    _, err = _run_cli_error(["gmm", str(path), "-k", "500"], capsys)
    assert f"n_components must be at most the number of rows ({N_ROWS}), got 500" in err


def test_cli_constant_column_standardize(tmp_path, capsys):
    path = tmp_path / "constant.csv"
    path.write_text("a,b\n1,2\n1,3\n1,5\n")
    _, err = _run_cli_error(["gmm", str(path), "-k", "1", "--standardize"], capsys)
    assert "cannot standardize constant column(s) ['a']" in err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--components", "0", "argument --components/-k: expected a positive integer, got 0"),
    ("--components", "2.5", "argument --components/-k: expected a positive integer, got '2.5'"),
    ("--top", "0", "argument --top: expected a positive integer, got 0"),
    ("--exact", "some", "argument --exact: expected a positive integer or 'all', got 'some'"),
    ("--seed", "-1", "argument --seed: expected a non-negative integer, got -1"),
    ("--n-init", "0", "argument --n-init: expected a positive integer, got 0"),
])
def test_cli_invalid_option_value(tmp_path, capsys, option, value, message):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    argv = ["gmm", str(path), "-k", "2", option, value] if option != "--components" else \
        ["gmm", str(path), option, value]
    _, err = _run_cli_error(argv, capsys)
    assert message in err


def test_cli_json_in_missing_directory(tmp_path, capsys):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    target = tmp_path / "no-such-directory" / "out.json"
    out, err = _run_cli_error(["gmm", str(path), "-k", "2", "--json", str(target)], capsys)
    assert f"directory {target.parent} not found" in err
    # The path is checked before the fit, so nothing is printed.
    assert out == ""
    assert not target.parent.exists()


def test_cli_json_is_directory(tmp_path, capsys):
    path = tmp_path / "faithful.csv"
    _write_faithful_csv(path)
    out, err = _run_cli_error(["gmm", str(path), "-k", "2", "--json", str(tmp_path)], capsys)
    assert "--json must name a file" in err
    assert out == ""


# Inputs left unchanged


def test_fit_leaves_inputs_unchanged(faithful_standardized):
    X = faithful_standardized.copy()
    mean_prior = np.array([0.1, -0.2])
    covariance_prior = np.array([[1.0, 0.3], [0.3, 2.0]])
    init_resp = np.tile([0.7, 0.3], (N_ROWS, 1))
    copies = [array.copy() for array in (X, mean_prior, covariance_prior, init_resp)]

    GaussianMixture(
        n_components=2, mean_prior=mean_prior, covariance_prior=covariance_prior, random_state=0,
    ).fit(X, init_resp=init_resp)

    for array, copy in zip((X, mean_prior, covariance_prior, init_resp), copies):
        np.testing.assert_array_equal(array, copy)


def test_fit_keeps_no_reference_to_x(faithful_standardized):
    X = faithful_standardized.copy()
    model = GaussianMixture(n_components=2, random_state=0).fit(X)
    stored = model.posterior_.data["x"].copy()
    means = model.means_.copy()
    probe = np.array([[0.0, 0.0], [1.0, 1.0]])
    scores = model.score_samples(probe)
    kl = model.influence().kl.copy()

    X[:] = 1e3

    np.testing.assert_array_equal(model.posterior_.data["x"], stored)
    np.testing.assert_array_equal(model.means_, means)
    np.testing.assert_array_equal(model.score_samples(probe), scores)
    np.testing.assert_array_equal(model.influence().kl, kl)


def test_prediction_leaves_inputs_unchanged(fitted):
    X = np.array([[0.5, -1.0], [2.0, 2.0], [-1.5, 0.0]])
    copy = X.copy()
    fitted.predict_proba(X)
    np.testing.assert_array_equal(X, copy)
    fitted.score_samples(X)
    np.testing.assert_array_equal(X, copy)
    fitted.predict(X)
    np.testing.assert_array_equal(X, copy)


def _posterior_arrays(posterior) -> dict[str, np.ndarray]:
    """Copies of every array a Posterior holds: data, responsibilities and natural parameters."""
    arrays = {f"data.{name}": array.copy() for name, array in posterior.data.items()}
    arrays.update({f"locals.{name}": array.copy() for name, array in posterior.locals.items()})
    for name, factor in posterior.globals.items():
        for index, parameter in enumerate(factor.natural_params()):
            arrays[f"globals.{name}.{index}"] = np.array(parameter, copy=True)
    return arrays


def test_influence_leaves_posterior_unchanged(fitted):
    before = _posterior_arrays(fitted.posterior_)
    result = fitted.influence()
    # Touch every cached property so each closed form runs.
    _ = (result.kl, result.loo_log_predictive, result.mean_shift, result.weight_shift,
         result.mean_shift_norm)
    after = _posterior_arrays(fitted.posterior_)
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_divide_leaves_inputs_unchanged(fitted):
    sites = np.array([4, 0, 17])
    sites_copy = sites.copy()
    before = _posterior_arrays(fitted.posterior_)

    divide(fitted.posterior_, sites)
    site_messages(fitted.posterior_, "components", sites)

    np.testing.assert_array_equal(sites, sites_copy)
    after = _posterior_arrays(fitted.posterior_)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_fit_rejects_data_whose_squares_underflow():
    X = load_faithful().data * 1e-200
    with pytest.raises(ValueError, match=r"column 0 varies by only .*Rescale the data"):
        GaussianMixture(2, random_state=0).fit(X)


@pytest.mark.parametrize(("field", "shown"), [("", "an empty field"), ("abc", "'abc'"), ("NA", "'NA'")])
def test_gmm_rejects_partly_numeric_column(tmp_path, capsys, field, shown):
    # Without --columns, a column that is numeric apart from one field must
    # not be dropped silently: the model would then fit fewer columns.
    path = tmp_path / "data.csv"
    path.write_text(f"rownames,eruptions,waiting\n1,3.6,79\n2,{field},54\n3,3.3,74\n4,2.1,60\n")
    assert cli.main(["gmm", str(path), "--components", "1"]) == 2
    error = capsys.readouterr().err
    assert f"column 'eruptions' of {path} is numeric except at line 3 ({shown})" in error


def test_gmm_skips_text_columns(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("rownames,kind,eruptions,waiting\n1,a,3.6,79\n2,b,1.8,54\n3,a,3.3,74\n4,b,2.1,60\n")
    assert cli.main(["gmm", str(path), "--components", "1"]) == 0
    assert "on eruptions, waiting" in capsys.readouterr().out
