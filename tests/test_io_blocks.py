"""Saving and loading models with local blocks: hierarchical normal, factor analysis, HMM and LDA.

Each model is fitted once per module to small data; every round trip must
reproduce the influence numbers bit for bit, because the loaded posterior
contains the same arrays.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile

import numpy as np
import pytest

from fg_influence.datasets import load_iris, load_sleepstudy
from fg_influence.influence import InfluenceResult
from fg_influence.io import DIGEST_MEMBER, FORMAT_VERSION, METADATA_MEMBER, load, save
from fg_influence.models import (
    FactorAnalysis,
    GaussianMixture,
    HiddenMarkovModel,
    HierarchicalNormal,
    LatentDirichletAllocation,
)


def _sleepstudy_model() -> HierarchicalNormal:
    data = load_sleepstudy().data
    return HierarchicalNormal().fit(data[:, 0], data[:, 2].astype(int), data[:, 1])


def _text_label_model() -> HierarchicalNormal:
    rng = np.random.default_rng(11)
    labels = np.array(["north", "south", "east", "west", "centre"])
    groups = np.repeat(labels, 6)
    y = rng.normal(0.0, 1.0, size=5)[np.repeat(np.arange(5), 6)] + rng.normal(0.0, 0.5, size=30)
    return HierarchicalNormal().fit(y, groups)


def _factor_analysis_model() -> FactorAnalysis:
    X = load_iris().data
    return FactorAnalysis(1, random_state=0).fit((X - X.mean(axis=0)) / X.std(axis=0))


def _poisson_hmm_model() -> HiddenMarkovModel:
    rng = np.random.default_rng(3)
    sequences = [np.where(rng.random(12) < 0.5, rng.poisson(1.0, 12), rng.poisson(6.0, 12)).astype(float)
                 for _ in range(6)]
    return HiddenMarkovModel(2).fit(sequences)


def _gaussian_hmm_series() -> HiddenMarkovModel:
    rng = np.random.default_rng(4)
    states = np.repeat([0, 1, 0, 1], 10)
    return HiddenMarkovModel(2, emission="gaussian").fit(rng.normal(3.0 * states, 1.0))


def _lda_model() -> LatentDirichletAllocation:
    rng = np.random.default_rng(5)
    topics = rng.dirichlet(np.full(15, 0.3), size=2)
    mixtures = rng.dirichlet(np.ones(2), size=10)
    counts = np.array([rng.multinomial(30, weights @ topics) for weights in mixtures])
    return LatentDirichletAllocation(2, random_state=0).fit(counts)


MODELS = {
    "hierarchical": _sleepstudy_model,
    "hierarchical-text-labels": _text_label_model,
    "factor-analysis": _factor_analysis_model,
    "poisson-hmm": _poisson_hmm_model,
    "gaussian-hmm-series": _gaussian_hmm_series,
    "lda": _lda_model,
}


@pytest.fixture(scope="module")
def fitted() -> dict:
    return {name: make() for name, make in MODELS.items()}


@pytest.fixture(params=sorted(MODELS))
def case(request, fitted, tmp_path):
    """A fitted block model, the path it was saved to and the loaded copy."""
    model = fitted[request.param]
    path = tmp_path / "model.npz"
    save(model, path)
    return model, path, load(path)


def _influence_or_error(model, method: str):
    """The KL of every site by ``method``, or the NotImplementedError text where the model has none."""
    try:
        with warnings.catch_warnings():
            # The LDA fixture keeps the default tol, which linear response warns about.
            warnings.filterwarnings("ignore", message="this LatentDirichletAllocation was fitted with tol")
            result = model.influence(method=method)
    except NotImplementedError as error:
        return str(error)
    return result


def _assert_same_influence(original, loaded) -> None:
    if isinstance(original, str):
        assert loaded == original
        return
    np.testing.assert_array_equal(loaded.kl, original.kl)
    np.testing.assert_array_equal(loaded.improper, original.improper)
    assert loaded.kl_by_variable.keys() == original.kl_by_variable.keys()
    for name, values in original.kl_by_variable.items():
        np.testing.assert_array_equal(loaded.kl_by_variable[name], values, err_msg=name)


# Round trips


def test_loaded_model_has_same_type_and_fit(case):
    model, _, loaded = case
    assert type(loaded) is type(model)
    assert loaded.lower_bound_ == model.lower_bound_
    assert loaded.n_iter_ == model.n_iter_
    assert loaded.converged_ == model.converged_
    assert loaded.posterior_.elbo_history == model.posterior_.elbo_history


def test_loaded_model_keeps_fitted_attributes(case):
    model, _, loaded = case
    for name, value in vars(model).items():
        if name.endswith("_") and not name.startswith("_") and name != "posterior_":
            np.testing.assert_array_equal(getattr(loaded, name), value, err_msg=name)
            assert type(getattr(loaded, name)) is type(value), name


def test_loaded_block_states_are_identical(case):
    model, _, loaded = case
    for name, state in model.posterior_.locals.items():
        copy = loaded.posterior_.locals[name]
        assert list(copy.arrays) == list(state.arrays)
        assert list(copy.ragged) == list(state.ragged)
        for key, value in {**state.arrays, **state.ragged}.items():
            np.testing.assert_array_equal(getattr(copy, key), value, err_msg=f"{name}.{key}")
            assert getattr(copy, key).dtype == np.asarray(value).dtype
        if state.offsets is None:
            assert copy.offsets is None
        else:
            np.testing.assert_array_equal(copy.offsets, state.offsets)


def test_division_kl_identical_after_load(case):
    model, _, loaded = case
    _assert_same_influence(_influence_or_error(model, "division"), _influence_or_error(loaded, "division"))


def test_linear_response_identical_after_load(case):
    # Models without the correction must still raise the same error after loading.
    model, _, loaded = case
    _assert_same_influence(_influence_or_error(model, "linear-response"),
                           _influence_or_error(loaded, "linear-response"))


def test_exact_refits_identical_after_load(case):
    model, _, loaded = case
    original = model.influence().compute_exact([0])
    again = loaded.influence().compute_exact([0])
    np.testing.assert_array_equal(again.exact_kl, original.exact_kl)


@pytest.mark.parametrize("method", ["division", "linear-response"])
def test_result_round_trip(fitted, tmp_path, method):
    model = fitted["hierarchical"]
    result = model.influence(method=method).compute_exact([1, 2])
    result.row_labels = [str(label) for label in model.group_labels_]
    path = tmp_path / "result.npz"
    save(result, path)
    loaded = load(path)
    assert isinstance(loaded, InfluenceResult)
    assert loaded.method == method
    assert loaded.labels == result.labels
    np.testing.assert_array_equal(loaded.exact_sites, [1, 2])
    np.testing.assert_array_equal(loaded.exact_kl, result.exact_kl)
    _assert_same_influence(result, loaded)


def test_text_group_labels_round_trip(fitted, tmp_path):
    model = fitted["hierarchical-text-labels"]
    path = tmp_path / "model.npz"
    save(model, path)
    loaded = load(path)
    assert loaded.group_labels_.dtype == model.group_labels_.dtype
    np.testing.assert_array_equal(loaded.group_labels_, model.group_labels_)
    np.testing.assert_array_equal(loaded.group_positions(["west", "east"]), model.group_positions(["west", "east"]))
    assert loaded.leave_groups_out_kl(["north", "south"]) == model.leave_groups_out_kl(["north", "south"])


def test_hmm_time_steps_after_load(fitted, tmp_path):
    # time_step_influence refits from the priors that fit resolved, which load restores.
    model = fitted["gaussian-hmm-series"]
    path = tmp_path / "model.npz"
    save(model, path)
    loaded = load(path)
    original = model.time_step_influence(exact=[0, 17])
    again = loaded.time_step_influence(exact=[0, 17])
    np.testing.assert_array_equal(again.kl, original.kl)
    np.testing.assert_array_equal(again.exact_kl, original.exact_kl)
    np.testing.assert_array_equal(loaded.state_probabilities(), model.state_probabilities())


# The file format


def test_block_files_load_without_pickle(case):
    _, path, _ = case
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert all(name.endswith(".npy") for name in names)
    with np.load(path, allow_pickle=False) as archive:
        for name in archive.files:
            assert archive[name].dtype.kind in "biuf", name


def test_block_files_are_version_two(case, fitted, tmp_path):
    _, path, _ = case
    assert _metadata(path)["format_version"] == FORMAT_VERSION == 2
    # Graphs without blocks keep version 1, which older releases read.
    X = load_iris().data[:, :2]
    plain = tmp_path / "mixture.npz"
    save(GaussianMixture(2, random_state=0).fit(X), plain)
    assert _metadata(plain)["format_version"] == 1


# Rejected files


def _members(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _metadata(path) -> dict:
    return json.loads(_members(path)[METADATA_MEMBER].tobytes())


def _rewrite(path, members: dict, metadata: dict | None = None) -> None:
    """Write ``members`` back, with ``metadata`` and digests that match it when given."""
    members = dict(members)
    if metadata is not None:
        text = json.dumps(metadata).encode()
        members[METADATA_MEMBER] = np.frombuffer(text, dtype=np.uint8)
        members[DIGEST_MEMBER] = np.frombuffer(hashlib.sha256(text).digest(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **members)


def _replace_array(path, name: str, value: np.ndarray) -> None:
    """Replace one array and update its shape, dtype and digest, so only the consistency checks can fail."""
    members = _members(path)
    metadata = json.loads(members[METADATA_MEMBER].tobytes())
    members[name] = value
    metadata["arrays"][name] = {"shape": list(value.shape), "dtype": value.dtype.str,
                                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    _rewrite(path, members, metadata)


@pytest.fixture()
def saved(fitted, tmp_path):
    """Path of a saved model by name."""
    def save_model(name: str):
        path = tmp_path / f"{name}.npz"
        save(fitted[name], path)
        return path
    return save_model


def test_truncated_block_file(saved):
    path = saved("lda")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable fg_influence archive"):
        load(path)


def test_changed_block_array(saved):
    path = saved("hierarchical")
    members = _members(path)
    name = "blocks/coefficients/arrays/stat0"
    members[name] = members[name][::-1].copy()
    _rewrite(path, members)
    with pytest.raises(ValueError, match=f"array '{name}' does not match its SHA-256 digest"):
        load(path)


def test_newer_format_version(saved):
    path = saved("factor-analysis")
    metadata = _metadata(path)
    metadata["format_version"] = FORMAT_VERSION + 1
    _rewrite(path, _members(path), metadata)
    with pytest.raises(ValueError, match=rf"format version {FORMAT_VERSION + 1} is not supported.*\[1, 2\]"):
        load(path)


def test_version_one_cannot_hold_blocks(saved):
    path = saved("poisson-hmm")
    metadata = _metadata(path)
    metadata["format_version"] = 1
    _rewrite(path, _members(path), metadata)
    with pytest.raises(ValueError, match="version 1 file cannot hold local blocks"):
        load(path)


def test_block_state_with_wrong_site_count(saved):
    path = saved("hierarchical")
    stat0 = _members(path)["blocks/coefficients/arrays/stat0"]
    _replace_array(path, "blocks/coefficients/arrays/stat0", stat0[:-1].copy())
    with pytest.raises(ValueError, match=r"arrays of block 'coefficients' must have one entry per site \(18\)"):
        load(path)


def test_block_offsets_out_of_order(saved):
    path = saved("lda")
    offsets = _members(path)["blocks/document_topics/offsets"].copy()
    offsets[[1, 2]] = offsets[[2, 1]]
    _replace_array(path, "blocks/document_topics/offsets", offsets)
    with pytest.raises(ValueError, match=r"offsets of block 'document_topics' must increase strictly from 0 to "
                                         r"the number of ragged rows \(\d+\)"):
        load(path)


def test_block_offsets_of_float_dtype(saved):
    path = saved("lda")
    offsets = _members(path)["blocks/document_topics/offsets"].astype(np.float64)
    _replace_array(path, "blocks/document_topics/offsets", offsets)
    with pytest.raises(ValueError, match=r"offsets of block 'document_topics' must be 11 integers, got shape "
                                         r"\(11,\) and dtype float64"):
        load(path)


def test_ragged_data_offsets_out_of_range(saved):
    path = saved("lda")
    offsets = _members(path)["offsets/w"].copy()
    offsets[-1] += 1
    _replace_array(path, "offsets/w", offsets)
    with pytest.raises(ValueError, match="offsets of 'w' must start at 0 and end at the number of rows"):
        load(path)


def test_missing_block_state(saved):
    path = saved("factor-analysis")
    metadata = _metadata(path)
    metadata["posterior"].pop("blocks")
    _rewrite(path, _members(path), metadata)
    with pytest.raises(ValueError, match=r"block states \[\], the graph has blocks \['latent'\]"):
        load(path)


def test_unknown_block_family(saved):
    path = saved("factor-analysis")
    metadata = _metadata(path)
    block = next(v for v in metadata["graph"]["variables"] if v["role"] == "block")
    block["family"] = "Popen"
    _rewrite(path, _members(path), metadata)
    with pytest.raises(ValueError, match="unknown family 'Popen'"):
        load(path)


def test_text_labels_with_object_dtype(saved):
    path = saved("hierarchical-text-labels")
    metadata = _metadata(path)
    metadata["model"]["fitted"]["group_labels_"]["dtype"] = "|O"
    _rewrite(path, _members(path), metadata)
    with pytest.raises(ValueError, match="group_labels_' must have a text dtype"):
        load(path)
