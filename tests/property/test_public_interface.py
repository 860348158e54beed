"""Random and extreme input at the public interface.

Hypothesis throws random shapes, dtypes (integers, booleans, objects,
strings, complex), NaN, infinities and extreme values at the public entry
points. Every call must either succeed with results free of NaN or raise a
ValueError or TypeError with a message. Any other exception type fails the
test, and so does a RuntimeWarning, which the helper turns into an error.
The inputs are tiny, so 1,000 examples per test stay fast.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fg_influence import ConvergenceWarning, GaussianMixture, ImproperDivisionWarning
from fg_influence import families
from fg_influence.influence import divide, site_messages

SPECIAL_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, 1.0, -1.0, 3.5]
DTYPES = [np.float64, np.float32, np.int64, np.bool_, np.complex128, object, "U5"]
ODD_SCALARS = [None, "1.5", b"2", 1 + 2j, True, object(), [1.0, [2.0]], {"a": 1}, np.float32(2.0)]


# Strategies


@st.composite
def numeric_arrays(draw, shape):
    """A float64 array of ``shape`` with random scale and, sometimes, one special value."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-8, 1.0, 1e3, 1e8]))
    values = rng.normal(scale=scale, size=shape)
    if values.size and draw(st.booleans()):
        values.flat[rng.integers(values.size)] = draw(st.sampled_from(SPECIAL_VALUES))
    return values


@st.composite
def anything_array_like(draw, max_dims: int = 3, max_side: int = 4, shape=None):
    """An input of any form: an array of any dtype and shape, a list, a ragged list or an odd scalar."""
    kind = draw(st.sampled_from(["array", "array", "array", "list", "ragged", "scalar", "odd"]))
    if kind == "scalar":
        return draw(st.one_of(st.sampled_from(SPECIAL_VALUES), st.integers(-5, 5)))
    if kind == "odd":
        return draw(st.sampled_from(ODD_SCALARS))
    if kind == "ragged":
        return [[1.0, 2.0], [3.0]]
    if shape is None:
        ndim = draw(st.integers(0, max_dims))
        shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=ndim, max_size=ndim)))
    values = draw(numeric_arrays(shape))
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == "U5":
        array = values.astype(str).astype("U5")
    elif dtype is np.complex128:
        array = values + 1j * draw(st.sampled_from([0.0, 1.0]))
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            array = values.astype(dtype)
    return array.tolist() if kind == "list" else array


def _positive(rng, shape, low=0.2):
    return low + rng.gamma(2.0, size=shape)


def _spd(rng, batch, dim):
    factor = rng.normal(size=batch + (dim, dim))
    return factor @ np.swapaxes(factor, -1, -2) + dim * np.eye(dim)


#: Valid constructor arguments of each family, from a Generator, a batch shape and a dimension.
VALID_FAMILY_ARGUMENTS = {
    "Beta": lambda rng, batch, dim: (_positive(rng, batch), _positive(rng, batch)),
    "Categorical": lambda rng, batch, dim: (rng.dirichlet(np.ones(dim + 1), size=batch),),
    "Dirichlet": lambda rng, batch, dim: (_positive(rng, batch + (dim + 1,)),),
    "Gamma": lambda rng, batch, dim: (_positive(rng, batch), _positive(rng, batch)),
    "MultivariateNormal": lambda rng, batch, dim: (rng.normal(size=batch + (dim,)), _spd(rng, batch, dim)),
    "NormalGamma": lambda rng, batch, dim: (rng.normal(size=batch + (dim,)), _spd(rng, batch, dim),
                                            _positive(rng, batch), _positive(rng, batch)),
    "NormalWishart": lambda rng, batch, dim: (rng.normal(size=batch + (dim,)), _positive(rng, batch),
                                              _spd(rng, batch, dim), dim + _positive(rng, batch)),
    "Wishart": lambda rng, batch, dim: (_spd(rng, batch, dim), dim + _positive(rng, batch)),
}


# Helpers


def call(function, *args, **kwargs):
    """Run ``function``; return (True, value), or (False, None) after a ValueError or TypeError.

    Any other exception propagates and fails the test, and so does a
    RuntimeWarning (overflow, invalid value, complex cast).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", ImproperDivisionWarning)
            return True, function(*args, **kwargs)
    except (ValueError, TypeError) as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        return False, None


def assert_no_nan(name, value):
    array = np.asarray(value, dtype=float)
    assert not np.any(np.isnan(array)), f"{name} contains NaN: {array}"


@functools.lru_cache(maxsize=1)
def fitted_model() -> GaussianMixture:
    rng = np.random.default_rng(20)
    X = np.vstack([rng.normal(-2.0, 1.0, size=(6, 2)), rng.normal(2.0, 1.0, size=(6, 2))])
    return GaussianMixture(n_components=2, random_state=0).fit(X)


# Hypothesis tests


SETTING_NAMES = ["n_components", "weight_concentration_prior", "mean_precision_prior",
                 "degrees_of_freedom_prior", "mean_prior", "covariance_prior"]


@st.composite
def mixture_inputs(draw):
    """Valid tiny data and settings with at most one of them (or the prediction data) replaced by anything."""
    n = draw(st.integers(2, 6))
    d = draw(st.integers(1, 2))
    X = draw(numeric_arrays((n, d)))
    if draw(st.booleans()):
        X[draw(st.integers(0, n - 1))] = X[0]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    settings_ = {
        "n_components": draw(st.integers(1, min(n, 3))),
        "weight_concentration_prior": draw(st.one_of(st.none(), st.floats(1e-3, 10.0))),
        "mean_precision_prior": draw(st.floats(1e-3, 10.0)),
        "degrees_of_freedom_prior": draw(st.one_of(st.none(), st.floats(d - 0.9, d + 10.0))),
        "mean_prior": draw(st.one_of(st.none(), st.just(rng.normal(size=d)))),
        "covariance_prior": draw(st.one_of(st.none(), st.just(_spd(rng, (), d)))),
    }
    new_X = draw(numeric_arrays((draw(st.integers(1, 4)), d)))
    broken = draw(st.sampled_from(["nothing", "X", "new_X"] + SETTING_NAMES))
    if broken == "X":
        X = draw(st.one_of(anything_array_like(), anything_array_like(shape=X.shape)))
    elif broken == "new_X":
        new_X = draw(st.one_of(anything_array_like(), anything_array_like(shape=new_X.shape)))
    elif broken == "n_components":
        settings_[broken] = draw(st.one_of(st.integers(-1, 8), st.sampled_from([2.0, "2", None, True])))
    elif broken != "nothing":
        settings_[broken] = draw(st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-3, 8),
            st.sampled_from(ODD_SCALARS), anything_array_like(max_dims=3, max_side=3)))
    return X, settings_, new_X


@settings(max_examples=1000)
@given(inputs=mixture_inputs(), seed=st.integers(0, 2**32 - 1))
def test_gaussian_mixture_on_random_input(inputs, seed):
    X, settings_, new_X = inputs
    # One thread: on tiny data, starting Numba's thread pool costs more than the work.
    model = GaussianMixture(**settings_, max_iter=5, tol=1e-6, random_state=seed, n_jobs=1)
    fitted, _ = call(model.fit, X)
    if not fitted:
        return
    for name in ("weights_", "means_", "precisions_", "covariances_", "lower_bound_"):
        assert_no_nan(name, getattr(model, name))

    ok, resp = call(model.predict_proba, new_X)
    if ok:
        assert_no_nan("predict_proba", resp)
    ok, density = call(model.score_samples, new_X)
    if ok:
        assert_no_nan("score_samples", density)

    ok, result = call(model.influence)
    if ok:
        assert_no_nan("kl", result.kl)
        ok, loo = call(lambda: result.loo_log_predictive)
        if ok:
            assert_no_nan("loo_log_predictive", loo)
        ok, shifts = call(result.shifts)
        if ok:
            for name, values in shifts.items():
                assert_no_nan(name, values)


@settings(max_examples=1000)
@given(
    sites=st.one_of(anything_array_like(max_dims=2, max_side=14), st.lists(st.integers(-14, 14))),
    variable=st.one_of(st.sampled_from(["weights", "components", "x", "assignment", ""]),
                       st.sampled_from(ODD_SCALARS)),
)
def test_division_on_random_sites(sites, variable):
    posterior = fitted_model().posterior_
    ok, messages = call(site_messages, posterior, variable, sites)
    if ok:
        for message in messages:
            assert_no_nan("site message", message)
    ok, divided = call(divide, posterior, sites)
    if ok:
        for name, family in divided.items():
            for value in family.natural_params():
                assert_no_nan(f"divided {name}", value)


FAMILY_NAMES = [name for name in families.__all__ if name != "ExponentialFamily"]


@settings(max_examples=1000)
@given(data=st.data(), family_name=st.sampled_from(FAMILY_NAMES))
def test_family_constructors_on_random_input(data, family_name):
    cls = getattr(families, family_name)
    names = list(inspect.signature(cls.__init__).parameters)[1:]
    if family_name in VALID_FAMILY_ARGUMENTS and data.draw(st.booleans(), label="start valid"):
        # Start from valid arguments and break at most one of them.
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        batch = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2), label="batch"))
        dim = data.draw(st.integers(1, 3), label="dim")
        arguments = list(VALID_FAMILY_ARGUMENTS[family_name](rng, batch, dim))
        broken = data.draw(st.integers(-1, len(names) - 1), label="broken argument")
        if broken >= 0:
            arguments[broken] = data.draw(st.one_of(
                anything_array_like(max_dims=3, max_side=3),
                anything_array_like(shape=np.shape(arguments[broken])),
            ), label=names[broken])
    else:
        arguments = [data.draw(anything_array_like(max_dims=3, max_side=3), label=name) for name in names]
    ok, family = call(cls, *arguments)
    if not ok:
        return
    ok, natural = call(family.natural_params)
    if ok:
        for value in natural:
            assert_no_nan(f"{family_name} natural parameters", value)


# Inputs are never modified


def _frozen_copy(value):
    return value.copy(deep=True) if hasattr(value, "copy") and hasattr(value, "columns") else np.array(value, copy=True)


def test_public_functions_leave_inputs_unchanged():
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(-2.0, 1.0, size=(10, 2)), rng.normal(2.0, 1.0, size=(10, 2))])
    frame = pandas.DataFrame(X, columns=["a", "b"], index=[f"r{i}" for i in range(20)])
    mean_prior = np.array([0.5, -0.5])
    covariance_prior = np.array([[2.0, 0.3], [0.3, 1.0]])
    init_resp = np.full((20, 2), 0.5)
    sites = np.array([3, 1])
    inputs = [X, frame, mean_prior, covariance_prior, init_resp, sites]
    before = [_frozen_copy(value) for value in inputs]

    model = GaussianMixture(2, mean_prior=mean_prior, covariance_prior=covariance_prior,
                            random_state=0).fit(X, init_resp=init_resp)
    GaussianMixture(2, random_state=0).fit(frame)
    model.predict_proba(X)
    model.score_samples(frame)
    result = model.influence()
    result.summary_frame()
    result.to_dict()
    divide(model.posterior_, sites)
    site_messages(model.posterior_, "components", sites)
    result.compute_exact(sites)
    families.NormalWishart(mean_prior, 1.0, covariance_prior, 3.0)
    families.Wishart(covariance_prior, 3.0)
    families.Dirichlet(mean_prior + 1.0)

    for original, value in zip(before, inputs):
        if hasattr(value, "columns"):
            pandas.testing.assert_frame_equal(value, original)
        else:
            np.testing.assert_array_equal(value, original)


def test_fit_leaves_prior_settings_unchanged():
    X = np.random.default_rng(4).normal(size=(12, 2))
    mean_prior = [0.0, 1.0]
    model = GaussianMixture(2, mean_prior=mean_prior, random_state=0).fit(X)
    assert model.mean_prior is mean_prior
    assert mean_prior == [0.0, 1.0]


# Numerical stress cases


def _faithful_like(seed: int = 0, n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = n // 2
    return np.vstack([rng.normal([-1.0, -1.0], 0.4, size=(half, 2)),
                      rng.normal([1.0, 1.0], 0.4, size=(n - half, 2))])


def _check_finite_fit(model, X):
    result = model.influence()
    assert np.all(np.isfinite(model.means_))
    assert np.all(np.isfinite(model.covariances_))
    assert not np.any(np.isnan(result.kl))
    assert not np.any(np.isnan(result.loo_log_predictive))
    assert np.all(np.isfinite(model.score_samples(X)))
    return result


@pytest.mark.parametrize("factor", [1e-8, 1e8])
def test_scaled_data_gives_scaled_fit(factor):
    X = _faithful_like()
    base = GaussianMixture(2, random_state=0).fit(X)
    scaled = GaussianMixture(2, random_state=0).fit(X * factor)
    base_result = base.influence()
    scaled_result = _check_finite_fit(scaled, X * factor)
    # The default priors follow the data's mean and covariance, so the model is
    # scale-equivariant and KL is invariant; 1e-6 allows rounding in the
    # Cholesky factors at 1e-16 scale ratios.
    np.testing.assert_allclose(np.sort(scaled.means_, axis=0), np.sort(base.means_, axis=0) * factor,
                               rtol=1e-6)
    np.testing.assert_allclose(np.sort(scaled_result.kl), np.sort(base_result.kl), rtol=1e-6)


def test_data_far_from_origin_fails_with_advice():
    X = _faithful_like() + 1e9
    with pytest.raises(ValueError, match=r"nearly constant far from 0.*Centre and scale that column"):
        GaussianMixture(2, random_state=0).fit(X)


def test_duplicated_rows_have_equal_influence():
    X = np.repeat(_faithful_like(n=20), 3, axis=0)
    model = GaussianMixture(2, random_state=0).fit(X)
    result = _check_finite_fit(model, X)
    # Copies of a row have identical responsibilities, hence identical KL.
    np.testing.assert_array_equal(result.kl[0::3], result.kl[1::3])


def test_identical_rows_rejected_without_warning():
    # Identical rows make every column constant, which fit rejects before
    # CAVI can shrink a component's variance towards 0.
    X = np.ones((10, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match=r"X column 0 is constant.*constant columns: \[0, 1\]"):
            GaussianMixture(3, random_state=0).fit(X)


def test_component_that_empties_keeps_finite_results():
    X = _faithful_like()
    # A weight prior far below 1 lets CAVI drain the surplus components.
    model = GaussianMixture(5, weight_concentration_prior=1e-3, random_state=0).fit(X)
    result = _check_finite_fit(model, X)
    assert np.sum(model.weights_ > 0.01) == 2
    assert np.all(np.isfinite(result.kl) | result.improper)


def test_more_components_than_data_support():
    X = _faithful_like(n=12)
    model = GaussianMixture(12, random_state=0).fit(X)
    result = _check_finite_fit(model, X)
    assert result.kl.shape == (12,)


def test_more_components_than_rows_is_rejected():
    with pytest.raises(ValueError, match=r"n_components must be at most the number of rows \(12\), got 13"):
        GaussianMixture(13).fit(_faithful_like(n=12))
