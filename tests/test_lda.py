"""Latent Dirichlet allocation: document blocks with an inner loop, sparse counts, division."""

import numpy as np
import pytest
import scipy.sparse
from scipy.stats import spearmanr

from fg_influence.datasets.stdlib_docstrings import load_stdlib_docstrings, tokenize
from fg_influence.influence import divide, posterior_kl
from fg_influence.models.lda import LatentDirichletAllocation, build_lda_graph


def synthetic_corpus(rng, n_documents=60, n_words=30, n_topics=3, length=40):
    """Documents drawn from topics that each put most mass on their own block of words."""
    topics = np.full((n_topics, n_words), 0.01)
    block = n_words // n_topics
    for k in range(n_topics):
        topics[k, k * block:(k + 1) * block] = 1.0
    topics /= topics.sum(axis=1, keepdims=True)
    proportions = rng.dirichlet(np.full(n_topics, 0.3), size=n_documents)
    counts = np.zeros((n_documents, n_words))
    for d in range(n_documents):
        words = rng.choice(n_words, size=length, p=proportions[d] @ topics)
        np.add.at(counts[d], words, 1.0)
    return scipy.sparse.csr_matrix(counts), topics


@pytest.fixture(scope="module")
def fitted():
    counts, topics = synthetic_corpus(np.random.default_rng(0))
    model = LatentDirichletAllocation(3, random_state=0, tol=1e-10).fit(counts)
    return model, counts, topics


def test_recovers_topics(fitted):
    model, _, topics = fitted
    # Each true topic is matched by a fitted topic with almost the same
    # words: 2400 words give topic-word probabilities to about 0.02.
    for k in range(3):
        distance = np.abs(model.topic_word_ - topics[k]).sum(axis=1).min()
        assert distance < 0.25


def test_kl_closed_form_matches_division(fitted):
    model, _, _ = fitted
    result = model.influence()
    for site in (0, 21, 59):
        divided = divide(model.posterior_, [site])
        # The closed form sums only over the document's words; rounding of
        # lgamma differences of size ~1e2 allows 1e-8 relative.
        assert result.kl[site] == pytest.approx(posterior_kl(model.posterior_.globals, divided), rel=1e-8)
    np.testing.assert_allclose(model.influence_by_topic().sum(axis=1), result.kl, rtol=1e-12)


def test_influence_agrees_with_refits(fitted):
    model, _, _ = fitted
    result = model.influence()
    result.compute_exact(list(range(0, 60, 4)))
    rho = spearmanr(result.kl[result.exact_sites], result.exact_kl).statistic
    # Measured 0.689 on these 15 documents (0.633 over all 60). Refits can
    # move another document's word to a different topic, which changes a
    # concentration near the prior's 0.01 and dominates the exact KL; the
    # division keeps the other documents fixed and cannot see that.
    assert rho >= 0.5


def test_long_off_topic_document_is_most_influential():
    rng = np.random.default_rng(1)
    counts, _ = synthetic_corpus(rng)
    dense = counts.toarray()
    dense[7] = 0.0
    dense[7, [0, 12, 25]] = 60.0
    result = LatentDirichletAllocation(3, random_state=0).fit(dense).influence()
    assert result.top(1)[0] == 7


def test_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        LatentDirichletAllocation(2).fit(np.array([[1.0, -1.0, 2.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="documents \\[1\\] have no words"):
        LatentDirichletAllocation(2).fit(np.array([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="n_topics \\(4\\) must be at most the vocabulary size \\(3\\)"):
        LatentDirichletAllocation(4).fit(np.array([[1.0, 1.0, 2.0], [1.0, 2.0, 0.0]]))
    with pytest.raises(ValueError, match="word index 5 is beyond the vocabulary of 3 words"):
        build_lda_graph([0, 5], [1.0, 2.0], [0, 1, 2], 3, 2, alpha=0.5, eta=0.1)
    with pytest.raises(ValueError, match="word counts must be non-negative"):
        build_lda_graph([0, 1], [1.0, -2.0], [0, 1, 2], 3, 2, alpha=0.5, eta=0.1)


def test_fractional_counts_rejected_with_values():
    with pytest.raises(ValueError, match=r"word counts must be integers, got \[0\.5, 1\.25\]; pass raw counts"):
        LatentDirichletAllocation(2).fit(np.array([[1.0, 0.5, 2.0], [1.25, 1.0, 1.0]]))


def test_tokenizer_drops_stop_words_and_short_words():
    assert tokenize("Return the IPv4 address of a socket, or None.") == ["ipv", "address", "socket"]


def test_stdlib_corpus_has_enough_documents():
    corpus = load_stdlib_docstrings()
    n_documents, n_words = corpus.counts.shape
    # CPython 3.10-3.13 give 2,500-3,000 documents after the cuts.
    assert n_documents >= 2000
    assert n_words == len(corpus.vocabulary)
    assert corpus.counts.min() >= 0
    assert np.all(np.diff(corpus.counts.indptr) > 0)
