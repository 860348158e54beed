"""Saving and loading models and results: exact round trips and rejected files."""

from __future__ import annotations

import gc
import hashlib
import io as stdlib_io
import json
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

from fg_influence import GaussianMixture
from fg_influence.datasets import load_faithful
from fg_influence.influence import InfluenceResult
from fg_influence.io import DIGEST_MEMBER, FORMAT_VERSION, METADATA_MEMBER, load, save


@pytest.fixture(scope="module")
def faithful() -> np.ndarray:
    data = load_faithful().data
    return (data - data.mean(axis=0)) / data.std(axis=0)


@pytest.fixture(scope="module")
def model(faithful) -> GaussianMixture:
    frame = pd.DataFrame(faithful, columns=["eruptions", "waiting"],
                         index=[f"row{i}" for i in range(len(faithful))])
    return GaussianMixture(n_components=2, weight_concentration_prior=2.0, random_state=0).fit(frame)


@pytest.fixture()
def saved(model, tmp_path):
    path = tmp_path / "model.npz"
    model.save(path)
    return path


def _all_influence_numbers(result: InfluenceResult) -> dict[str, np.ndarray]:
    numbers = {"kl": result.kl, "loo_log_predictive": result.loo_log_predictive,
               "improper": result.improper}
    numbers.update({f"kl.{name}": values for name, values in result.kl_by_variable.items()})
    numbers.update({f"shift.{name}": values for name, values in result.shifts().items()})
    loo = result.loo_summary
    numbers["loo"] = np.array([loo.elpd_loo, loo.se, loo.p_loo, loo.lppd], dtype=object)
    return numbers


def _read_members(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _write_members(path, members: dict, *, refresh_digest: bool = True) -> None:
    """Rewrite an archive; with ``refresh_digest`` the metadata digest matches the new metadata."""
    members = dict(members)
    if refresh_digest:
        members[DIGEST_MEMBER] = np.frombuffer(
            hashlib.sha256(members[METADATA_MEMBER].tobytes()).digest(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **members)


def _edit_metadata(path, edit) -> None:
    members = _read_members(path)
    metadata = json.loads(members[METADATA_MEMBER].tobytes())
    edit(metadata)
    members[METADATA_MEMBER] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    _write_members(path, members)


# Round trips


def test_model_round_trip_is_bit_for_bit(model, saved, faithful):
    loaded = GaussianMixture.load(saved)
    expected = _all_influence_numbers(model.influence())
    got = _all_influence_numbers(loaded.influence())
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(loaded.predict_proba(faithful), model.predict_proba(faithful))
    np.testing.assert_array_equal(loaded.score_samples(faithful), model.score_samples(faithful))
    for name in ("weights_", "means_", "precisions_", "covariances_", "scale_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)


def test_model_round_trip_keeps_settings_and_labels(model, saved):
    loaded = load(saved)
    assert type(loaded) is GaussianMixture
    assert loaded.weight_concentration_prior == 2.0
    assert loaded.n_components == 2
    assert loaded.random_state == 0
    assert loaded.row_labels_ == model.row_labels_
    assert loaded.feature_names_in_ == ["eruptions", "waiting"]
    assert loaded.lower_bound_ == model.lower_bound_
    assert loaded.n_iter_ == model.n_iter_
    assert loaded.posterior_.elbo_history == model.posterior_.elbo_history


def test_loaded_model_refits_exactly_like_the_original(model, saved):
    loaded = load(saved)
    sites = [3, 40]
    original = model.influence().compute_exact(sites)
    again = loaded.influence().compute_exact(sites)
    np.testing.assert_array_equal(again.exact_kl, original.exact_kl)


def test_result_round_trip(model, tmp_path):
    result = model.influence().compute_exact([1, 2])
    path = tmp_path / "result.npz"
    save(result, path)
    loaded = load(path)
    assert isinstance(loaded, InfluenceResult)
    np.testing.assert_array_equal(loaded.exact_sites, [1, 2])
    np.testing.assert_array_equal(loaded.exact_kl, result.exact_kl)
    assert loaded.labels == result.labels
    for name, values in _all_influence_numbers(result).items():
        np.testing.assert_array_equal(_all_influence_numbers(loaded)[name], values, err_msg=name)


def test_save_writes_exact_path_without_suffix(model, tmp_path):
    path = tmp_path / "fitted-model"
    save(model, path)
    assert path.is_file()
    assert isinstance(load(path), GaussianMixture)


def test_model_with_array_priors_round_trips(faithful, tmp_path):
    model = GaussianMixture(2, mean_prior=np.array([0.1, -0.2]), covariance_prior=np.eye(2) * 0.5,
                            random_state=1).fit(faithful[:50])
    path = tmp_path / "priors.npz"
    save(model, path)
    loaded = load(path)
    np.testing.assert_array_equal(loaded.mean_prior, [0.1, -0.2])
    np.testing.assert_array_equal(loaded.influence().kl, model.influence().kl)


# Rejected objects and files


def test_save_rejects_unfitted_model(tmp_path):
    with pytest.raises(ValueError, match="not fitted yet"):
        save(GaussianMixture(2), tmp_path / "m.npz")


def test_save_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="save expects a fitted model or an InfluenceResult, got dict"):
        save({"a": 1}, tmp_path / "m.npz")


def test_model_load_of_result_file(model, tmp_path):
    path = tmp_path / "result.npz"
    save(model.influence(), path)
    with pytest.raises(ValueError, match=r"contains an InfluenceResult, not a GaussianMixture; load it with "
                                         r"fg_influence\.io\.load"):
        GaussianMixture.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load(tmp_path / "absent.npz")


def test_load_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable fg_influence archive"):
        load(saved)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 30, "half", "all but one"])
def test_truncated_file_message_same_at_any_length(saved, length):
    # A file cut to 2 or 3 bytes starts with "PK" like a zip file but is read
    # by NumPy as a pickle, so it once gave advice about allow_pickle instead.
    data = saved.read_bytes()
    size = {"half": len(data) // 2, "all but one": len(data) - 1}.get(length, length)
    saved.write_bytes(data[:size])
    with pytest.raises(ValueError) as raised:
        load(saved)
    message = str(raised.value)
    assert message.startswith(
        f"cannot load {saved}: not a readable fg_influence archive, because it is not a NumPy .npz "
        f"(zip) file; pass a file written by fg_influence.io.save. A truncated or damaged copy of "
        f"such a file also gives this error ("
    )
    assert "allow_pickle" not in message


def test_inconsistent_metadata_message_names_path(saved):
    _edit_metadata(saved, lambda m: m["posterior"].pop("n_iter"))
    with pytest.raises(ValueError) as raised:
        load(saved)
    assert str(raised.value).startswith(f"cannot load {saved}: the metadata is inconsistent (")


@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_load_truncated_file_closes_it(saved, kept):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * kept)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ValueError, match="not a readable fg_influence archive"):
            load(saved)
        # An unclosed file warns only when it is garbage-collected.
        gc.collect()
    unclosed = [str(warning.message) for warning in caught if issubclass(warning.category, ResourceWarning)]
    assert unclosed == []


def test_load_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not an archive\n")
    with pytest.raises(ValueError, match="not a readable fg_influence archive"):
        load(path)


def test_load_plain_npz_without_metadata(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(ValueError, match="metadata.json is missing"):
        load(path)


def test_load_rejects_metadata_changed_without_digest(saved):
    members = _read_members(saved)
    text = members[METADATA_MEMBER].tobytes().replace(b'"n_components": 2', b'"n_components": 3')
    members[METADATA_MEMBER] = np.frombuffer(text, dtype=np.uint8)
    _write_members(saved, members, refresh_digest=False)
    with pytest.raises(ValueError, match="does not match its SHA-256 digest"):
        load(saved)


def test_load_rejects_changed_array(saved):
    members = _read_members(saved)
    members["locals/assignment"] = members["locals/assignment"][::-1].copy()
    _write_members(saved, members)
    with pytest.raises(ValueError, match="array 'locals/assignment' does not match its SHA-256 digest"):
        load(saved)


def test_load_rejects_wrong_shape_record(saved):
    _edit_metadata(saved, lambda m: m["arrays"]["data/x"].update(shape=[10, 2]))
    with pytest.raises(ValueError, match=r"array 'data/x' has shape \(272, 2\)"):
        load(saved)


def test_load_rejects_inconsistent_shapes_even_with_valid_digests(saved):
    members = _read_members(saved)
    members["locals/assignment"] = members["locals/assignment"][:10].copy()
    metadata = json.loads(members[METADATA_MEMBER].tobytes())
    record = metadata["arrays"]["locals/assignment"]
    record["shape"] = [10, 2]
    record["sha256"] = hashlib.sha256(members["locals/assignment"].tobytes()).hexdigest()
    members[METADATA_MEMBER] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    _write_members(saved, members)
    with pytest.raises(ValueError, match=r"responsibilities of 'assignment' must have shape \(272, 2\)"):
        load(saved)


def test_load_rejects_other_format_version(saved):
    _edit_metadata(saved, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load(saved)


def test_load_rejects_unknown_factor_class(saved):
    _edit_metadata(saved, lambda m: m["graph"]["factors"][0].update({"class": "system"}))
    with pytest.raises(ValueError, match="unknown factor 'system'"):
        load(saved)


def test_load_rejects_unknown_model_class(saved):
    _edit_metadata(saved, lambda m: m["model"].update({"class": "Popen"}))
    with pytest.raises(ValueError, match="unknown model 'Popen'"):
        load(saved)


def test_load_rejects_missing_metadata_entry(saved):
    _edit_metadata(saved, lambda m: m["posterior"].pop("n_iter"))
    with pytest.raises(ValueError, match="metadata is inconsistent"):
        load(saved)


_UNPICKLED = []


class _Trap:
    """An object whose unpickling would record that code ran."""

    def __reduce__(self):
        return (_UNPICKLED.append, ("code ran",))


def test_load_never_unpickles(saved):
    members = _read_members(saved)
    buffer = stdlib_io.BytesIO()
    np.save(buffer, np.array([_Trap()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(saved, "a") as archive:
        archive.writestr("payload.npy", buffer.getvalue())
    assert "payload" not in members
    with pytest.raises(ValueError, match="not a readable fg_influence archive"):
        load(saved)
    assert _UNPICKLED == []


def _catalogue_cases():
    from fg_influence import models

    rng = np.random.default_rng(5)
    X = np.vstack([rng.normal(-2.0, 1.0, size=(15, 2)), rng.normal(2.0, 1.0, size=(15, 2))])
    return [
        pytest.param(lambda: models.DiagonalGaussianMixture(2, random_state=0), (X,), id="diagonal"),
        pytest.param(lambda: models.PoissonMixture(2, random_state=0),
                     (rng.poisson(3.0, size=(30, 2)).astype(float),), id="poisson-mixture"),
        pytest.param(lambda: models.BayesianLinearRegression(), (X, X @ [1.0, -0.5]), id="regression"),
        pytest.param(lambda: models.BetaBernoulli(), ((rng.random(30) < 0.3).astype(float),),
                     id="beta-bernoulli"),
    ]


@pytest.mark.parametrize("make, data", _catalogue_cases())
def test_catalogue_models_round_trip(make, data, tmp_path):
    model = make().fit(*data)
    path = tmp_path / "model.npz"
    save(model, path)
    loaded = load(path)
    assert type(loaded) is type(model)
    for name, value in vars(model).items():
        if name.endswith("_") and name != "posterior_":
            np.testing.assert_array_equal(getattr(loaded, name), value, err_msg=name)
            assert type(getattr(loaded, name)) is type(value), name
    for name, values in _all_influence_numbers(model.influence()).items():
        if name == "loo":
            continue  # p_loo is None for models without an in-sample predictive density
        np.testing.assert_array_equal(_all_influence_numbers(loaded.influence())[name], values, err_msg=name)


def test_result_with_mismatched_other_optimum_rejected(model, tmp_path):
    result = model.influence().compute_exact([1, 2])
    # One flag too many for the two refitted sites.
    result.exact_other_optimum = np.zeros(3, dtype=bool)
    path = tmp_path / "result.npz"
    save(result, path)
    with pytest.raises(ValueError, match="the exact refit arrays are inconsistent"):
        load(path)
