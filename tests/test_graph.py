"""Factor-graph construction and validation."""

import numpy as np
import pytest

from fg_influence.families import Dirichlet, Gamma, NormalWishart
from fg_influence.graph import CategoricalFactor, FactorGraph, GaussianMixtureFactor, GraphError

from .helpers import mixture_graph


@pytest.fixture
def data():
    return np.random.default_rng(0).normal(size=(20, 2))


def test_mixture_graph_validates(data):
    graph = mixture_graph(data, 3)
    graph.validate()
    assert graph.site_plate == "data"
    assert graph.n_sites == 20
    local, global_ = graph.schedule()
    assert local == ["assignment"]
    assert set(global_) == {"weights", "components"}


def test_graph_is_networkx_dag(data):
    graph = mixture_graph(data, 2)
    edges = set(graph.nx_graph.edges)
    assert ("weights", "assignment_prior") in edges
    assert ("assignment_prior", "assignment") in edges
    assert ("likelihood", "x") in edges


def test_cycle_rejected(data):
    graph = mixture_graph(data, 2)
    # x feeds back into the assignment it is generated from.
    graph.add_factor(CategoricalFactor("feedback", "assignment", "x"))
    with pytest.raises(GraphError, match="cycle: .*assignment"):
        graph.validate()


def test_unobserved_leaf_rejected(data):
    graph = mixture_graph(data, 2)
    graph.add_global("unused", Gamma(1.0, 1.0))
    with pytest.raises(GraphError, match="'unused' is a leaf that is not observed"):
        graph.validate()


def test_observed_without_factor_rejected(data):
    graph = FactorGraph()
    graph.add_plate("data", 20)
    graph.add_observed("x", data, plate="data")
    with pytest.raises(GraphError, match="observed variable 'x' has no factor"):
        graph.validate()


def test_non_conjugate_weights_rejected(data):
    graph = FactorGraph()
    graph.add_plate("data", 20)
    graph.add_plate("components", 2)
    graph.add_global("weights", Gamma(np.ones(2), np.ones(2)))
    graph.add_global("components", NormalWishart(np.zeros((2, 2)), np.ones(2), np.tile(np.eye(2), (2, 1, 1)),
                                                 np.full(2, 2.0)), plates=("components",))
    graph.add_local("assignment", plate="data", categories="components")
    graph.add_observed("x", data, plate="data")
    graph.add_factor(CategoricalFactor("assignment_prior", "assignment", "weights"))
    graph.add_factor(GaussianMixtureFactor("likelihood", "x", "assignment", "components"))
    with pytest.raises(GraphError, match="not conjugate.*'weights' need a Dirichlet prior, got Gamma"):
        graph.validate()


def test_non_conjugate_components_rejected(data):
    graph = FactorGraph()
    graph.add_plate("data", 20)
    graph.add_plate("components", 2)
    graph.add_global("weights", Dirichlet(np.ones(2)))
    graph.add_global("components", Dirichlet(np.ones(2)), plates=("components",))
    graph.add_local("assignment", plate="data", categories="components")
    graph.add_observed("x", data, plate="data")
    graph.add_factor(CategoricalFactor("assignment_prior", "assignment", "weights"))
    graph.add_factor(GaussianMixtureFactor("likelihood", "x", "assignment", "components"))
    with pytest.raises(GraphError, match="'components' need a NormalWishart prior, got Dirichlet"):
        graph.validate()


def test_weight_plate_mismatch_rejected(data):
    graph = mixture_graph(data, 2)
    graph.variables["weights"].prior = Dirichlet(np.ones(3))
    with pytest.raises(GraphError, match="plate mismatch.*shape \\(3,\\).*size 2"):
        graph.validate()


def test_data_dimension_mismatch_rejected(data):
    graph = mixture_graph(data, 2)
    graph.variables["components"].prior = NormalWishart(
        np.zeros((2, 3)), np.ones(2), np.tile(np.eye(3), (2, 1, 1)), np.full(2, 3.0))
    with pytest.raises(GraphError, match="must have shape \\(N, 3\\)"):
        graph.validate()


def test_observed_rows_must_match_plate(data):
    graph = FactorGraph()
    graph.add_plate("data", 19)
    with pytest.raises(GraphError, match="20 rows but plate 'data' has size 19"):
        graph.add_observed("x", data, plate="data")


def test_unknown_plate_rejected():
    graph = FactorGraph()
    with pytest.raises(GraphError, match="plate 'data', which is not declared"):
        graph.add_local("z", plate="data", categories="components")


def test_unknown_variable_in_factor_rejected(data):
    graph = FactorGraph()
    graph.add_plate("data", 20)
    with pytest.raises(GraphError, match="refers to variable 'weights', which is not in the graph"):
        graph.add_factor(CategoricalFactor("f", "assignment", "weights"))


def test_duplicate_names_rejected(data):
    graph = mixture_graph(data, 2)
    with pytest.raises(GraphError, match="already exists"):
        graph.add_plate("data", 3)
    with pytest.raises(GraphError, match="already exists"):
        graph.add_global("weights", Dirichlet(np.ones(2)))


def test_prior_type_checked():
    graph = FactorGraph()
    with pytest.raises(TypeError, match="prior of 'w' must be a distribution"):
        graph.add_global("w", [1.0, 2.0])


def test_without_sites_drops_rows(data):
    graph = mixture_graph(data, 2)
    reduced = graph.without_sites(np.array([0, 5]))
    assert reduced.n_sites == 18
    np.testing.assert_array_equal(reduced.variables["x"].data, np.delete(data, [0, 5], axis=0))
    assert graph.n_sites == 20
