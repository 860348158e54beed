"""Input guards of the models, saving and group influence: each bad input gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from fg_influence import io
from fg_influence.influence import leave_group_out_kl
from fg_influence.influence.exact import exact_kl

from fg_influence.models import (
    BernoulliMixture,
    CategoricalMixture,
    DiagonalGaussianMixture,
    FactorAnalysis,
    GaussianMixture,
    HiddenMarkovModel,
    HierarchicalNormal,
    LatentDirichletAllocation,
    MixtureOfRegressions,
    PoissonMixture,
)


def _rng():
    return np.random.default_rng(20240517)


def _model_cases():
    """(model factory taking tol, arguments of fit) for every model fitted by CAVI."""
    rng = _rng()
    points = rng.normal(size=(30, 2))
    points[:15] += 4.0
    counts = rng.poisson(3.0, size=(30, 2)).astype(float)
    binary = (rng.random((30, 3)) < 0.5).astype(float)
    categories = rng.integers(0, 3, size=(30, 2)).astype(float)
    x = rng.normal(size=30)
    y = 2.0 * x + rng.normal(size=30)
    groups = np.repeat(np.arange(5), 6)
    documents = rng.poisson(2.0, size=(8, 6)).astype(float) + 1.0
    return [
        ("GaussianMixture", lambda tol: GaussianMixture(2, tol=tol, random_state=0), (points,)),
        ("DiagonalGaussianMixture", lambda tol: DiagonalGaussianMixture(2, tol=tol, random_state=0), (points,)),
        ("PoissonMixture", lambda tol: PoissonMixture(2, tol=tol, random_state=0), (counts,)),
        ("BernoulliMixture", lambda tol: BernoulliMixture(2, tol=tol, random_state=0), (binary,)),
        ("CategoricalMixture", lambda tol: CategoricalMixture(2, tol=tol, random_state=0), (categories,)),
        ("MixtureOfRegressions", lambda tol: MixtureOfRegressions(2, tol=tol, random_state=0), (x, y)),
        ("HierarchicalNormal", lambda tol: HierarchicalNormal(tol=tol), (y, groups)),
        ("FactorAnalysis", lambda tol: FactorAnalysis(1, tol=tol, random_state=0), (points,)),
        ("HiddenMarkovModel", lambda tol: HiddenMarkovModel(2, tol=tol), ([counts[:, 0], counts[:, 1]],)),
        ("LatentDirichletAllocation", lambda tol: LatentDirichletAllocation(2, tol=tol, random_state=0),
         (documents,)),
    ]


MODEL_CASES = _model_cases()
MODEL_IDS = [name for name, _, _ in MODEL_CASES]


# tol


@pytest.mark.parametrize("tol", [1, 1.0, 5.0])
@pytest.mark.parametrize("name, factory, data", MODEL_CASES, ids=MODEL_IDS)
def test_tol_of_one_or_more_rejected(name, factory, data, tol):
    with pytest.raises(ValueError, match=r"tol must be in \[0, 1\).*got (1|5)\. Pass a small value .*or 0 to run until max_iter"):
        factory(tol).fit(*data)


@pytest.mark.parametrize("name, factory, data", MODEL_CASES, ids=MODEL_IDS)
def test_tol_negative_rejected(name, factory, data):
    with pytest.raises(ValueError, match=r"tol must be in \[0, 1\).*got -1e-09"):
        factory(-1e-9).fit(*data)


def test_tol_not_a_number_rejected():
    name, factory, data = MODEL_CASES[0]
    with pytest.raises(TypeError, match=r"tol must be a real number in \[0, 1\), got '1e-9' of type str"):
        factory("1e-9").fit(*data)


def test_tol_zero_runs_to_max_iter():
    rng = _rng()
    y = rng.normal(size=24)
    groups = np.repeat(np.arange(4), 6)
    with pytest.warns(Warning, match="did not converge in max_iter=7"):
        model = HierarchicalNormal(tol=0.0, max_iter=7).fit(y, groups)
    # tol = 0 stops only when the ELBO does not change at all, which seven
    # iterations of this fit do not reach.
    assert model.n_iter_ == 7


def test_tol_below_one_accepted():
    name, factory, data = MODEL_CASES[0]
    model = factory(0.5).fit(*data)
    assert model.converged_


# HierarchicalNormal.fit


def _grouped_data():
    rng = _rng()
    groups = np.repeat(np.arange(6), 5)
    x = rng.normal(size=30)
    y = 1.0 + 0.5 * x + rng.normal(size=6)[groups] + rng.normal(size=30)
    return y, groups, x


@pytest.mark.parametrize("missing", [np.nan, np.inf, -np.inf])
def test_hierarchical_nonfinite_float_label_rejected(missing):
    y, groups, _ = _grouped_data()
    labels = groups.astype(float)
    labels[7] = missing
    with pytest.raises(ValueError, match=r"groups must not contain missing labels .* found -?(nan|inf) at row 7 "
                                         r"\(1 such rows in all\)\. Drop those rows"):
        HierarchicalNormal().fit(y, labels)


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_hierarchical_missing_object_label_rejected(missing):
    y, groups, _ = _grouped_data()
    labels = np.array([f"county {g}" for g in groups], dtype=object)
    labels[3] = missing
    with pytest.raises(ValueError, match=r"groups must not contain missing labels .* at row 3"):
        HierarchicalNormal().fit(y, labels)


def test_hierarchical_intercept_column_rejected():
    y, groups, x = _grouped_data()
    X = np.column_stack([np.ones_like(x), x])
    with pytest.raises(ValueError, match=r"X column 0 is constant \(every value is 1\), but the model adds its own "
                                         r"intercept column.*Drop that column from X"):
        HierarchicalNormal().fit(y, groups, X)


def test_hierarchical_intercept_column_named():
    pandas = pytest.importorskip("pandas")
    y, groups, x = _grouped_data()
    frame = pandas.DataFrame({"floor": x, "const": 3.0})
    with pytest.raises(ValueError, match=r"X column 1 \('const'\) is constant \(every value is 3\)"):
        HierarchicalNormal().fit(y, groups, frame)


def test_hierarchical_collinear_columns_rejected():
    y, groups, x = _grouped_data()
    X = np.column_stack([x, 2.0 * x - 1.0])
    with pytest.raises(ValueError, match=r"columns of X are collinear: X column 1 is a linear combination of the "
                                         r"intercept \(which the model adds\)"):
        HierarchicalNormal().fit(y, groups, X)


def test_hierarchical_exact_linear_fit_rejected():
    y, groups, x = _grouped_data()
    with pytest.raises(ValueError, match=r"y is fitted exactly by an intercept and a linear function of X .*"
                                         r"Check that y is not computed from X"):
        HierarchicalNormal().fit(1.0 - 2.8 * x, groups, x)


def test_hierarchical_constant_y_rejected():
    _, groups, _ = _grouped_data()
    with pytest.raises(ValueError, match=r"y is fitted exactly by an intercept \(residual sum of squares"):
        HierarchicalNormal().fit(np.full(30, 4.5), groups)


def test_hierarchical_small_noise_still_fits():
    y, groups, x = _grouped_data()
    # A relative residual of about 1e-5 is far above round-off, so it must fit.
    model = HierarchicalNormal().fit(1.0 - 2.8 * x + 1e-5 * (y - y.mean()), groups, x)
    assert np.isfinite(model.lower_bound_)


# HierarchicalNormal.leave_groups_out_kl


@pytest.fixture(scope="module")
def small_hierarchical():
    y, groups, x = _grouped_data()
    return HierarchicalNormal().fit(y, groups + 300, x)


@pytest.mark.parametrize("labels", [[[300, 301], [302]], [[300, 301], [302, 303]], np.array([[300, 301]]),
                                    ([300], 301)])
def test_nested_group_labels_rejected(small_hierarchical, labels):
    with pytest.raises(TypeError, match=r"labels must be the labels of one set of groups removed together, such "
                                        r"as \[300, 301\], got a nested sequence .*Call leave_groups_out_kl once "
                                        r"per set"):
        small_hierarchical.leave_groups_out_kl(labels)


@pytest.mark.parametrize("exact, method", [(True, "division"), (True, "linear-response"),
                                           (False, "exact")])
def test_exact_flag_conflict_rejected(small_hierarchical, exact, method):
    with pytest.warns(DeprecationWarning):
        with pytest.raises(ValueError, match=rf"exact={exact} contradicts method='{method}'.*Pass only method="):
            small_hierarchical.leave_groups_out_kl([300], exact=exact, method=method)


@pytest.mark.parametrize("exact, method, same_as", [(True, None, "exact"), (True, "exact", "exact"),
                                                    (False, None, "division"),
                                                    (False, "linear-response", "linear-response")])
def test_exact_flag_consistent_accepted(small_hierarchical, exact, method, same_as):
    expected = small_hierarchical.leave_groups_out_kl([300, 302], method=same_as)
    with pytest.warns(DeprecationWarning):
        value = small_hierarchical.leave_groups_out_kl([300, 302], exact=exact, method=method)
    assert value == expected


def test_exact_flag_not_bool_rejected(small_hierarchical):
    with pytest.warns(DeprecationWarning):
        with pytest.raises(TypeError, match=r"exact must be True or False, got 'yes'"):
            small_hierarchical.leave_groups_out_kl([300], exact="yes")


# fg_influence.io


def _county_model(labels):
    y, groups, x = _grouped_data()
    return HierarchicalNormal().fit(y, labels[groups], x)


def test_object_string_labels_saved_as_text(tmp_path):
    labels = np.array(["AITKIN", "ANOKA", "BECKER", "MCLEOD", "POLK", "RICE"], dtype=object)
    model = _county_model(labels)
    path = tmp_path / "model.npz"
    io.save(model, path)
    loaded = io.load(path)
    assert loaded.group_labels_.dtype.kind == "U"
    assert loaded.group_labels_.tolist() == model.group_labels_.tolist()
    assert loaded.leave_groups_out_kl(["MCLEOD"]) == model.leave_groups_out_kl(["MCLEOD"])


def test_pandas_object_labels_saved_as_text(tmp_path):
    pandas = pytest.importorskip("pandas")
    y, groups, x = _grouped_data()
    frame = pandas.DataFrame({"county": [f"C{g}" for g in groups], "y": y, "x": x})
    assert frame["county"].to_numpy().dtype == object
    model = HierarchicalNormal().fit(frame["y"], frame["county"].to_numpy(), frame[["x"]])
    io.save(model, tmp_path / "model.npz")
    loaded = io.load(tmp_path / "model.npz")
    assert loaded.group_labels_.tolist() == [f"C{g}" for g in range(6)]
    assert loaded.leave_groups_out_kl(["C2", "C4"]) == model.leave_groups_out_kl(["C2", "C4"])


def test_object_array_of_non_strings_rejected(tmp_path):
    model = _county_model(np.array(["A", "B", "C", "D", "E", "F"], dtype=object))
    model.extra_ = np.array([{"a": 1}, 2], dtype=object)
    path = tmp_path / "model.npz"
    with pytest.raises(TypeError, match=r"cannot save HierarchicalNormal\.extra_: it is an object array containing "
                                        r"dict values .*no pickled objects"):
        io.save(model, path)
    assert not path.exists()


@pytest.mark.parametrize("path, error, message", [
    (None, TypeError, r"path must be a file path \(str or pathlib\.Path\), got None of type NoneType; pass "),
    (3, TypeError, r"path must be a file path \(str or pathlib\.Path\), got 3 of type int"),
    ("", ValueError, r"path must be a file path, got an empty string"),
])
def test_io_bad_path_rejected(path, error, message):
    model = _county_model(np.array(list("ABCDEF")))
    with pytest.raises(error, match=message + ".*such as 'model.npz'"):
        io.save(model, path)
    with pytest.raises(error, match=message + r".*\.npz file written by fg_influence.io.save"):
        io.load(path)


def test_io_directory_rejected(tmp_path):
    model = _county_model(np.array(list("ABCDEF")))
    with pytest.raises(ValueError, match=r"cannot save to .*: it is a directory, but path must be a file; pass a "
                                         r"file path inside it, such as '.*model\.npz'"):
        io.save(model, tmp_path)
    with pytest.raises(ValueError, match=r"cannot load .*: it is a directory, but path must be the \.npz file"):
        io.load(tmp_path)


@pytest.mark.parametrize("content", [b"group,y\nA,1.0\n", b"\x93NUMPY not really", b""])
def test_io_non_archive_rejected(tmp_path, content):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot load .*data\.csv: not a readable fg_influence archive, because it "
                                         r"is not a NumPy \.npz \(zip\) file; pass a file written by "
                                         r"fg_influence\.io\.save") as caught:
        io.load(path)
    assert "allow_pickle" not in str(caught.value)


def test_io_npy_file_rejected(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(4.0))
    with pytest.raises(ValueError, match=r"it is not a NumPy \.npz \(zip\) file"):
        io.load(path)


# progress of group influence


@pytest.mark.parametrize("progress", [5, True, "bar"])
def test_group_progress_not_callable_rejected(small_hierarchical, progress):
    with pytest.raises(TypeError, match=rf"progress must be None or a callable called as progress\(done, total\) "
                                        rf"after each refit, got {progress!r} of type {type(progress).__name__}"):
        leave_group_out_kl(small_hierarchical.posterior_, [[0, 1]], method="exact", progress=progress)


def test_exact_kl_progress_not_callable_rejected(small_hierarchical):
    with pytest.raises(TypeError, match=r"progress must be None or a callable.*got 5 of type int"):
        exact_kl(small_hierarchical.posterior_, [[0]], progress=5)


def test_group_progress_called_with_exact(small_hierarchical):
    calls = []
    leave_group_out_kl(small_hierarchical.posterior_, [[0, 1], [2]], method="exact",
                       progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


@pytest.mark.parametrize("method", ["division", "linear-response"])
def test_group_progress_ignored_warns(small_hierarchical, method):
    calls = []
    with pytest.warns(UserWarning, match=rf"progress is called only with method='exact'.*method='{method}' makes "
                                         rf"no refits, so progress is ignored"):
        leave_group_out_kl(small_hierarchical.posterior_, [[0, 1]], method=method,
                           progress=lambda done, total: calls.append(done))
    assert calls == []


# HiddenMarkovModel.fit


def test_hmm_flat_list_is_one_series():
    values = [1, 2, 3, 4, 2, 1, 5, 6, 2, 1]
    from_list = HiddenMarkovModel(2).fit(values)
    from_array = HiddenMarkovModel(2).fit(np.array(values, dtype=float))
    assert from_list.posterior_.n_sites == 1
    assert from_list.lower_bound_ == from_array.lower_bound_


@pytest.mark.parametrize("sequences, error, message", [
    ([1, [2, 3]], TypeError, r"sequences must be either one series \(a flat list or 1-D array of numbers\) or a "
                             r"list of series, not a mix; entries \[0\] are single numbers.*Pass \[x\] for one series"),
    (5, TypeError, r"sequences must be a list of 1-D arrays, or one 1-D array for a single series, got 5 of type "
                   r"int; pass \[x\] for one series x"),
    (np.float64(2.0), TypeError, r"got np\.float64\(2\.0\)|got 2\.0 of type float64"),
    ("1 2 3", TypeError, r"got '1 2 3' of type str"),
    ([7], ValueError, r"sequence 0 has 1 value\(s\), but every sequence needs at least 2"),
])
def test_hmm_bad_sequences_rejected(sequences, error, message):
    with pytest.raises(error, match=message):
        HiddenMarkovModel(2).fit(sequences)
