"""Small model builders shared by the tests."""

from __future__ import annotations

import warnings

import numpy as np

from fg_influence.exceptions import ConvergenceWarning
from fg_influence.families import Dirichlet, NormalWishart
from fg_influence.graph import CategoricalFactor, FactorGraph, GaussianMixtureFactor
from fg_influence.models import GaussianMixture


def mixture_graph(X: np.ndarray, n_components: int, *, alpha0: float = 1.0, beta0: float = 1.0,
                  nu0: float | None = None, scale0: np.ndarray | None = None) -> FactorGraph:
    """A Gaussian mixture declared with the graph API."""
    n, d = X.shape
    k = n_components
    nu0 = float(d) if nu0 is None else nu0
    scale0 = np.eye(d) if scale0 is None else scale0
    graph = FactorGraph()
    graph.add_plate("data", n)
    graph.add_plate("components", k)
    graph.add_global("weights", Dirichlet(np.full(k, alpha0)))
    graph.add_global(
        "components",
        NormalWishart(np.zeros((k, d)), np.full(k, beta0), np.tile(scale0, (k, 1, 1)), np.full(k, nu0)),
        plates=("components",),
    )
    graph.add_local("assignment", plate="data", categories="components")
    graph.add_observed("x", X, plate="data")
    graph.add_factor(CategoricalFactor("assignment_prior", "assignment", "weights"))
    graph.add_factor(GaussianMixtureFactor("likelihood", "x", "assignment", "components"))
    return graph


def clustered_data(rng: np.random.Generator, n: int, d: int, k: int, spread: float) -> np.ndarray:
    """n points around k centres drawn with standard deviation ``spread``."""
    centres = rng.normal(scale=spread, size=(k, d))
    labels = rng.integers(0, k, size=n)
    return centres[labels] + rng.normal(size=(n, d))


def fit_quietly(model: GaussianMixture, X: np.ndarray, **kwargs) -> GaussianMixture:
    """Fit without failing on a ConvergenceWarning (small random problems may stop at max_iter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, **kwargs)


def standardized_faithful() -> np.ndarray:
    from fg_influence.datasets import load_faithful

    X = load_faithful().data
    return (X - X.mean(axis=0)) / X.std(axis=0)
