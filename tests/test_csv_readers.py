"""Tests that the strict CSV reader and the row-dropping reader check files the same way.

``read_numeric_csv`` serves the subcommands without --missing and gmm's
default; ``read_csv_table`` serves --missing raise and --missing drop.
Both must reject the same broken files with the same message, and every
subcommand must pass that message on.
"""

from __future__ import annotations

import numpy as np
import pytest

from fg_influence import cli
from fg_influence._csv import read_csv_table, read_numeric_csv

#: Broken files: name -> (file contents, part of the expected message).
BROKEN_FILES = {
    "invalid UTF-8": (b"a,b,g\n1,2,x\n\xff,5,x\n7,8,y\n3,1,y\n",
                      "is not valid UTF-8 (invalid start byte) at line 3, byte 1; save it with UTF-8 encoding"),
    # The byte order mark is not counted in the position.
    "invalid UTF-8 after a byte order mark": (b"\xef\xbb\xbfa,b,g\n1,2,x\n4,\xff5,x\n7,8,y\n",
                                              "is not valid UTF-8 (invalid start byte) at line 3, byte 3"),
    "repeated header": (b"a,b,a,g\n1,2,3,x\n4,5,6,x\n7,8,9,y\n3,1,2,y\n",
                        "repeats the header name(s) ['a']; give every column a unique name"),
    "empty file": (b"", "is empty; it needs a header row and data rows"),
    "header only": (b"a,b,g\n", "has a header but no data rows"),
    "ragged row": (b"a,b,g\n1,2,x\n4,5\n7,8,y\n", "line 3: expected 3 fields like the header, got 2"),
}


def write(tmp_path, contents: bytes):
    path = tmp_path / "data.csv"
    path.write_bytes(contents)
    return path


def reader_messages(path) -> dict[str, str]:
    """Return the ValueError message of each reader on ``path``."""
    readers = {
        "read_numeric_csv": lambda: read_numeric_csv(path, ["a", "b"]),
        "read_csv_table raise": lambda: read_csv_table(path, ["a", "b"], missing="raise"),
        "read_csv_table drop": lambda: read_csv_table(path, ["a", "b"], missing="drop"),
    }
    messages = {}
    for name, read in readers.items():
        with pytest.raises(ValueError) as raised:
            read()
        messages[name] = str(raised.value)
    return messages


@pytest.mark.parametrize("problem", sorted(BROKEN_FILES))
def test_readers_reject_broken_file_alike(problem, tmp_path):
    contents, expected = BROKEN_FILES[problem]
    path = write(tmp_path, contents)
    messages = reader_messages(path)
    for name, message in messages.items():
        assert expected in message, name
        assert str(path) in message, name
    assert len(set(messages.values())) == 1, messages


def test_readers_reject_directory_alike(tmp_path):
    messages = reader_messages(tmp_path)
    assert messages["read_csv_table drop"] == f"{tmp_path} is a directory; pass the path of a CSV file"
    assert len(set(messages.values())) == 1, messages


def test_readers_reject_missing_file_alike(tmp_path):
    messages = reader_messages(tmp_path / "absent.csv")
    assert messages["read_csv_table drop"] == f"CSV file not found: {tmp_path / 'absent.csv'}"
    assert len(set(messages.values())) == 1, messages


#: Every subcommand that reads a CSV file, with each --missing choice it has.
#: "{path}" stands for the file; columns a and b are numeric, g labels groups.
SUBCOMMAND_ARGV = {
    "gmm": ["gmm", "{path}", "-k", "1"],
    "gmm --missing drop": ["gmm", "{path}", "-k", "1", "--missing", "drop"],
    "compare": ["compare", "{path}", "-k", "1", "--columns", "a,b"],
    "linreg": ["linreg", "{path}", "--target", "b", "--columns", "a"],
    "linreg --missing drop": ["linreg", "{path}", "--target", "b", "--missing", "drop"],
    "mixture": ["mixture", "{path}", "--family", "gaussian-diag", "-k", "1", "--columns", "a,b"],
    "mixture --missing drop": ["mixture", "{path}", "--family", "gaussian-diag", "-k", "1", "--missing", "drop"],
    "mixture categorical": ["mixture", "{path}", "--family", "categorical", "-k", "1"],
    "mixreg --missing drop": ["mixreg", "{path}", "--target", "b", "-k", "1", "--missing", "drop"],
    "factor-analysis": ["factor-analysis", "{path}", "-k", "1"],
    "factor-analysis --missing raise": ["factor-analysis", "{path}", "-k", "1", "--missing", "raise"],
    "hierarchical": ["hierarchical", "{path}", "--target", "b", "--group", "g"],
    "hmm": ["hmm", "{path}", "--target", "b", "--sequence", "g", "--emission", "gaussian"],
}


def run_error(argv: list[str], capsys) -> str:
    """Run the command line, check that it failed with exit code 2, and return its one error line."""
    assert cli.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("problem", ["invalid UTF-8", "repeated header"])
@pytest.mark.parametrize("command", sorted(SUBCOMMAND_ARGV))
def test_subcommand_reports_broken_file(command, problem, tmp_path, capsys):
    contents, expected = BROKEN_FILES[problem]
    path = write(tmp_path, contents)
    argv = [str(path) if arg == "{path}" else arg for arg in SUBCOMMAND_ARGV[command]]
    error = run_error(argv, capsys)
    assert error == f"fg-influence: error: CSV file {path} {expected}"


# Default column choice with --missing drop


def test_empty_column_left_out_of_default_columns(tmp_path, capsys):
    # The comment column has no values, so every row has a missing field in
    # it; it must be left out rather than drop every row.
    path = tmp_path / "data.csv"
    rng = np.random.default_rng(3)
    values = rng.normal(size=(12, 2))
    path.write_text("a,b,comment\n" + "".join(f"{x:.4f},{y:.4f},\n" for x, y in values))
    for argv in (["gmm", str(path), "-k", "1", "--missing", "drop", "--top", "1"],
                 ["linreg", str(path), "--target", "b", "--missing", "drop", "--top", "1"],
                 ["mixture", str(path), "--family", "gaussian-diag", "-k", "1", "--missing", "drop",
                  "--top", "1"]):
        assert cli.main(argv) == 0, capsys.readouterr().err
        captured = capsys.readouterr()
        assert "comment" not in captured.out, argv
        assert "dropped" not in captured.err, argv


@pytest.mark.parametrize("argv", [
    ["gmm", "{path}", "-k", "1", "--missing", "drop"],
    ["linreg", "{path}", "--target", "a"],
    ["mixreg", "{path}", "--target", "a", "-k", "1"],
    ["mixture", "{path}", "--family", "gaussian-diag", "-k", "1"],
    ["factor-analysis", "{path}", "-k", "1"],
], ids=lambda argv: argv[0])
def test_default_columns_reject_partly_text(argv, tmp_path, capsys):
    # Column b is numeric but for one value. Leaving it out of the default
    # columns would fit a model without it, so every subcommand rejects it.
    path = tmp_path / "partly.csv"
    path.write_text("a,b,c\n1,2,4\n3,oops,1\n5,6,2\n7,8,9\n2,3,5\n4,5,3\n")
    error = run_error([str(path) if arg == "{path}" else arg for arg in argv], capsys)
    assert f"column 'b' of {path} is numeric except at line 3 ('oops')" in error


def test_missing_value_elsewhere_hides_no_text(tmp_path, capsys):
    # Line 4 has the text 'x' in column a and a missing value in column b.
    # Column a is judged on its own values, so the missing b must not hide
    # the 'x', and gmm must reject column a as partly text.
    path = tmp_path / "mixed.csv"
    path.write_text("a,b\n1,2\n3,5\nx,NA\n5,6\n7,1\n")
    error = run_error(["gmm", str(path), "-k", "1", "--missing", "drop"], capsys)
    assert "column 'a'" in error
    assert "line 4 ('x')" in error


# Dropped rows


def test_dropped_rows_warning_same_everywhere(tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    rng = np.random.default_rng(5)
    rows = [",".join(f"{v:.4f}" for v in row) for row in rng.normal(size=(20, 3))]
    rows[3] = "1.0,NA,2.0"
    rows[7] = "0.5,,1.5"
    path.write_text("a,b,c\n" + "\n".join(rows) + "\n")
    warnings = {}
    for argv in (["factor-analysis", str(path), "-k", "1", "--top", "1"],
                 ["mixture", str(path), "--family", "gaussian-diag", "-k", "1", "--missing", "drop",
                  "--top", "1"],
                 ["gmm", str(path), "-k", "1", "--missing", "drop", "--top", "1"]):
        assert cli.main(argv) == 0
        warnings[argv[0]] = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    # Only column b has gaps, so only b is named.
    expected = [f"fg-influence: warning: dropped 2 row(s) with missing values in ['b'] from "
                f"{path}, leaving 18 of 20 rows"]
    for command, lines in warnings.items():
        assert lines == expected, command


@pytest.mark.parametrize("argv", [
    ["linreg", "{path}", "--target", "y"],
    ["factor-analysis", "{path}"],
    ["mixture", "{path}", "--family", "poisson", "-k", "2"],
    ["gmm", "{path}", "-k", "2"],
])
def test_semicolon_file_named_as_such(argv, tmp_path, capsys):
    path = tmp_path / "semi.csv"
    path.write_text("a;b;y\n1;2;3\n4;5;6\n7;8;9\n")
    assert cli.main([part.format(path=path) for part in argv]) == 2
    error = capsys.readouterr().err
    assert "seems to be separated by semicolons or tabs" in error
    assert "besides" not in error
