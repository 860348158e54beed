"""Tests of the command line's input guards and of the wording of its errors.

Each check names the option the user typed and gives advice in terms of
command-line options, not the library's Python argument names.
"""

from __future__ import annotations

import importlib
import json
import re
from importlib import resources

import numpy as np
import pytest

from fg_influence import cli
from fg_influence.exceptions import ConvergenceWarning
from fg_influence.models import FactorAnalysis, GaussianMixture

DATA = resources.files("fg_influence.datasets").joinpath("data")


def data_file(name: str) -> str:
    return str(DATA / name)


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def run_error(argv: list[str], capsys) -> str:
    """Run the command line, check that it failed with exit code 2, and return its one error line."""
    assert cli.main(argv) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1, errors
    return errors[0]


# --tol


@pytest.mark.parametrize("text", ["1", "2", "1.0", "1e3"])
def test_tol_of_one_or_more_rejected(text, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["gmm", data_file("faithful.csv"), "-k", "2", "--tol", text])
    assert raised.value.code == 2
    assert error_lines(capsys) == [
        f"fg-influence gmm: error: argument --tol: expected a relative tolerance between 0 and 1 "
        f"(such as 1e-9), got {text!r}"
    ]


@pytest.mark.parametrize("name", ["demo", "gmm", "mixture", "mixreg", "hierarchical", "hmm",
                                  "factor-analysis", "lda", "compare"])
def test_every_tol_option_rejects_two(name, capsys):
    # argparse checks --tol before it checks the other arguments, so no file is needed.
    with pytest.raises(SystemExit) as raised:
        cli.main([name, "--tol", "2"])
    assert raised.value.code == 2
    errors = error_lines(capsys)
    assert len(errors) == 1
    assert "argument --tol: expected a relative tolerance between 0 and 1" in errors[0]


def test_tol_just_below_one_accepted(capsys):
    # 0.5 is a poor tolerance but a valid one: the fit must run and report.
    assert cli.main(["gmm", data_file("faithful.csv"), "-k", "1", "--tol", "0.5", "--top", "1"]) == 0
    assert "CAVI iterations" in capsys.readouterr().out


# Negative numbers as option values


@pytest.mark.parametrize(("argv", "expected"), [
    (["gmm", data_file("faithful.csv"), "-k", "2", "--seed", "-1e3"],
     "fg-influence gmm: error: argument --seed: expected a non-negative integer, got '-1e3'"),
    (["gmm", data_file("faithful.csv"), "-k", "-2e1"],
     "fg-influence gmm: error: argument --components/-k: expected a positive integer, got '-2e1'"),
    (["linreg", data_file("stackloss.csv"), "--target", "stack.loss", "--coef-precision-prior", "-1e-6"],
     "fg-influence linreg: error: argument --coef-precision-prior: expected a positive finite number, "
     "got '-1e-6'"),
    (["linreg", data_file("stackloss.csv"), "--target", "stack.loss", "--coef-precision-prior", "-.5E+2"],
     "fg-influence linreg: error: argument --coef-precision-prior: expected a positive finite number, "
     "got '-.5E+2'"),
])
def test_negative_number_reaches_range_check(argv, expected, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert error_lines(capsys) == [expected]


def test_option_after_option_still_an_option(capsys):
    # Only numbers are read as values: "--tol --top" still lacks the --tol value.
    with pytest.raises(SystemExit) as raised:
        cli.main(["gmm", data_file("faithful.csv"), "-k", "2", "--tol", "--top", "3"])
    assert raised.value.code == 2
    assert error_lines(capsys) == ["fg-influence gmm: error: argument --tol: expected one argument"]


# --exact help


def help_text(name: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    # argparse wraps help text at the terminal width, so collapse whitespace.
    return " ".join(capsys.readouterr().out.split())


def test_linreg_exact_help_describes_conjugate_refits(capsys):
    text = help_text("linreg", capsys)
    assert "each refit is the exact conjugate posterior without the row" in text
    assert "CAVI" not in text


@pytest.mark.parametrize("name", ["gmm", "mixture", "mixreg", "hierarchical", "hmm", "factor-analysis"])
def test_cavi_exact_help_gives_refit_tolerance(name, capsys):
    text = help_text(name, capsys)
    assert "each refit runs CAVI to a relative ELBO change of 1e-12" in text
    assert "conjugate posterior" not in text


# --columns


COLUMN_COMMANDS = {
    "gmm": ["gmm", data_file("iris.csv"), "-k", "2"],
    "compare": ["compare", data_file("iris.csv"), "-k", "2"],
    "mixture": ["mixture", data_file("iris.csv"), "--family", "gaussian-diag", "-k", "2"],
    "linreg": ["linreg", data_file("iris.csv"), "--target", "Petal.Width"],
    "mixreg": ["mixreg", data_file("iris.csv"), "--target", "Petal.Width", "-k", "2"],
    "hierarchical": ["hierarchical", data_file("iris.csv"), "--target", "Petal.Width", "--group", "Species"],
    "factor-analysis": ["factor-analysis", data_file("iris.csv")],
}


@pytest.mark.parametrize("name", sorted(COLUMN_COMMANDS))
def test_repeated_column_rejected(name, capsys):
    argv = COLUMN_COMMANDS[name] + ["--columns", "Sepal.Length,Sepal.Width,Sepal.Length"]
    error = run_error(argv, capsys)
    assert error == ("fg-influence: error: --columns names 'Sepal.Length' more than once in "
                     "'Sepal.Length,Sepal.Width,Sepal.Length'; list each column once")


def test_every_columns_subcommand_listed():
    # A new subcommand with --columns must be added to COLUMN_COMMANDS above.
    with_columns = set()
    for name, parser in cli.build_parser()._subparsers._group_actions[0].choices.items():
        if any("--columns" in action.option_strings for action in parser._actions):
            with_columns.add(name)
    assert with_columns == set(COLUMN_COMMANDS)


# Constant columns in Gaussian mixtures


CONSTANT_CSV = "rownames,a,b,c\nr1,1,5,2\nr2,2,5,3\nr3,3,5,1\nr4,4,5,7\nr5,5,5,2\nr6,2,5,4\n"


@pytest.mark.parametrize("extra", [[], ["--missing", "drop"], ["--columns", "b,c"]])
def test_gmm_constant_column_named(extra, tmp_path, capsys):
    path = tmp_path / "constant.csv"
    path.write_text(CONSTANT_CSV)
    error = run_error(["gmm", str(path), "-k", "1"] + extra, capsys)
    assert error.startswith("fg-influence: error: column(s) ['b'] are constant (every value of 'b' is 5)")
    assert "leave them out with --columns" in error
    assert "X column" not in error


def test_compare_constant_column_named(tmp_path, capsys):
    path = tmp_path / "constant.csv"
    path.write_text(CONSTANT_CSV)
    error = run_error(["compare", str(path), "-k", "1"], capsys)
    assert error.startswith("fg-influence: error: column(s) ['b'] are constant")


def test_gmm_fit_error_names_csv_column(monkeypatch, capsys):
    # A check of GaussianMixture.fit that the command line does not repeat,
    # such as one for nearly constant columns, names a column by position.
    class NearlyConstantFit(GaussianMixture):
        def fit(self, X):
            raise ValueError("X column 1 is nearly constant; drop that column")

    monkeypatch.setattr("fg_influence.cli._mixture_report.GaussianMixture", NearlyConstantFit)
    error = run_error(["gmm", data_file("faithful.csv"), "-k", "2"], capsys)
    assert error == "fg-influence: error: column 'waiting' is nearly constant; drop that column"


# factor-analysis --missing


def write_gappy_factors(tmp_path):
    """Write 30 rows of four columns with an NA in column b on line 6, and return the path."""
    rng = np.random.default_rng(8)
    rows = [",".join(f"{v:.4f}" for v in row) for row in rng.normal(size=(30, 4))]
    rows[4] = "0.1,NA,0.2,0.3"
    path = tmp_path / "gappy.csv"
    path.write_text("a,b,c,d\n" + "\n".join(rows) + "\n")
    return path


def test_factor_analysis_missing_raise(tmp_path, capsys):
    path = write_gappy_factors(tmp_path)
    error = run_error(["factor-analysis", str(path), "-k", "1", "--missing", "raise"], capsys)
    assert "1 row(s) of" in error
    assert "the first is on line 6 (missing ['b'])" in error
    assert "--missing drop" in error


def test_factor_analysis_missing_drop_is_default(tmp_path, capsys):
    path = write_gappy_factors(tmp_path)
    outputs = []
    for extra in ([], ["--missing", "drop"]):
        json_path = tmp_path / f"fa{len(extra)}.json"
        assert cli.main(["factor-analysis", str(path), "-k", "1", "--json", str(json_path)] + extra) == 0
        assert "dropped 1 row(s) with missing values" in capsys.readouterr().err
        outputs.append(json.loads(json_path.read_text()))
    assert len(outputs[0]["rows"]) == 29
    assert outputs[0]["rows"] == outputs[1]["rows"]
    assert "(default drop)" in help_text("factor-analysis", capsys)


# Options named in errors about columns


def test_unknown_sequence_column_names_sequence(capsys):
    error = run_error(["hmm", data_file("epil.csv"), "--target", "y", "--sequence", "nope"], capsys)
    assert "unknown --sequence column 'nope'" in error
    assert "--group" not in error


def test_unknown_group_column_names_group(capsys):
    error = run_error(["hierarchical", data_file("radon.csv"), "--target", "log.radon", "--group", "nope"],
                      capsys)
    assert "unknown --group column 'nope'" in error


def test_empty_sequence_label_names_sequence(tmp_path, capsys):
    path = tmp_path / "sequences.csv"
    path.write_text("y,s\n1,a\n2,a\n3,\n4,b\n5,b\n")
    error = run_error(["hmm", str(path), "--target", "y", "--sequence", "s"], capsys)
    assert "--sequence column 's'" in error
    assert "empty labels on line(s) [4]" in error


@pytest.mark.parametrize(("argv", "option"), [
    (["hmm", data_file("epil.csv"), "--target", "trt", "--sequence", "subject"], "--target"),
    (["hmm", data_file("epil.csv"), "--target", "y", "--order", "trt"], "--order"),
    (["hierarchical", data_file("radon.csv"), "--target", "county.name", "--group", "county"], "--target"),
    (["linreg", data_file("iris.csv"), "--target", "Species", "--columns", "Sepal.Length"], "--target"),
    (["mixreg", data_file("iris.csv"), "--target", "Species", "-k", "2", "--columns", "Sepal.Length"],
     "--target"),
])
def test_text_target_advice_names_option(argv, option, capsys):
    error = run_error(argv, capsys)
    assert "must be numeric, but line 2 has" in error
    assert f"pass a numeric column to {option}" in error
    assert "--columns" not in error


def test_text_predictor_advice_names_columns(capsys):
    argv = ["hierarchical", data_file("radon.csv"), "--target", "log.radon", "--group", "county",
            "--columns", "county.name"]
    error = run_error(argv, capsys)
    assert "column 'county.name'" in error
    assert "choose numeric columns with --columns" in error


# CSV line numbers: the header is line 1, and blank lines count.


BLANK_LINE_CSV = "rownames,a,b,g\nr1,1,2,x\n\nr2,oops,3,x\nr3,4,5,y\nr4,2,6,y\n"


@pytest.mark.parametrize("argv", [
    ["gmm", "{path}", "-k", "1"],
    ["gmm", "{path}", "-k", "1", "--columns", "a,b"],
    ["compare", "{path}", "-k", "1", "--columns", "a,b"],
    ["linreg", "{path}", "--target", "b", "--columns", "a"],
    ["mixture", "{path}", "--family", "poisson", "-k", "1", "--columns", "a,b"],
    ["factor-analysis", "{path}", "--columns", "a,b", "-k", "1"],
    ["hierarchical", "{path}", "--target", "b", "--group", "g", "--columns", "a"],
])
def test_bad_field_reported_by_csv_line(argv, tmp_path, capsys):
    path = tmp_path / "blank.csv"
    path.write_text(BLANK_LINE_CSV)
    error = run_error([str(path) if arg == "{path}" else arg for arg in argv], capsys)
    # 'oops' is on line 4: header, r1, a blank line, then r2.
    assert "line 4" in error
    assert "row " not in error


def test_missing_value_reported_by_csv_line(tmp_path, capsys):
    path = tmp_path / "gap.csv"
    path.write_text("a,b\n1,2\n\n3,NA\n4,5\n")
    error = run_error(["mixture", str(path), "--family", "poisson", "-k", "1", "--columns", "a,b"], capsys)
    assert "the first is on line 4 (missing ['b'])" in error


def test_ragged_row_reported_by_csv_line(tmp_path, capsys):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n\n3\n4,5\n")
    error = run_error(["gmm", str(path), "-k", "1"], capsys)
    assert "line 4: expected 2 fields like the header, got 1" in error


# Library advice in command-line words


def options_of(name: str) -> set[str]:
    return cli._subcommand_options(cli.build_parser(), name)


def python_names_left(text: str) -> list[str]:
    """Return the Python argument names left in ``text``, other than the pointer to the Python API."""
    text = text.replace("the Python API's max_iter", "")
    return re.findall(r"(?<![-\w.'])(?:tol|n_init|max_iter|random_state)\b", text)


ADVICE_BY_SUBCOMMAND = [
    ("linear_response", "MIXTURE_ADVICE", "mixture"),
    ("linear_response", "MIXTURE_ADVICE", "gmm"),
    ("linear_response_blocks", "ADVICE", "hierarchical"),
    ("linear_response_factor_analysis", "ADVICE", "factor-analysis"),
    ("linear_response_hmm", "ADVICE", "hmm"),
    ("linear_response_lda", "ADVICE", "lda"),
]


@pytest.mark.parametrize(("module", "name", "subcommand"), ADVICE_BY_SUBCOMMAND)
def test_response_advice_names_options(module, name, subcommand):
    advice = getattr(importlib.import_module(f"fg_influence.influence.{module}"), name)
    for key, text in advice.items():
        rewritten = cli._command_line_words(text, options_of(subcommand))
        assert python_names_left(rewritten) == [], (key, rewritten)
        assert "method='division'" not in rewritten


def test_convergence_warning_names_options():
    X = np.random.default_rng(3).normal(size=(40, 2))
    with pytest.warns(ConvergenceWarning) as caught:
        GaussianMixture(2, max_iter=2, random_state=0).fit(X)
    message = str(caught[0].message)
    assert "n_init" in message  # the library's own wording is unchanged

    rewritten = cli._command_line_words(message, options_of("mixture"))
    assert python_names_left(rewritten) == []
    assert "try a larger --n-init" in rewritten
    # factor-analysis has --tol but no --n-init, so its advice leaves --n-init out.
    without_n_init = cli._command_line_words(message, options_of("factor-analysis"))
    assert "n-init" not in without_n_init
    assert "loosen --tol" in without_n_init


def test_factor_analysis_error_names_options(monkeypatch, capsys):
    advice = importlib.import_module("fg_influence.influence.linear_response_factor_analysis").ADVICE

    class SingularFit(FactorAnalysis):
        def fit(self, X):
            raise ValueError(f"I - J is singular. {advice['singular']}")

    monkeypatch.setattr("fg_influence.cli.factor_analysis.FactorAnalysis", SingularFit)
    error = run_error(["factor-analysis", data_file("iris.csv"), "-k", "1"], capsys)
    assert "Refit with a smaller --tol" in error
    assert "--method division" in error
    assert python_names_left(error) == []


# JSON layout and agreement line


def test_factor_analysis_json_rows_like_mixture(tmp_path, capsys):
    json_path = tmp_path / "fa.json"
    argv = ["factor-analysis", data_file("iris.csv"), "-k", "1", "--exact", "3", "--json", str(json_path)]
    assert cli.main(argv) == 0
    rows = json.loads(json_path.read_text())["rows"]
    assert [record["row"] for record in rows] == list(range(150))
    assert [record["label"] for record in rows[:3]] == ["1", "2", "3"]
    assert all(isinstance(record["improper"], bool) for record in rows)
    # As in the mixture documents, exact_kl is present only for refitted rows.
    assert sum("exact_kl" in record for record in rows) == 3

    out = capsys.readouterr().out
    assert re.search(r"Agreement with exact refits over 3 rows: .*, median relative error [\d.e+-]+%", out)


def test_hierarchical_json_sites_are_positions(tmp_path):
    json_path = tmp_path / "groups.json"
    argv = ["hierarchical", data_file("sleepstudy.csv"), "--target", "Reaction", "--group", "Subject",
            "--json", str(json_path)]
    assert cli.main(argv) == 0
    groups = json.loads(json_path.read_text())["groups"]
    assert [record["site"] for record in groups] == list(range(18))
    labels = [int(record["label"]) for record in groups]
    assert labels == sorted(labels)


def test_hmm_json_sites_are_positions(tmp_path):
    json_path = tmp_path / "sequences.json"
    argv = ["hmm", data_file("epil.csv"), "--target", "y", "--sequence", "subject", "--json", str(json_path)]
    assert cli.main(argv) == 0
    sites = json.loads(json_path.read_text())["sites"]
    assert [record["site"] for record in sites] == list(range(59))
    assert sites[0]["label"] == "1"


# --plot without Matplotlib


@pytest.mark.parametrize("argv", [
    ["gmm", data_file("faithful.csv"), "-k", "2"],
    ["mixreg", data_file("faithful.csv"), "--target", "waiting", "-k", "2"],
    ["factor-analysis", data_file("iris.csv")],
])
def test_plot_without_matplotlib_fails_before_fit(argv, tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes "import matplotlib" raise ImportError.
    monkeypatch.setitem(importlib.import_module("sys").modules, "matplotlib", None)
    assert cli.main(argv + ["--plot", str(tmp_path / "report.png")]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert "--plot cannot be written: plotting needs Matplotlib" in errors[0]
    assert "leave out --plot" in errors[0]
    # The check runs before the fit, so none of the fit's report was printed.
    assert captured.out == ""
