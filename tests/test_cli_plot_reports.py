"""The hmm and compare subcommands write PNG reports beside their JSON."""

import json
from importlib import resources

import pytest

from fg_influence import cli

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def data_file(name: str) -> str:
    return str(resources.files("fg_influence.datasets").joinpath("data", name))


def assert_png(path):
    content = path.read_bytes()
    assert content[:8] == PNG_SIGNATURE
    # A rendered figure with axes and text is tens of kilobytes; a blank or
    # failed canvas is far smaller.
    assert len(content) > 10_000


def test_hmm_time_steps_write_plot_and_json(tmp_path, capsys):
    plot, report = tmp_path / "nile.png", tmp_path / "nile.json"
    code = cli.main(["hmm", data_file("Nile.csv"), "--target", "value", "--order", "time",
                     "--emission", "gaussian", "--exact", "4", "--plot", str(plot), "--json", str(report)])
    assert code == 0
    assert_png(plot)
    document = json.loads(report.read_text())
    assert len(document["sites"]) == 100
    assert sum(record["exact_kl"] is not None for record in document["sites"]) == 4
    assert f"Wrote {plot}" in capsys.readouterr().out


def test_hmm_sequences_write_plot(tmp_path):
    plot = tmp_path / "epil.png"
    code = cli.main(["hmm", data_file("epil.csv"), "--target", "y", "--sequence", "subject",
                     "--order", "period", "--plot", str(plot)])
    assert code == 0
    assert_png(plot)


def test_compare_writes_plot_and_json(tmp_path):
    plot, report = tmp_path / "compare.png", tmp_path / "compare.json"
    code = cli.main(["compare", data_file("faithful.csv"), "--components", "2", "--standardize",
                     "--exact", "5", "--plot", str(plot), "--json", str(report)])
    assert code == 0
    assert_png(plot)
    document = json.loads(report.read_text())
    assert len(document["exact_sites"]) == 5


def test_plot_into_missing_directory_rejected(tmp_path, capsys):
    code = cli.main(["hmm", data_file("Nile.csv"), "--target", "value", "--order", "time",
                     "--emission", "gaussian", "--plot", str(tmp_path / "missing" / "out.png")])
    assert code == 2
    assert "--plot" in capsys.readouterr().err


def test_mixreg_writes_plot_and_json(tmp_path):
    plot, report = tmp_path / "mixreg.png", tmp_path / "mixreg.json"
    code = cli.main(["mixreg", data_file("faithful.csv"), "--target", "waiting", "--columns", "eruptions",
                     "-k", "2", "--n-init", "1", "--exact", "3", "--plot", str(plot), "--json", str(report)])
    assert code == 0
    assert_png(plot)
    document = json.loads(report.read_text())
    assert len(document["rows"]) == 272


def test_lda_writes_plot_and_json(tmp_path):
    plot, report = tmp_path / "lda.png", tmp_path / "lda.json"
    code = cli.main(["lda", "--topics", "3", "--max-documents", "300", "--vocabulary", "300",
                     "--plot", str(plot), "--json", str(report)])
    assert code == 0
    assert_png(plot)
    document = json.loads(report.read_text())
    # Every k-th document is kept so that at most 300 remain.
    assert 0 < len(document["documents"]) <= 300
    assert all(record["kl"] >= 0 for record in document["documents"])
    assert len(document["topics"]) == 3
