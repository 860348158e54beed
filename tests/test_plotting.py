"""Plots of influence results, rendered with the Agg backend, and the CLI's --plot option."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fg_influence import GaussianMixture, cli  # noqa: E402
from fg_influence.datasets import load_faithful  # noqa: E402
from fg_influence.plotting import (  # noqa: E402
    measure_values,
    plot_calibration,
    plot_data,
    plot_index,
    save_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: A blank 3-panel figure compresses to a few kB; the rendered reports measured 60-150 kB.
MIN_REPORT_BYTES = 20_000


@pytest.fixture(scope="module")
def result():
    data = load_faithful().data
    X = (data - data.mean(axis=0)) / data.std(axis=0)
    return GaussianMixture(2, random_state=0).fit(X).influence().compute_exact(12)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > MIN_REPORT_BYTES, len(data)


def test_index_plot_labels_top_rows(result):
    ax = plot_index(result, top=3)
    texts = [text.get_text() for text in ax.texts]
    assert texts == [str(i) for i in result.top(3)]
    assert "KL" in ax.get_ylabel()


def test_index_plot_of_a_shift(result):
    ax = plot_index(result, "components.mean_norm", top=2)
    expected = np.argsort(-result.mean_shift_norm, kind="stable")[:2]
    assert [text.get_text() for text in ax.texts] == [str(i) for i in expected]


def test_data_plot_draws_one_ellipse_per_component(result):
    from matplotlib.patches import Ellipse

    ax = plot_data(result, column_names=["eruptions", "waiting"])
    assert sum(isinstance(patch, Ellipse) for patch in ax.patches) == 2
    assert ax.get_xlabel() == "eruptions"


def test_data_plot_projects_three_columns():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(-2, 1, size=(20, 3)), rng.normal(2, 1, size=(20, 3))])
    result = GaussianMixture(2, random_state=0).fit(X).influence()
    ax = plot_data(result, "loo_log_predictive")
    assert ax.get_xlabel() == "principal component 1"


def test_data_plot_of_one_column():
    X = np.concatenate([np.linspace(-3, -1, 15), np.linspace(1, 3, 15)])
    result = GaussianMixture(2, random_state=0).fit(X).influence()
    ax = plot_data(result)
    assert ax.get_xlabel() == "column 0"


def test_calibration_title_has_spearman(result):
    from scipy.stats import spearmanr

    ax = plot_calibration(result)
    rho = spearmanr(result.kl[result.exact_sites], result.exact_kl).statistic
    assert f"Spearman rank correlation {rho:.4f}" in ax.get_title()


def test_calibration_needs_exact_refits():
    X = np.random.default_rng(2).normal(size=(20, 2))
    result = GaussianMixture(1).fit(X).influence()
    with pytest.raises(ValueError, match="call result.compute_exact"):
        plot_calibration(result)


def test_save_report_writes_png(result, tmp_path):
    path = save_report(result, tmp_path / "report.png")
    _assert_png(path)


def test_unknown_measure(result):
    with pytest.raises(ValueError, match="measure must be one of"):
        measure_values(result, "influence")


def test_measure_with_several_values_per_row(result):
    with pytest.raises(ValueError, match=r"has shape \(272, 2, 2\)"):
        measure_values(result, "components.mean")


def test_column_names_must_match(result):
    with pytest.raises(ValueError, match="column_names must have 2 entries"):
        plot_data(result, column_names=["one"])


def test_without_matplotlib(result, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"fg-influence\[plot\]"):
        save_report(result, tmp_path / "report.png")


# The command line


def _write_csv(path, rows: int = 60) -> None:
    dataset = load_faithful()
    lines = ["rownames,eruptions,waiting"]
    for label, (eruptions, waiting) in list(zip(dataset.row_labels, dataset.data))[:rows]:
        lines.append(f"{label},{float(eruptions)!r},{float(waiting)!r}")
    path.write_text("\n".join(lines) + "\n")


def test_demo_writes_png_and_json(tmp_path, capsys):
    plot_path, json_path = tmp_path / "demo.png", tmp_path / "demo.json"
    code = cli.main(["demo", "--exact", "6", "--n-init", "1", "--plot", str(plot_path),
                     "--json", str(json_path)])
    assert code == 0
    assert f"Wrote {plot_path}" in capsys.readouterr().out
    _assert_png(plot_path)
    document = json.loads(json_path.read_text())
    assert len(document["rows"]) == 272


def test_gmm_writes_png(tmp_path, capsys):
    csv_path, plot_path = tmp_path / "data.csv", tmp_path / "gmm.png"
    _write_csv(csv_path)
    code = cli.main(["gmm", str(csv_path), "-k", "2", "--standardize", "--n-init", "1",
                     "--plot", str(plot_path)])
    assert code == 0
    _assert_png(plot_path)


def test_plot_in_missing_directory(tmp_path, capsys):
    csv_path = tmp_path / "data.csv"
    _write_csv(csv_path, rows=20)
    code = cli.main(["gmm", str(csv_path), "-k", "2", "--plot", str(tmp_path / "no" / "x.png")])
    assert code == 2
    assert "cannot write --plot file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["linreg", "stackloss.csv", "--target", "stack.loss", "--exact", "4"],
    ["mixture", "iris.csv", "--family", "gaussian-diag", "-k", "3", "--n-init", "1"],
    ["hierarchical", "radon.csv", "--target", "log.radon", "--group", "county", "--columns", "basement",
     "--exact", "3"],
    ["factor-analysis", "iris.csv", "--factors", "1", "--columns", "Sepal.Length,Sepal.Width,Petal.Length"],
], ids=["linreg", "mixture", "hierarchical", "factor-analysis"])
def test_catalogue_subcommands_write_png(argv, tmp_path, capsys):
    from fg_influence.datasets import __file__ as datasets_init

    data_folder = Path(datasets_init).parent / "data"
    plot_path = tmp_path / "report.png"
    argv = [argv[0], str(data_folder / argv[1]), *argv[2:], "--plot", str(plot_path)]
    assert cli.main(argv) == 0
    assert f"Wrote {plot_path}" in capsys.readouterr().out
    _assert_png(plot_path)
