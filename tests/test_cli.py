"""Tests of the ``fg-influence`` command line.

Most tests call ``fg_influence.cli.main`` in the test process. The demo's 272
exact refits are the slowest step, so one module fixture runs the demo once
and several tests read its output and JSON file. A single subprocess run, with
two refits, checks that the installed console script works.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from fg_influence import cli
from fg_influence.datasets import load_faithful

N_ROWS = 272
ROW_KEYS = {"row", "label", "kl", "loo_log_predictive", "mean_shift", "improper"}
PRIOR_KEYS = {
    "weight_concentration_prior",
    "mean_precision_prior",
    "mean_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
}
POSTERIOR_KEYS = {"weight_concentration", "mean_precision", "means", "degrees_of_freedom", "scale"}
MODEL_KEYS = {
    "type", "n_components", "columns", "standardize", "center", "scale", "units",
    "priors", "posterior", "elbo", "tol", "n_iter", "converged",
}
ACCURACY_KEYS = {
    "n_sites", "spearman", "median_relative_error", "max_relative_error", "top_k", "top_k_overlap",
}
GMM_OPTIONS = [
    "FILE.csv", "--components", "-k", "--columns", "--missing", "--standardize", "--top", "--exact",
    "--seed", "--n-init", "--json", "--plot", "--method", "--help",
]


# Schema of the --json document


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shape_of(value) -> tuple[int, ...] | None:
    """Shape of a nested list of real numbers, or None if it is ragged or not numeric."""
    if _is_real(value):
        return ()
    if not isinstance(value, list) or not value:
        return None
    shapes = {_shape_of(item) for item in value}
    if len(shapes) != 1 or None in shapes:
        return None
    return (len(value),) + shapes.pop()


def schema_problems(document, *, n_rows: int, n_components: int, n_columns: int) -> list[str]:
    """List every way ``document`` departs from the JSON layout that ``cli`` writes."""
    k, d = n_components, n_columns
    problems = []
    if not isinstance(document, dict) or set(document) != {"method", "model", "accuracy", "rows"}:
        return [f"top level must be a dict with method, model, accuracy and rows, got {document!r:.200}"]
    if document["method"] not in ("division", "linear-response", "exact"):
        problems.append(f"method is {document['method']!r}")

    model = document["model"]
    if not isinstance(model, dict) or set(model) != MODEL_KEYS:
        return problems + [f"model keys differ: {sorted(model) if isinstance(model, dict) else model}"]
    if model["type"] != "GaussianMixture":
        problems.append(f"model.type is {model['type']!r}")
    if model["n_components"] != k or isinstance(model["n_components"], bool):
        problems.append(f"model.n_components is {model['n_components']!r}, expected {k}")
    if not (isinstance(model["columns"], list) and len(model["columns"]) == d
            and all(isinstance(c, str) for c in model["columns"])):
        problems.append(f"model.columns is {model['columns']!r}")
    for key in ("standardize", "converged"):
        if not isinstance(model[key], bool):
            problems.append(f"model.{key} must be a bool, got {model[key]!r}")
    for key in ("center", "scale"):
        if _shape_of(model[key]) != (d,):
            problems.append(f"model.{key} must be {d} numbers, got {model[key]!r}")
    if not isinstance(model["units"], str):
        problems.append("model.units must be a string")
    if not _is_real(model["elbo"]):
        problems.append(f"model.elbo must be a number, got {model['elbo']!r}")
    if not (_is_real(model["tol"]) and model["tol"] > 0):
        problems.append(f"model.tol must be a positive number, got {model['tol']!r}")
    if not (isinstance(model["n_iter"], int) and not isinstance(model["n_iter"], bool)
            and model["n_iter"] >= 1):
        problems.append(f"model.n_iter must be a positive int, got {model['n_iter']!r}")

    priors = model["priors"]
    if not isinstance(priors, dict) or set(priors) != PRIOR_KEYS:
        problems.append(f"model.priors keys differ: {priors!r:.200}")
    else:
        for key in ("weight_concentration_prior", "mean_precision_prior", "degrees_of_freedom_prior"):
            if not (_is_real(priors[key]) and priors[key] > 0):
                problems.append(f"model.priors.{key} must be a positive number, got {priors[key]!r}")
        if _shape_of(priors["mean_prior"]) != (d,):
            problems.append(f"model.priors.mean_prior must have shape ({d},)")
        if _shape_of(priors["covariance_prior"]) != (d, d):
            problems.append(f"model.priors.covariance_prior must have shape ({d}, {d})")

    posterior = model["posterior"]
    expected_shapes = {
        "weight_concentration": (k,),
        "mean_precision": (k,),
        "means": (k, d),
        "degrees_of_freedom": (k,),
        "scale": (k, d, d),
    }
    if not isinstance(posterior, dict) or set(posterior) != POSTERIOR_KEYS:
        problems.append(f"model.posterior keys differ: {posterior!r:.200}")
    else:
        for key, shape in expected_shapes.items():
            if _shape_of(posterior[key]) != shape:
                problems.append(f"model.posterior.{key} must have shape {shape}")

    accuracy = document["accuracy"]
    if accuracy is not None:
        if not isinstance(accuracy, dict) or set(accuracy) != ACCURACY_KEYS:
            problems.append(f"accuracy keys differ: {accuracy!r:.200}")
        else:
            for key in ("n_sites", "top_k"):
                if not isinstance(accuracy[key], int) or isinstance(accuracy[key], bool):
                    problems.append(f"accuracy.{key} must be an int, got {accuracy[key]!r}")
            for key in ("spearman", "median_relative_error", "max_relative_error", "top_k_overlap"):
                if accuracy[key] is not None and not _is_real(accuracy[key]):
                    problems.append(f"accuracy.{key} must be a number or null, got {accuracy[key]!r}")

    rows = document["rows"]
    if not isinstance(rows, list) or len(rows) != n_rows:
        return problems + [f"rows must be a list of {n_rows} records"]
    for position, record in enumerate(rows):
        where = f"rows[{position}]"
        if not isinstance(record, dict):
            problems.append(f"{where} must be a dict")
            continue
        keys = set(record)
        if not (keys == ROW_KEYS or keys == ROW_KEYS | {"exact_kl"}):
            problems.append(f"{where} keys differ: {sorted(keys)}")
            continue
        if record["row"] != position or not isinstance(record["row"], int) or isinstance(record["row"], bool):
            problems.append(f"{where}.row must be the int {position}, got {record['row']!r}")
        if not isinstance(record["label"], str):
            problems.append(f"{where}.label must be a string")
        if not isinstance(record["improper"], bool):
            problems.append(f"{where}.improper must be a bool")
        if record["improper"] is False:
            if not (isinstance(record["kl"], float) and record["kl"] >= 0):
                problems.append(f"{where}.kl must be a float >= 0, got {record['kl']!r}")
            if not isinstance(record["loo_log_predictive"], float):
                problems.append(f"{where}.loo_log_predictive must be a float, got "
                                f"{record['loo_log_predictive']!r}")
            if not (isinstance(record["mean_shift"], float) and record["mean_shift"] >= 0):
                problems.append(f"{where}.mean_shift must be a float >= 0, got {record['mean_shift']!r}")
        if "exact_kl" in record and not (isinstance(record["exact_kl"], float) and record["exact_kl"] >= 0):
            problems.append(f"{where}.exact_kl must be a float >= 0, got {record['exact_kl']!r}")
    return problems


# Shared runs


def _table_rows(stdout: str) -> list[list[str]]:
    """Cells of the influence table: the lines between its title and the mean-shift note."""
    lines = stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if "most influential rows" in line)
    note = next(i for i, line in enumerate(lines) if line.strip().startswith("(mean shift:"))
    return [line.split() for line in lines[title + 2:note]]


def _component_weights(stdout: str) -> list[float]:
    return [float(w) for w in re.findall(r"component \d+: weight ([0-9.]+);", stdout)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Exit code, stdout and JSON document of ``fg-influence demo --json PATH``.

    Module scoped so the 272 refits run once; capsys is function scoped, so
    stdout and stderr are captured with contextlib instead.
    """
    path = tmp_path_factory.mktemp("demo") / "demo.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["demo", "--json", str(path)])
    document = json.loads(path.read_text()) if path.exists() else None
    return code, stdout.getvalue(), document


@pytest.fixture(scope="module")
def faithful_csv(tmp_path_factory):
    """Old Faithful written as a CSV file with header rownames,eruptions,waiting."""
    dataset = load_faithful()
    path = tmp_path_factory.mktemp("csv") / "faithful.csv"
    lines = ["rownames,eruptions,waiting"]
    lines += [f"{label},{float(row[0])!r},{float(row[1])!r}" for label, row in zip(dataset.row_labels, dataset.data)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _gmm_argv(csv_path, json_path) -> list[str]:
    return [
        "gmm", str(csv_path), "--components", "2", "--columns", "eruptions,waiting",
        "--standardize", "--top", "5", "--exact", "3", "--seed", "1", "--json", str(json_path),
    ]


# The schema check itself


def test_schema_check_rejects_broken_documents(demo_run):
    _, _, document = demo_run
    assert document is not None

    missing_key = json.loads(json.dumps(document))
    del missing_key["model"]["posterior"]["means"]
    wrong_type = json.loads(json.dumps(document))
    wrong_type["rows"][7]["row"] = "7"
    negative_kl = json.loads(json.dumps(document))
    negative_kl["rows"][3]["kl"] = -0.5
    short_rows = json.loads(json.dumps(document))
    short_rows["rows"].pop()

    for broken in (missing_key, wrong_type, negative_kl, short_rows):
        assert schema_problems(broken, n_rows=N_ROWS, n_components=2, n_columns=2) != []


# demo


def test_demo_exits_zero(demo_run):
    code, _, _ = demo_run
    assert code == 0


def test_demo_prints_fitted_components(demo_run):
    _, stdout, document = demo_run
    assert "Fitted components" in stdout

    weights = _component_weights(stdout)
    assert len(weights) == 2
    assert sum(weights) == pytest.approx(1.0, abs=2e-3)

    concentration = np.array(document["model"]["posterior"]["weight_concentration"])
    expected = np.sort(concentration / concentration.sum())[::-1]
    # Components are printed by decreasing weight with three decimals.
    assert weights == pytest.approx(expected.tolist(), abs=6e-4)


def test_demo_prints_component_means_in_minutes(demo_run):
    _, stdout, _ = demo_run
    data = load_faithful().data
    means = re.findall(r"eruptions ([0-9.]+) \(sd [0-9.]+\), waiting ([0-9.]+) \(sd", stdout)
    assert len(means) == 2
    for eruptions, waiting in means:
        assert data[:, 0].min() < float(eruptions) < data[:, 0].max()
        assert data[:, 1].min() < float(waiting) < data[:, 1].max()


def test_demo_prints_ten_largest_kl_rows(demo_run):
    _, stdout, document = demo_run
    table = _table_rows(stdout)
    assert len(table) == 10

    labels = [cells[0] for cells in table]
    by_label = {record["label"]: record for record in document["rows"]}
    largest = sorted(document["rows"], key=lambda record: -record["kl"])[:10]
    assert labels == [record["label"] for record in largest]

    # Columns: row, eruptions, waiting, KL, mean shift, LOO log pred, exact KL.
    data = load_faithful().data
    for cells in table:
        record = by_label[cells[0]]
        assert len(cells) == 7
        assert float(cells[1]) == pytest.approx(data[record["row"], 0], rel=1e-3)
        assert float(cells[2]) == pytest.approx(data[record["row"], 1], rel=1e-3)
        assert float(cells[3]) == pytest.approx(record["kl"], abs=1e-5)
        assert float(cells[6]) == pytest.approx(record["exact_kl"], abs=1e-5)


def test_demo_agreement_spearman_at_least_099(demo_run):
    _, stdout, _ = demo_run
    match = re.search(r"Agreement with exact refits over (\d+) rows: Spearman (-?[0-9.]+)", stdout)
    assert match is not None, stdout
    assert int(match.group(1)) == N_ROWS
    assert float(match.group(2)) >= 0.99


def test_demo_json_matches_schema(demo_run):
    _, _, document = demo_run
    assert document is not None
    assert schema_problems(document, n_rows=N_ROWS, n_components=2, n_columns=2) == []


def test_demo_json_rows_complete(demo_run):
    _, _, document = demo_run
    rows = document["rows"]
    assert [record["row"] for record in rows] == list(range(N_ROWS))
    assert [record["label"] for record in rows] == list(load_faithful().row_labels)
    for record in rows:
        assert record["improper"] is False
        assert isinstance(record["kl"], float) and record["kl"] >= 0
        assert isinstance(record["loo_log_predictive"], float)
        assert isinstance(record["exact_kl"], float) and record["exact_kl"] >= 0


def test_demo_json_accuracy_matches_rows(demo_run):
    _, _, document = demo_run
    accuracy = document["accuracy"]
    assert accuracy["n_sites"] == N_ROWS
    assert accuracy["top_k"] == 10
    assert accuracy["spearman"] >= 0.99

    estimate = np.array([record["kl"] for record in document["rows"]])
    exact = np.array([record["exact_kl"] for record in document["rows"]])
    relative = np.abs(estimate - exact) / exact
    assert accuracy["median_relative_error"] == pytest.approx(np.median(relative), rel=1e-9)
    assert accuracy["max_relative_error"] == pytest.approx(np.max(relative), rel=1e-9)


def test_demo_json_standardization(demo_run):
    _, _, document = demo_run
    model = document["model"]
    data = load_faithful().data
    assert model["columns"] == ["eruptions", "waiting"]
    assert model["standardize"] is True
    np.testing.assert_allclose(model["center"], data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model["scale"], data.std(axis=0), rtol=1e-12)


def test_demo_json_posterior_counts(demo_run):
    # Each row's responsibilities sum to 1, so the conjugate updates add N in
    # total to the Dirichlet concentrations, to beta and to the Wishart dof.
    _, _, document = demo_run
    priors = document["model"]["priors"]
    posterior = document["model"]["posterior"]
    k = document["model"]["n_components"]

    added_concentration = np.sum(posterior["weight_concentration"]) - k * priors["weight_concentration_prior"]
    added_beta = np.sum(posterior["mean_precision"]) - k * priors["mean_precision_prior"]
    added_dof = np.sum(posterior["degrees_of_freedom"]) - k * priors["degrees_of_freedom_prior"]
    assert added_concentration == pytest.approx(N_ROWS, rel=1e-9)
    assert added_beta == pytest.approx(N_ROWS, rel=1e-9)
    assert added_dof == pytest.approx(N_ROWS, rel=1e-9)


def test_demo_json_priors_and_scale_valid(demo_run):
    _, _, document = demo_run
    priors = document["model"]["priors"]
    posterior = document["model"]["posterior"]

    covariance = np.array(priors["covariance_prior"])
    np.testing.assert_allclose(covariance, covariance.T)
    assert np.all(np.linalg.eigvalsh(covariance) > 0)
    assert priors["degrees_of_freedom_prior"] > 1  # D - 1 with D = 2

    for scale in np.array(posterior["scale"]):
        np.testing.assert_allclose(scale, scale.T, rtol=1e-10, atol=1e-14)
        assert np.all(np.linalg.eigvalsh(scale) > 0)


def test_demo_console_script_runs(demo_run):
    executable = shutil.which("fg-influence")
    assert executable is not None, "the fg-influence console script is not on PATH"

    # Two refits instead of 272 keep this run short; the fit itself is the
    # demo's, so its components must match the in-process run.
    completed = subprocess.run([executable, "demo", "--exact", "2"], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "Agreement with exact refits over 2 rows: Spearman" in completed.stdout

    _, in_process_stdout, _ = demo_run
    component_lines = re.compile(r"^  component \d+: .*$", re.MULTILINE)
    assert len(component_lines.findall(completed.stdout)) == 2
    assert component_lines.findall(completed.stdout) == component_lines.findall(in_process_stdout)


# gmm on a CSV file


def test_gmm_csv_exact_three(faithful_csv, tmp_path, capsys):
    json_path = tmp_path / "out.json"
    code = cli.main(_gmm_argv(faithful_csv, json_path))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(json_path.read_text())
    assert schema_problems(document, n_rows=N_ROWS, n_components=2, n_columns=2) == []

    with_exact = [record for record in document["rows"] if "exact_kl" in record]
    assert len(with_exact) == 3
    largest = sorted(document["rows"], key=lambda record: -record["kl"])[:3]
    assert {record["row"] for record in with_exact} == {record["row"] for record in largest}
    assert document["accuracy"]["n_sites"] == 3
    # The refitted rows are the estimate's top 3, so a top-3 overlap would be
    # 100% by construction; the report compares the top 2 of the 3 instead.
    assert document["accuracy"]["top_k"] == 2


def test_gmm_csv_model_settings(faithful_csv, tmp_path, capsys):
    json_path = tmp_path / "out.json"
    assert cli.main(_gmm_argv(faithful_csv, json_path)) == 0
    capsys.readouterr()
    model = json.loads(json_path.read_text())["model"]
    data = load_faithful().data

    assert model["columns"] == ["eruptions", "waiting"]
    assert model["n_components"] == 2
    assert model["standardize"] is True
    np.testing.assert_allclose(model["center"], data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model["scale"], data.std(axis=0), rtol=1e-12)
    # mean_prior defaults to the mean of the standardized data, which is 0.
    np.testing.assert_allclose(model["priors"]["mean_prior"], [0.0, 0.0], atol=1e-12)


def test_gmm_csv_prints_top_five(faithful_csv, tmp_path, capsys):
    assert cli.main(_gmm_argv(faithful_csv, tmp_path / "out.json")) == 0
    stdout = capsys.readouterr().out
    document = json.loads((tmp_path / "out.json").read_text())

    table = _table_rows(stdout)
    assert len(table) == 5
    assert "Agreement with exact refits over 3 rows" in stdout
    assert f"Wrote {tmp_path / 'out.json'}" in stdout

    dataset = load_faithful()
    by_label = {label: i for i, label in enumerate(dataset.row_labels)}
    kl_values = [document["rows"][by_label[cells[0]]]["kl"] for cells in table]
    assert kl_values == sorted(kl_values, reverse=True)
    for cells in table:
        # Printed values stay in the file's units although the fit is standardized.
        row = dataset.data[by_label[cells[0]]]
        assert float(cells[1]) == pytest.approx(row[0], rel=1e-3)
        assert float(cells[2]) == pytest.approx(row[1], rel=1e-3)


def test_gmm_same_seed_same_json(faithful_csv, tmp_path, capsys):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert cli.main(_gmm_argv(faithful_csv, first)) == 0
    assert cli.main(_gmm_argv(faithful_csv, second)) == 0
    capsys.readouterr()
    assert json.loads(first.read_text()) == json.loads(second.read_text())


def test_gmm_reads_byte_order_mark(tmp_path, capsys):
    # Spreadsheet programs often start UTF-8 files with a byte order mark,
    # which must not become part of the first column's name.
    data = load_faithful().data[:40]
    path = tmp_path / "bom.csv"
    lines = ["eruptions,waiting"] + [f"{float(a)!r},{float(b)!r}" for a, b in data]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    json_path = tmp_path / "out.json"

    code = cli.main(["gmm", str(path), "-k", "1", "--columns", "eruptions,waiting", "--json", str(json_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(json_path.read_text())["model"]["columns"] == ["eruptions", "waiting"]


def test_gmm_default_columns_skip_text(tmp_path, capsys):
    data = load_faithful().data[:30]
    path = tmp_path / "mixed.csv"
    lines = ["rownames,site,eruptions,waiting"]
    lines += [f"r{i},geyser{i},{float(a)!r},{float(b)!r}" for i, (a, b) in enumerate(data)]
    path.write_text("\n".join(lines) + "\n")
    json_path = tmp_path / "out.json"

    assert cli.main(["gmm", str(path), "-k", "2", "--top", "3", "--json", str(json_path)]) == 0
    capsys.readouterr()
    document = json.loads(json_path.read_text())
    assert document["model"]["columns"] == ["eruptions", "waiting"]
    assert document["model"]["standardize"] is False
    assert [record["label"] for record in document["rows"]] == [f"r{i}" for i in range(30)]
    assert document["accuracy"] is None
    assert all("exact_kl" not in record for record in document["rows"])


def test_gmm_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["gmm", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in GMM_OPTIONS:
        assert option in help_text, option
