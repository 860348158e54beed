"""Tests of the command line's input guards and of the wording of its errors.

Each check names the option the user typed and gives advice in terms of
command-line options, not the library's Python argument names.
"""

from __future__ import annotations

from importlib import resources

import pytest

from fg_influence import cli

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
