"""Properties of the linear-response correction for LDA on small random corpora.

J, both as the dense matrix and as the matrix-free product, is checked
against central finite differences of the library's own CAVI map: the
``LDAFactor``'s inner loop (run tightly) from perturbed topics, then its
message to the topics. Division plus the response term is checked against
one Newton step on the fixed-point equations without a document, with the
Newton Jacobian also taken by finite differences of that map.
"""

from dataclasses import replace
from unittest import mock

import numpy as np
import scipy.sparse
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fg_influence.families import Dirichlet
from fg_influence.graph import lda_factors
from fg_influence.graph.blocks import BlockState
from fg_influence.influence import linear_response_lda as lr
from fg_influence.models.lda import LatentDirichletAllocation

seeds = st.integers(0, 2**32 - 1)

#: Inner-loop settings of the map under test; the finite differences divide
#: its error by the step, so it runs to rounding.
TIGHT_INNER = {"INNER_TOL": 1e-14, "MAX_INNER": 100_000}


def random_corpus(rng, n_documents, n_words, n_topics):
    """Documents of 5 to 30 tokens drawn from random topics, as a CSR count matrix."""
    topics = rng.dirichlet(np.full(n_words, 0.5), size=n_topics)
    counts = np.zeros((n_documents, n_words))
    for d in range(n_documents):
        proportions = rng.dirichlet(np.full(n_topics, 0.5))
        words = rng.choice(n_words, size=int(rng.integers(5, 31)), p=proportions @ topics)
        np.add.at(counts[d], words, 1.0)
    return scipy.sparse.csr_matrix(counts)


def cavi_map(posterior, concentration, graph=None):
    """One CAVI iteration from topics ``concentration``: the factor's inner loop, then eta + messages.

    Returns the new concentration (K, V) and the document blocks.
    """
    graph = posterior.graph if graph is None else graph
    factor = graph.factors["words"]
    n_documents = graph.variables[factor.observed].offsets.size - 1
    # update_block reads only the number of topics from the current block.
    current = BlockState({"gamma": np.ones((n_documents, concentration.shape[0]))})
    state = replace(posterior, graph=graph, globals={"topics": Dirichlet(concentration)},
                    locals={factor.block: current})
    with mock.patch.multiple(lda_factors, **TIGHT_INNER):
        block, _ = factor.update_block(factor.block, state)
    state.locals = {factor.block: block}
    prior = graph.variables["topics"].prior.concentration
    return prior + factor.message("topics", state)[0], block


def polished_fit(seed, n_documents, n_words, n_topics, alpha, eta):
    """A fit moved onto the fixed point of the tight map, with its blocks at that fixed point."""
    rng = np.random.default_rng(seed)
    counts = random_corpus(rng, n_documents, n_words, n_topics)
    model = LatentDirichletAllocation(n_topics, doc_topic_prior=alpha, topic_word_prior=eta, tol=1e-13,
                                      max_iter=5000, random_state=int(rng.integers(2**31))).fit(counts)
    posterior = model.posterior_
    concentration = posterior.globals["topics"].concentration
    for _ in range(3000):
        updated, block = cavi_map(posterior, concentration)
        step = np.abs(updated - concentration).max()
        concentration = updated
        if step < 1e-12 * concentration.max():
            break
    return replace(posterior, globals={"topics": Dirichlet(concentration)},
                   locals={"document_topics": block}), step < 1e-12 * concentration.max()


def gamma_moves_smoothly(posterior, lower, upper, graph=None):
    """False if some document's inner loop lands in another basin between two topics (a jump)."""
    _, before = cavi_map(posterior, lower, graph)
    _, after = cavi_map(posterior, upper, graph)
    return np.abs(after.gamma - before.gamma).max() < 1e-3 * before.gamma.max()


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n_documents=st.integers(6, 14), n_words=st.integers(5, 10), n_topics=st.integers(2, 3),
       alpha=st.floats(0.1, 1.0), eta=st.floats(0.01, 0.5))
def test_jacobian_matches_finite_differences(seed, n_documents, n_words, n_topics, alpha, eta):
    posterior, settled = polished_fit(seed, n_documents, n_words, n_topics, alpha, eta)
    try:
        system = lr.build_lda_response_system(posterior, warn=False)
    except lr.SingularResponseError:
        # A saddle of CAVI or a document at an unstable inner fixed point.
        # J is still defined there, but the system rejects it. Such draws are rare.
        assume(False)
    concentration = system.coordinates
    rng = np.random.default_rng(seed)

    # A random direction scaled by lambda keeps lambda +- h x positive.
    direction = concentration * rng.standard_normal(concentration.shape)
    h = 1e-5
    assume(gamma_moves_smoothly(posterior, concentration - h * direction, concentration + h * direction))
    plus, _ = cavi_map(posterior, concentration + h * direction)
    minus, _ = cavi_map(posterior, concentration - h * direction)
    finite = (plus - minus) / (2 * h)

    product = system.jacobian_product(direction)
    dense = (system.jacobian @ direction.reshape(-1)).reshape(concentration.shape)
    scale = np.abs(finite).max()
    # Central differences with a step of 1e-5 relative: truncation ~h^2
    # (1e-10) relative, and the map's rounding and inner-loop error (~1e-13
    # of its values) divided by h.
    tolerance = 1e-7 * scale + 1e-13 * np.abs(plus).max() / h
    assert np.abs(product - finite).max() <= tolerance
    assert np.abs(dense - finite).max() <= tolerance
    # The matrix-free product leaves out topics with phi below
    # ACTIVE_PHI_TOL (1e-10), which moves entries by that much times the
    # counts (up to 30), the middle matrices and |H x|: allow 1e3 times it.
    stretched = np.abs(system.hessian_product(direction)).max()
    assert np.abs(product - dense).max() <= 1e-7 * scale + 1e3 * lr.ACTIVE_PHI_TOL * stretched


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n_documents=st.integers(6, 12), n_words=st.integers(5, 8), n_topics=st.integers(2, 3),
       alpha=st.floats(0.1, 1.0), eta=st.floats(0.05, 0.5))
def test_division_plus_response_is_one_newton_step(seed, n_documents, n_words, n_topics, alpha, eta):
    posterior, settled = polished_fit(seed, n_documents, n_words, n_topics, alpha, eta)
    assume(settled)
    try:
        system = lr.build_lda_response_system(posterior, warn=False)
    except lr.SingularResponseError:
        assume(False)
    site = int(np.random.default_rng(seed).integers(n_documents))
    concentration = system.coordinates
    shape = concentration.shape

    # F(g) = g - eta - S_without_d(g) on the corpus without the document,
    # and its Jacobian by central differences along each coordinate.
    graph = posterior.graph.without_sites([site])

    def fixed_point_residual(coords):
        return coords - cavi_map(posterior, coords, graph)[0]

    h = 1e-6
    probe = h * concentration * np.random.default_rng(seed + 1).standard_normal(shape)
    assume(gamma_moves_smoothly(posterior, concentration - probe, concentration + probe, graph))
    columns = []
    for index in range(concentration.size):
        step = np.zeros(concentration.size)
        step[index] = h * concentration.reshape(-1)[index]
        step = step.reshape(shape)
        difference = fixed_point_residual(concentration + step) - fixed_point_residual(concentration - step)
        columns.append(difference.reshape(-1) / (2 * step.reshape(-1)[index]))
    derivative = np.stack(columns, axis=1)
    newton = concentration - np.linalg.solve(derivative, fixed_point_residual(concentration).reshape(-1)).reshape(shape)

    analytic = lr.newton_corrected_coordinates(system, site)
    division = concentration - system.site_messages([site])[0]
    response = analytic - division
    # A fit with one topic holding every word has no response to check.
    assume(np.abs(response).max() > 1e-6 * np.abs(concentration - division).max())
    scale = np.abs(response).max()
    # The finite-difference Jacobian is accurate to ~1e-7 relative (see the
    # test above) and (I - J + J_d)^-1 amplifies it by its condition number
    # (at most a few hundred here), so the response agrees to 1e-4 of its size.
    # The whole Newton step (about the document's message) also carries the
    # differences' rounding: measured 2e-9 of its size where the response was
    # 1.4e-5 of the step, so allow 1e-8 of the step.
    step_size = np.abs(newton - concentration).max()
    assert np.abs(newton - analytic).max() <= 1e-4 * scale + 1e-8 * step_size
    # Division alone misses the response: the check above is not vacuous.
    assert np.abs(newton - division).max() > 10 * np.abs(newton - analytic).max()
