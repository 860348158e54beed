"""Streaming Gaussian-mixture CAVI and all-site summaries over a memmap and an iterator of chunks."""

import tracemalloc

import numpy as np
import pytest

from fg_influence.inference.cavi import update_local
from fg_influence.inference.streaming import (
    fit_mixture_streaming, iter_site_summaries, site_summaries,
)
from fg_influence.influence import InfluenceResult
from fg_influence.models import GaussianMixture

N, D, K = 2500, 3, 3
ITERATIONS = 15


def blobs(seed, n=N):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(K, D))
    return centres[rng.integers(K, size=n)] + rng.normal(size=(n, D))


@pytest.fixture
def memmap_data(tmp_path):
    X = blobs(1)
    path = tmp_path / "rows.f64"
    mapped = np.memmap(path, dtype=np.float64, mode="w+", shape=X.shape)
    mapped[:] = X
    mapped.flush()
    return X, np.memmap(path, dtype=np.float64, mode="r", shape=X.shape)


@pytest.mark.filterwarnings("ignore::fg_influence.exceptions.ConvergenceWarning")
def test_streaming_fit_matches_in_memory_cavi(memmap_data):
    X, mapped = memmap_data
    fit = fit_mixture_streaming(mapped, K, chunk_size=400, max_iter=ITERATIONS, tol=0.0, random_state=7,
                                warn=False)
    # The streaming start is one flat-Dirichlet draw of shape (N, K) taken chunk by chunk.
    init = np.random.default_rng(7).dirichlet(np.ones(K), size=N)
    model = GaussianMixture(K, max_iter=ITERATIONS, tol=0.0).fit(X, init_resp=init)
    # Chunked sums add the same terms in another grouping: agreement to
    # rounding, amplified by 15 iterations, stays far below 1e-8.
    np.testing.assert_allclose(fit.components.mean, model.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.weights.concentration, model.weight_concentration_, rtol=1e-8)
    np.testing.assert_allclose(fit.components.dof, model.degrees_of_freedom_, rtol=1e-8)
    np.testing.assert_allclose(fit.elbo_history, model.posterior_.elbo_history, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::fg_influence.exceptions.ConvergenceWarning")
def test_streaming_summaries_match_influence_result(memmap_data):
    X, mapped = memmap_data
    fit = fit_mixture_streaming(mapped, K, chunk_size=333, max_iter=ITERATIONS, tol=0.0, random_state=3,
                                warn=False)
    init = np.random.default_rng(3).dirichlet(np.ones(K), size=N)
    model = GaussianMixture(K, max_iter=ITERATIONS, tol=0.0).fit(X, init_resp=init)
    # The streaming summaries use responsibilities from the final posterior.
    update_local(model.posterior_, "assignment")
    expected = InfluenceResult(model.posterior_)
    values = site_summaries(fit, mapped, chunk_size=333)
    np.testing.assert_array_equal(values["improper"], expected.improper)
    # Same formulas on parameters that agree to ~1e-10 relative (see above).
    np.testing.assert_allclose(values["kl"], expected.kl, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(values["loo_log_predictive"], expected.loo_log_predictive, rtol=1e-8)
    np.testing.assert_allclose(values["mean_shift_norm"], expected.mean_shift_norm, rtol=1e-6, atol=1e-12)


def test_iterator_source_matches_memmap(memmap_data):
    X, mapped = memmap_data

    def chunks():
        for start in range(0, N, 700):
            yield X[start:start + 700]

    from_memmap = fit_mixture_streaming(mapped, K, chunk_size=700, max_iter=5, tol=0.0, random_state=0,
                                        warn=False)
    from_iterator = fit_mixture_streaming(chunks, K, max_iter=5, tol=0.0, random_state=0, warn=False)
    # Identical chunks in identical order: bitwise equal.
    np.testing.assert_array_equal(from_iterator.components.mean, from_memmap.components.mean)
    first = [start for start, _ in iter_site_summaries(from_iterator, chunks)]
    assert first == list(range(0, N, 700))


def test_streaming_memory_bounded_by_chunk(tmp_path):
    n = 60_000
    path = tmp_path / "large.f64"
    mapped = np.memmap(path, dtype=np.float64, mode="w+", shape=(n, D))
    mapped[:] = np.random.default_rng(5).normal(size=(n, D))
    mapped.flush()
    data = np.memmap(path, dtype=np.float64, mode="r", shape=(n, D))
    chunk = 2_000
    tracemalloc.start()
    try:
        fit = fit_mixture_streaming(data, K, chunk_size=chunk, max_iter=2, tol=0.0, random_state=0, warn=False)
        for _ in iter_site_summaries(fit, data, chunk_size=chunk):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # tracemalloc sees numpy's allocations (not Numba's): a handful of
    # chunk-sized arrays, below one copy of the data (n * D * 8 = 1.44 MB).
    # Measured peak: 0.44 MB, about 9 arrays of chunk * max(D, K) float64.
    chunk_bytes = chunk * max(D, K) * 8
    assert peak < 12 * chunk_bytes
    assert peak < n * D * 8 / 2


def test_streaming_rejects_bad_input(memmap_data):
    X, mapped = memmap_data
    with pytest.raises(ValueError, match="must be an \\(N, D\\) array"):
        fit_mixture_streaming(X[:, 0], K)
    with pytest.raises(ValueError, match="must have 3 columns like the first"):
        fit_mixture_streaming(lambda: iter([X[:10], X[:10, :2]]), K)
    bad = X.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        fit_mixture_streaming(bad, K)
    with pytest.raises(ValueError, match="chunk_size"):
        fit_mixture_streaming(mapped, K, chunk_size=0)
    fit = fit_mixture_streaming(mapped, K, max_iter=2, tol=0.0, random_state=0, warn=False)
    with pytest.raises(ValueError, match="data has 100 rows but the fit saw 2500"):
        site_summaries(fit, X[:100])
