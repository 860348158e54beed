"""Input guards of the models, saving and group influence: each bad input gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest

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
