"""The linreg, mixture and mixreg subcommands on their real data sets, with a JSON schema check."""

from __future__ import annotations

import json
from importlib import resources

import pytest

jsonschema = pytest.importorskip("jsonschema")

from fg_influence import cli  # noqa: E402

DATA = resources.files("fg_influence.datasets").joinpath("data")

NUMBER_OR_NULL = {"type": ["number", "null"]}
ROW = {
    "type": "object",
    "required": ["row", "label", "kl", "loo_log_predictive", "improper"],
    "properties": {
        "row": {"type": "integer", "minimum": 0},
        "label": {"type": "string"},
        "kl": {"type": ["number", "null"], "minimum": 0},
        "loo_log_predictive": NUMBER_OR_NULL,
        "improper": {"type": "boolean"},
        "exact_kl": {"type": ["number", "null"], "minimum": 0},
        "cooks_distance": NUMBER_OR_NULL,
        "coef_shift": {"type": "array", "items": NUMBER_OR_NULL},
    },
}
ACCURACY = {
    "type": ["object", "null"],
    "required": ["n_sites", "spearman", "median_relative_error", "max_relative_error", "top_k", "top_k_overlap"],
}


def schema(model_type: str, model_required: list[str]) -> dict:
    return {
        "type": "object",
        "required": ["method", "model", "accuracy", "rows"],
        "additionalProperties": False,
        "properties": {
            "method": {"const": "division"},
            "model": {
                "type": "object",
                "required": ["type"] + model_required,
                "properties": {"type": {"const": model_type}},
            },
            "accuracy": ACCURACY,
            "rows": {"type": "array", "minItems": 1, "items": ROW},
        },
    }


def run_json(tmp_path, argv, capsys):
    path = tmp_path / "out.json"
    # linreg has no random start, so it takes no --n-init.
    start = [] if argv[0] == "linreg" else ["--n-init", "1"]
    code = cli.main(argv + ["--json", str(path), *start])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(path.read_text()), captured


def test_linreg_stackloss_json(tmp_path, capsys):
    document, captured = run_json(tmp_path, ["linreg", str(DATA / "stackloss.csv"), "--target", "stack.loss",
                                             "--exact", "3"], capsys)

    jsonschema.validate(document, schema("BayesianLinearRegression", ["posterior", "columns", "target"]))
    assert len(document["rows"]) == 21
    ranked = sorted(document["rows"], key=lambda row: -row["kl"])
    assert {row["label"] for row in ranked[:4]} == {"1", "3", "4", "21"}
    assert document["accuracy"]["n_sites"] == 3
    assert "The 10 most influential rows" in captured.out


@pytest.mark.parametrize("family,file,columns,model_type,rows", [
    ("poisson", "bioChemists.csv", "art", "PoissonMixture", 915),
    ("poisson", "epil.csv", "y", "PoissonMixture", 236),
    ("categorical", "titanic.csv", "class,age,sex,survived", "CategoricalMixture", 1316),
    ("gaussian-diag", "galaxies.csv", "dat", "DiagonalGaussianMixture", 82),
    ("gaussian-diag", "iris.csv", None, "DiagonalGaussianMixture", 150),
])
def test_mixture_json(tmp_path, capsys, family, file, columns, model_type, rows):
    argv = ["mixture", str(DATA / file), "--family", family, "--components", "2", "--top", "3"]
    if columns is not None:
        argv += ["--columns", columns]

    document, _ = run_json(tmp_path, argv, capsys)

    jsonschema.validate(document, schema(model_type, ["weights", "components", "columns", "elbo"]))
    assert len(document["rows"]) == rows


def test_mixture_bernoulli_json(tmp_path, capsys):
    path = tmp_path / "binary.csv"
    path.write_text("a,b\n" + "\n".join(f"{i % 2},{(i // 3) % 2}" for i in range(30)) + "\n")

    document, _ = run_json(tmp_path, ["mixture", str(path), "--family", "bernoulli", "-k", "2"], capsys)

    jsonschema.validate(document, schema("BernoulliMixture", ["weights", "components"]))


def test_mixreg_faithful_json(tmp_path, capsys):
    document, captured = run_json(tmp_path, ["mixreg", str(DATA / "faithful.csv"), "--target", "waiting",
                                             "--columns", "eruptions", "-k", "2"], capsys)

    jsonschema.validate(document, schema("MixtureOfRegressions", ["coefficients", "weights", "columns"]))
    assert len(document["rows"]) == 272
    assert "component 1" in captured.out


def test_missing_values_rejected_by_default(capsys):
    code = cli.main(["mixture", str(DATA / "penguins.csv"), "--family", "gaussian-diag", "-k", "2",
                     "--columns", "bill_length_mm,body_mass_g"])

    assert code == 2
    assert "2 row(s) of" in capsys.readouterr().err


def test_missing_values_dropped_with_warning(tmp_path, capsys):
    document, captured = run_json(tmp_path, ["mixture", str(DATA / "penguins.csv"), "--family", "categorical",
                                             "-k", "1", "--columns", "species,sex", "--missing", "drop",
                                             "--top", "2"], capsys)

    # penguins has 11 rows with sex recorded as NA.
    assert "dropped 11 row(s) with missing values in ['sex']" in captured.err
    assert "leaving 333 of 344 rows" in captured.err
    assert len(document["rows"]) == 333


def test_gmm_missing_values_rejected(capsys):
    code = cli.main(["gmm", str(DATA / "penguins.csv"), "-k", "2"])

    assert code == 2
    error = capsys.readouterr().err
    assert "column 'bill_length_mm'" in error
    assert "line 5 (an empty field)" in error
    assert "drop the rows with missing values with --missing drop" in error


def test_gmm_penguins_missing_drop(tmp_path, capsys):
    document, captured = run_json(tmp_path, ["gmm", str(DATA / "penguins.csv"), "-k", "3", "--standardize",
                                             "--missing", "drop", "--top", "2"], capsys)

    # penguins has 2 rows with every measurement empty: lines 5 and 273.
    assert "dropped 2 row(s) with missing values" in captured.err
    assert "leaving 342 of 344 rows" in captured.err
    assert len(document["rows"]) == 342
    labels = {record["label"] for record in document["rows"]}
    assert "4" not in labels
    assert "272" not in labels
    assert document["model"]["columns"] == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                                            "body_mass_g", "year"]


def test_gmm_missing_drop_rejects_text_in_numbers(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    path.write_text("a,b\n1,2\n,3\noops,4\n5,6\n")
    code = cli.main(["gmm", str(path), "-k", "1", "--missing", "drop"])

    assert code == 2
    assert "is numeric except at line 4 ('oops')" in capsys.readouterr().err


def test_missing_values_rejected_by_linreg(capsys):
    code = cli.main(["linreg", str(DATA / "penguins.csv"), "--target", "body_mass_g",
                     "--columns", "bill_length_mm,flipper_length_mm"])

    assert code == 2
    assert "missing values" in capsys.readouterr().err


@pytest.mark.parametrize("content,argv,message", [
    ("n\n1\n-2\n3\n", ["--family", "poisson"], "non-negative counts"),
    ("n\n1\n2.5\n3\n", ["--family", "poisson"], "integer counts"),
    ("n\n1\n0\n2\n", ["--family", "bernoulli"], "only 0 and 1"),
    ("n\n" + "\n".join(f"v{i}" for i in range(60)) + "\n", ["--family", "categorical"],
     "60 distinct values, more than --max-categories 50"),
])
def test_mixture_bad_values_rejected(tmp_path, capsys, content, argv, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)

    code = cli.main(["mixture", str(path), "-k", "1"] + argv)

    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--seed", "--n-init"])
def test_linreg_rejects_random_start_options(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["linreg", str(DATA / "stackloss.csv"), "--target", "stack.loss", option, "1"])

    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {option} 1" in capsys.readouterr().err


def test_linreg_non_numeric_target_rejected(capsys):
    code = cli.main(["linreg", str(DATA / "iris.csv"), "--target", "Species", "--columns", "Sepal.Length"])

    assert code == 2
    assert "column 'Species' must be numeric" in capsys.readouterr().err


def test_linreg_singular_design_rejected(tmp_path, capsys):
    path = tmp_path / "collinear.csv"
    path.write_text("a,b,y\n" + "\n".join(f"{i},{2 * i},{i + (i % 3)}" for i in range(10)) + "\n")

    code = cli.main(["linreg", str(path), "--target", "y"])

    assert code == 2
    assert "design matrix is singular" in capsys.readouterr().err
