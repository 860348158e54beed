"""Tests of ``--method division|linear-response|exact`` on ``fg-influence gmm`` and ``demo``.

Most runs use a 36-row, two-column CSV file with two overlapping clusters,
so ``--method exact`` costs 36 refits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_t

from fg_influence import cli
from fg_influence.influence import InfluenceResult, refit_without
from fg_influence.models import GaussianMixture

N_ROWS = 36
SEED = 2
METHODS = ("division", "linear-response", "exact")


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """Two overlapping Gaussian clusters of 18 rows each, written with a rownames column."""
    rng = np.random.default_rng(20240611)
    X = np.vstack([rng.normal([0.0, 0.0], 1.0, size=(N_ROWS // 2, 2)),
                   rng.normal([2.5, 1.5], 0.8, size=(N_ROWS // 2, 2))])
    path = tmp_path_factory.mktemp("method") / "small.csv"
    lines = ["rownames,a,b"] + [f"r{i},{x!r},{y!r}" for i, (x, y) in enumerate(X.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path, X


def _gmm_argv(path, json_path, method: str) -> list[str]:
    return ["gmm", str(path), "-k", "2", "--n-init", "1", "--seed", str(SEED), "--top", "5",
            "--method", method, "--json", str(json_path)]


def _run_json(argv, json_path, capsys) -> tuple[dict, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(json_path.read_text()), captured.out


def _table_labels(stdout: str) -> list[str]:
    """Row labels of the printed influence table, in printed order."""
    lines = stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if "most influential rows" in line)
    note = next(i for i, line in enumerate(lines) if line.strip().startswith("(mean shift:"))
    return [line.split()[0] for line in lines[title + 2:note]]


@pytest.fixture(scope="module")
def fitted(small_csv):
    """The model the gmm subcommand fits to the small file, fitted here independently."""
    _, X = small_csv
    return GaussianMixture(2, n_init=1, random_state=SEED).fit(X)


@pytest.fixture
def exact_run(small_csv, tmp_path, capsys):
    path, _ = small_csv
    json_path = tmp_path / "exact.json"
    return _run_json(_gmm_argv(path, json_path, "exact"), json_path, capsys)


# --method exact


def test_exact_kl_matches_compute_exact(exact_run, fitted):
    document, _ = exact_run
    # The same deterministic fit in the same process, so only rounding may
    # differ. A different fit would start the refits from another posterior.
    assert document["model"]["elbo"] == pytest.approx(fitted.lower_bound_, rel=1e-12)

    expected = InfluenceResult(fitted.posterior_).compute_exact("all")
    kl = np.array([row["kl"] for row in document["rows"]])
    assert expected.exact_sites.tolist() == list(range(N_ROWS))
    # Both run the same deterministic warm-started refits, so the tolerance
    # only allows for rounding, far below the 1e-12 refit tolerance.
    np.testing.assert_allclose(kl, expected.exact_kl, rtol=1e-10, atol=1e-14)


def test_exact_rows_record_other_optimum(exact_run, fitted):
    document, _ = exact_run
    expected = InfluenceResult(fitted.posterior_).compute_exact("all")
    recorded = [row["other_optimum"] for row in document["rows"]]
    assert recorded == expected.exact_other_optimum.tolist()


def test_exact_table_ranks_by_exact_kl(exact_run, fitted):
    document, stdout = exact_run
    kl = np.array([row["kl"] for row in document["rows"]])
    expected_order = [f"r{i}" for i in np.argsort(-kl, kind="stable")[:5]]

    assert _table_labels(stdout) == expected_order
    assert "by KL(q || q without the row), from exact refits:" in stdout
    assert "exact KL" not in stdout
    assert "Agreement with exact refits" not in stdout
    assert f"total with exact refits of all {N_ROWS} rows" in stdout
    assert document["accuracy"] is None
    assert all("exact_kl" not in row for row in document["rows"])


def test_exact_shift_and_predictive_from_refits(exact_run, fitted, small_csv):
    """Mean shift and LOO log predictive density of --method exact, recomputed from refits."""
    document, _ = exact_run
    _, X = small_csv
    posterior = fitted.posterior_
    components = posterior.globals["components"]
    for site in (0, 7, N_ROWS - 1):
        refit = refit_without(posterior, [site])
        refit_components = refit.globals["components"]

        # Largest Mahalanobis length of m'_k - m_k under E[Lambda_k] = nu_k W_k.
        moves = refit_components.mean - components.mean
        lengths = [np.sqrt(components.dof[k] * moves[k] @ components.scale[k] @ moves[k]) for k in range(2)]

        # The posterior predictive of a Normal-Wishart mixture is a mixture of
        # Student-t densities with nu_k + 1 - D degrees of freedom and precision
        # (nu_k + 1 - D) beta_k / (1 + beta_k) W_k, weighted by E[pi_k].
        dim = X.shape[1]
        alpha = refit.globals["weights"].concentration
        dof = refit_components.dof + 1 - dim
        log_terms = []
        for k in range(2):
            precision = dof[k] * refit_components.beta[k] / (1 + refit_components.beta[k]) * refit_components.scale[k]
            density = multivariate_t(loc=refit_components.mean[k], shape=np.linalg.inv(precision), df=dof[k])
            log_terms.append(np.log(alpha[k] / alpha.sum()) + density.logpdf(X[site]))

        row = document["rows"][site]
        # Another evaluation of the same refits (a Cholesky factor against
        # a direct product, SciPy's t density), so they agree to rounding.
        assert row["mean_shift"] == pytest.approx(max(lengths), rel=1e-10)
        assert row["loo_log_predictive"] == pytest.approx(logsumexp(log_terms), rel=1e-10)
        assert row["improper"] is False


# The method in the JSON document and the table title


@pytest.mark.parametrize("method,title_end", [
    ("division", "by KL(q || q without the row):"),
    ("linear-response", "by KL(q || q without the row), estimated by linear response:"),
    ("exact", "by KL(q || q without the row), from exact refits:"),
])
def test_json_records_method(small_csv, tmp_path, capsys, method, title_end):
    path, _ = small_csv
    json_path = tmp_path / f"{method}.json"
    document, stdout = _run_json(_gmm_argv(path, json_path, method), json_path, capsys)

    assert document["method"] == method
    assert list(document)[0] == "method"
    assert title_end in stdout


def test_demo_method_exact_skips_agreement(tmp_path, capsys):
    json_path = tmp_path / "demo.json"
    document, stdout = _run_json(["demo", "--method", "exact", "--n-init", "1", "--top", "3",
                                  "--json", str(json_path)], json_path, capsys)

    assert document["method"] == "exact"
    assert document["accuracy"] is None
    assert len(document["rows"]) == 272
    assert "Agreement with exact refits" not in stdout
    assert "from exact refits:" in stdout


# --exact with --method exact


@pytest.mark.parametrize("argv_start", [["demo"], ["gmm", "FILE", "-k", "2"]])
@pytest.mark.parametrize("exact", ["3", "all"])
def test_exact_option_rejected_with_method_exact(small_csv, tmp_path, capsys, argv_start, exact):
    path, _ = small_csv
    json_path = tmp_path / "never.json"
    argv = [str(path) if item == "FILE" else item for item in argv_start]
    code = cli.main(argv + ["--method", "exact", "--exact", exact, "--json", str(json_path)])
    captured = capsys.readouterr()

    assert code == 2
    assert f"--exact {exact} compares the estimates with exact refits, but --method exact" in captured.err
    assert "drop --exact" in captured.err
    assert "Traceback" not in captured.err
    # Rejected before the fit, so nothing is printed or written.
    assert captured.out == ""
    assert not json_path.exists()


# Help text


@pytest.mark.parametrize("command", ["demo", "gmm"])
def test_help_lists_three_methods(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())

    assert exit_info.value.code == 0
    assert "--method {division,linear-response,exact}" in help_text
    assert "one refit per row" in help_text
    assert "cannot be combined with --exact" in help_text


@pytest.mark.parametrize("command", [["mixture", "--family", "gaussian-diag"], ["mixreg", "--target", "b"]])
def test_catalogue_commands_offer_linear_response(small_csv, tmp_path, capsys, command):
    # The response term never lowers a site's KL (it adds c . z + |z|^2 / 2 >= 0).
    path, X = small_csv
    json_path = tmp_path / "out.json"
    argv = [command[0], str(path), *command[1:], "-k", "2", "--seed", str(SEED), "--n-init", "1",
            "--method", "linear-response", "--json", str(json_path)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    document = json.loads(json_path.read_text())
    assert document["method"] == "linear-response"
    # The KL in the JSON is the linear-response estimate, not division's.
    assert cli.main(argv[:argv.index("--method")] + ["--json", str(tmp_path / "division.json")]) == 0
    division = json.loads((tmp_path / "division.json").read_text())
    assert division["method"] == "division"
    estimates = np.array([row["kl"] for row in document["rows"]])
    divided = np.array([row["kl"] for row in division["rows"]])
    assert np.all(estimates >= divided * (1 - 1e-12))
    if command[0] == "mixture":
        # The two diagonal clusters overlap, so some rows' KL grows.
        assert np.any(estimates > divided)


@pytest.mark.parametrize("command", ["mixture", "mixreg"])
def test_catalogue_commands_reject_method_exact(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "{division,linear-response}" in out


def test_cli_warning_prints_one_line(tmp_path):
    import subprocess
    import sys

    script = (
        "import warnings\n"
        "import fg_influence.cli.gmm as gmm_cli\n"
        "from fg_influence import cli\n"
        "def run(args):\n"
        "    warnings.warn('component 3 holds no rows', UserWarning)\n"
        "gmm_cli.run = run\n"
        "raise SystemExit(cli.main(['gmm', 'unused.csv', '-k', '2']))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                               timeout=120)
    assert completed.returncode == 0
    assert completed.stderr == "fg-influence: warning: component 3 holds no rows (UserWarning)\n"


def test_identical_refitted_rows_report_undefined_spearman(tmp_path, capsys):
    path = tmp_path / "repeated.csv"
    # Three copies of a rare row have the largest KL, so --exact 3 refits
    # exactly those, and their estimates and exact values are all equal.
    rows = ["a,b"] + ["x,u"] * 12 + ["y,v"] * 12 + ["z,w"] * 3
    path.write_text("\n".join(rows) + "\n")
    code = cli.main(["mixture", str(path), "--family", "categorical", "-k", "2", "--seed", "0",
                     "--n-init", "1", "--exact", "3", "--top", "2"])
    captured = capsys.readouterr()
    assert code == 0
    assert "Spearman undefined (the estimates or the exact values are all equal)" in captured.out
    assert "ConstantInputWarning" not in captured.err
