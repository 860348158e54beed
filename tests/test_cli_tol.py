"""Tests of ``--tol``, the relative ELBO change at which a subcommand's CAVI fit stops.

Each subcommand runs on a small CSV file (40 rows) written by a fixture, so
a run takes well under a second once Numba has compiled its kernels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fg_influence import cli
from fg_influence.cli._options import default_tol
from fg_influence.models import (
    FactorAnalysis,
    GaussianMixture,
    HierarchicalNormal,
    MixtureOfRegressions,
    PoissonMixture,
)

LOOSE_TOL = 1e-3
TIGHT_TOL = 1e-12


def _write_csv(path, header: list[str], rows: list[list]) -> None:
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small data sets for each model, as CSV files, and the arrays they hold."""
    folder = tmp_path_factory.mktemp("tol")
    rng = np.random.default_rng(20240611)

    clusters = np.vstack([rng.normal([0.0, 0.0], 1.0, size=(20, 2)),
                          rng.normal([2.5, 1.5], 0.8, size=(20, 2))])
    _write_csv(folder / "clusters.csv", ["rownames", "a", "b"],
               [[f"r{i}"] + row for i, row in enumerate(clusters.tolist())])

    x = rng.uniform(0.0, 4.0, size=40)
    upper = rng.random(40) < 0.5
    y = np.where(upper, 1.0 + 2.0 * x, 6.0 - x) + rng.normal(0.0, 0.4, size=40)
    _write_csv(folder / "lines.csv", ["x", "y"], np.column_stack([x, y]).tolist())

    groups = np.repeat(np.arange(8), 5)
    response = rng.normal(0.0, 1.0, size=8)[groups] + rng.normal(0.0, 1.0, size=40)
    _write_csv(folder / "groups.csv", ["y", "g"], [[value, f"group{g}"] for value, g in zip(response, groups)])

    factor = rng.normal(size=(40, 1))
    columns = factor @ rng.normal(size=(1, 4)) + 0.5 * rng.normal(size=(40, 4))
    _write_csv(folder / "factors.csv", ["a", "b", "c", "d"], columns.tolist())
    return {"folder": folder, "clusters": clusters, "x": x, "y": y}


#: Subcommand -> (arguments after the subcommand name, model class whose tol default applies).
SUBCOMMANDS = {
    "gmm": (lambda f: [str(f / "clusters.csv"), "-k", "2", "--n-init", "1"], GaussianMixture),
    "mixture": (lambda f: [str(f / "clusters.csv"), "--family", "gaussian-diag", "-k", "2", "--n-init", "1"],
                PoissonMixture),
    "mixreg": (lambda f: [str(f / "lines.csv"), "--target", "y", "-k", "2", "--n-init", "1"],
               MixtureOfRegressions),
    "hierarchical": (lambda f: [str(f / "groups.csv"), "--target", "y", "--group", "g"], HierarchicalNormal),
    "factor-analysis": (lambda f: [str(f / "factors.csv"), "--factors", "1"], FactorAnalysis),
}


def _run(argv: list[str], json_path, capsys) -> dict:
    code = cli.main(argv + ["--json", str(json_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(json_path.read_text())


def _argv(name: str, files, *extra: str) -> list[str]:
    arguments, _ = SUBCOMMANDS[name]
    return [name] + arguments(files["folder"]) + ["--top", "1"] + list(extra)


# The option reaches the model and the JSON document


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_tighter_tol_runs_more_iterations(name, files, tmp_path, capsys):
    loose = _run(_argv(name, files, "--tol", str(LOOSE_TOL)), tmp_path / "loose.json", capsys)
    tight = _run(_argv(name, files, "--tol", str(TIGHT_TOL)), tmp_path / "tight.json", capsys)
    assert loose["model"]["tol"] == LOOSE_TOL
    assert tight["model"]["tol"] == TIGHT_TOL
    assert loose["model"]["n_iter"] < tight["model"]["n_iter"]


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_json_records_default_tol(name, files, tmp_path, capsys):
    document = _run(_argv(name, files), tmp_path / "out.json", capsys)
    _, model_class = SUBCOMMANDS[name]
    assert document["model"]["tol"] == default_tol(model_class)
    assert document["model"]["converged"] is True


def test_mixreg_fit_matches_python_fit(files, tmp_path, capsys):
    tol = 1e-4
    document = _run(_argv("mixreg", files, "--tol", str(tol)), tmp_path / "out.json", capsys)
    model = MixtureOfRegressions(2, n_init=1, random_state=0, tol=tol).fit(files["x"][:, None], files["y"])
    assert document["model"]["n_iter"] == model.n_iter_
    assert document["model"]["elbo"] == model.lower_bound_


def test_demo_fit_uses_tol(tmp_path, capsys):
    from fg_influence.datasets import load_faithful

    tol = 1e-11
    document = _run(["demo", "--exact", "2", "--tol", str(tol)], tmp_path / "demo.json", capsys)
    data = load_faithful().data
    X = (data - data.mean(axis=0)) / data.std(axis=0)
    model = GaussianMixture(2, n_init=3, random_state=0, tol=tol).fit(X)
    assert document["model"]["tol"] == tol
    assert document["model"]["n_iter"] == model.n_iter_


def test_compare_passes_tol_to_variational_fit(files, tmp_path, capsys, monkeypatch):
    import fg_influence.reference.compare as compare_module

    tols = []

    class RecordingMixture(GaussianMixture):
        def fit(self, X, y=None):
            tols.append(self.tol)
            return super().fit(X, y)

    monkeypatch.setattr(compare_module, "GaussianMixture", RecordingMixture)
    json_path = tmp_path / "compare.json"
    argv = ["compare", str(files["folder"] / "clusters.csv"), "-k", "2", "--n-init", "1", "--exact", "3",
            "--tol", "1e-7", "--json", str(json_path)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert tols == [1e-7]
    assert json.loads(json_path.read_text())["tol"] == 1e-7


# Rejected values


BAD_VALUES = ["0", "-1e-9", "nan", "inf", "-inf", "abc", "", "1e-400"]


@pytest.mark.parametrize("text", BAD_VALUES)
@pytest.mark.parametrize("joined", [True, False], ids=["--tol=VALUE", "--tol VALUE"])
def test_bad_tol_is_one_error_line(text, joined, files, capsys):
    # With a separate value, negative numbers such as -1e-9 and -inf must
    # reach the range check instead of being read as options.
    option = [f"--tol={text}"] if joined else ["--tol", text]
    with pytest.raises(SystemExit) as raised:
        cli.main(_argv("mixreg", files, *option))
    assert raised.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors == [
        f"fg-influence mixreg: error: argument --tol: expected a relative tolerance between 0 and 1 "
        f"(such as 1e-9), got {text!r}"
    ]


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS) + ["demo", "compare"])
def test_every_cavi_subcommand_rejects_zero_tol(name, files, capsys):
    if name == "demo":
        argv = ["demo"]
    elif name == "compare":
        argv = ["compare", str(files["folder"] / "clusters.csv"), "-k", "2"]
    else:
        argv = _argv(name, files)
    with pytest.raises(SystemExit) as raised:
        cli.main(argv + ["--tol", "0"])
    assert raised.value.code == 2
    assert (f"fg-influence {name}: error: argument --tol: expected a relative tolerance between 0 and 1 "
            f"(such as 1e-9), got '0'") in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS) + ["demo", "compare"])
def test_help_gives_model_default(name, capsys):
    model_class = SUBCOMMANDS[name][1] if name in SUBCOMMANDS else GaussianMixture
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    # argparse wraps help text at the terminal width, so compare it with whitespace collapsed.
    text = " ".join(capsys.readouterr().out.split())
    assert "--tol TOL relative ELBO change at which the CAVI fit stops" in text
    assert f"(default {default_tol(model_class):g})" in text
