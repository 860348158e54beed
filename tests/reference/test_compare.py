"""The comparison of influence methods, through the API and the command line."""

import json
import pathlib

import numpy as np
import pytest

from fg_influence.cli import main
from fg_influence.reference import compare_methods
from fg_influence.reference.compare import METHODS

from ..helpers import standardized_faithful

FAITHFUL_CSV = pathlib.Path(__file__).resolve().parents[2] / "fg_influence" / "datasets" / "data" / "faithful.csv"


@pytest.fixture(scope="module")
def comparison():
    X = standardized_faithful()[::4]
    return compare_methods(X, 2, exact=20, top=5, random_state=0, n_init=1)


def test_every_method_agrees_with_refits(comparison):
    for name, _, _ in METHODS:
        # On 20 of 68 well-separated Old Faithful rows every method ranks
        # the refits almost perfectly (measured minimum 0.9895, EM-influence;
        # every top-5 overlap measured 5 of 5).
        assert comparison.spearman[name] > 0.95, name
        assert comparison.top_overlap[name] >= 4, name


def test_influence_function_ranks_em_refits_best(comparison):
    # The Newton step with the exact Hessian is closer to the EM refits than
    # EM-influence, which leaves out the missing information.
    assert comparison.spearman["influence_function"] >= comparison.spearman["em_influence"]


def test_comparison_is_json_ready(comparison):
    document = json.loads(json.dumps(comparison.to_dict()))
    assert set(document["methods"]) == {name for name, _, _ in METHODS}
    assert len(document["exact"]["vb"]) == comparison.sites.size


def test_random_subset_of_refits(comparison):
    assert comparison.sites.size == 20
    assert np.unique(comparison.sites).size == 20
    assert comparison.exact["vb"].shape == (20,)
    assert comparison.exact["em"].shape == (20,)


def test_compare_command(tmp_path, capsys):
    path = tmp_path / "out.json"
    code = main(["compare", str(FAITHFUL_CSV), "--components", "2", "--standardize", "--exact", "4",
                 "--n-init", "1",
                 "--json", str(path)])
    assert code == 0
    output = capsys.readouterr().out
    for name, _, _ in METHODS:
        assert name in output
    document = json.loads(path.read_text())
    assert document["standardize"] is True
    assert len(document["exact_sites"]) == 4


def test_compare_command_rejects_too_few_refits(capsys):
    code = main(["compare", str(FAITHFUL_CSV), "--components", "2", "--exact", "2"])
    assert code == 2
    assert "--exact must be at least 3 rows" in capsys.readouterr().err


def test_compare_rejects_bad_exact():
    with pytest.raises(ValueError, match='exact must be "all" or a number of sites'):
        compare_methods(standardized_faithful()[::4], 2, exact="some")
