"""Exact refits that leave the fit's local optimum, and mixture components left empty by a fit."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from fg_influence import GaussianMixture
from fg_influence.datasets import load_epil, load_faithful, load_galaxies, load_iris, load_penguins
from fg_influence.exceptions import EmptyComponentWarning, OtherOptimumWarning
from fg_influence.influence import posterior_kl, refit_without
from fg_influence.influence.exact import OPTIMUM_SCREEN_FACTOR, _restore_sites, refit_with_sites_restored
from fg_influence.models import DiagonalGaussianMixture, MixtureOfRegressions
from fg_influence.models.hmm import HiddenMarkovModel
from fg_influence.models.lda import LatentDirichletAllocation


def overlapping_clusters(seed: int, n: int = 100) -> np.ndarray:
    """n rows from three unit-variance clusters whose centres are 2 apart."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    return centres[rng.integers(3, size=n)] + rng.normal(size=(n, 2))


def three_component_fit(seed: int, random_state: int) -> GaussianMixture:
    """A 3-component fit from random responsibilities, run to the refits' tolerance."""
    model = GaussianMixture(3, init_params="random", random_state=random_state, tol=1e-12, max_iter=5000)
    return model.fit(overlapping_clusters(seed))


def expected_counts(posterior) -> np.ndarray:
    return posterior.locals["assignment"].sum(axis=0)


# Refits at a different optimum


def test_exact_warns_when_refit_swaps_components():
    # This fit leaves one component empty and sits at a local optimum from
    # which the refit without row 78 moves to another one.
    with pytest.warns(EmptyComponentWarning, match=r"fitted 3 components, but component \d \(.* rows\) has"):
        model = three_component_fit(seed=2, random_state=0)
    result = model.influence()
    with pytest.warns(OtherOptimumWarning) as caught:
        result.compute_exact([78, 27, 0, 1, 2])
    message = str(caught[0].message)
    assert "1 of 5 exact refits landed at a different local optimum than the fit (first positions: [78])" in message
    assert "refit the model from other starting points (more n_init where the model has it)" in message
    assert "labels" not in message


def test_other_optimum_warning_names_row_labels():
    with pytest.warns(EmptyComponentWarning):
        model = three_component_fit(seed=2, random_state=0)
    result = model.influence()
    result.row_labels = [f"row {i + 1}" for i in range(result.n_sites)]
    with pytest.warns(OtherOptimumWarning, match=r"first positions: \[78\], labels \['row 79'\]"):
        result.compute_exact([78, 27, 0, 1, 2])
    assert result.exact_other_optimum.tolist() == [True, False, False, False, False]


def test_other_optimum_flags_exported_and_saved(tmp_path):
    from fg_influence.io import load, save

    with pytest.warns(EmptyComponentWarning):
        model = three_component_fit(seed=2, random_state=0)
    result = model.influence()
    with pytest.warns(OtherOptimumWarning):
        result.compute_exact([78, 27, 0, 1, 2])
    frame = result.summary_frame()
    assert frame["exact_other_optimum"].iloc[78] is True
    assert frame["exact_other_optimum"].iloc[27] is False
    assert frame["exact_other_optimum"].iloc[3] is None
    assert result.to_dict()["exact"]["other_optimum"] == [True, False, False, False, False]
    save(result, tmp_path / "result.npz")
    loaded = load(tmp_path / "result.npz")
    assert loaded.exact_other_optimum.tolist() == [True, False, False, False, False]


def test_flagged_refit_moves_many_rows():
    # Evidence independent of the warning: removing one row of weight 1 moved
    # about 22 rows' worth of responsibility between the components. A
    # same-optimum refit of this fit moves up to about 3 (measured over all
    # 100 rows), so a move of more than 10 rows means a reassignment.
    with pytest.warns(EmptyComponentWarning):
        posterior = three_component_fit(seed=2, random_state=0).posterior_
    without_row = expected_counts(posterior) - posterior.locals["assignment"][78]
    moved = np.abs(expected_counts(refit_without(posterior, [78])) - without_row).max()
    assert moved > 10.0


def test_exact_warns_when_refit_empties_small_component():
    # This fit keeps a component of about 2 rows, which is no empty component,
    # but refits without rows 2 and 4 empty it.
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyComponentWarning)
        model = three_component_fit(seed=21, random_state=1)
    assert expected_counts(model.posterior_).min() > 1.0
    result = model.influence()
    with pytest.warns(OtherOptimumWarning, match=r"2 of 5 exact refits .* \(first positions: \[2, 4\]\)"):
        result.compute_exact([2, 4, 0, 1, 3])
    assert result.exact_other_optimum.tolist() == [True, True, False, False, False]


def standardized(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def complete_rows(X: np.ndarray) -> np.ndarray:
    return X[np.isfinite(X).all(axis=1)]


# Each case names the row with the largest exact KL over all rows (measured
# with compute_exact("all")). The test refits it with the 7 rows of smallest
# estimated KL, so its exact KL passes the screen and the check refits all
# the data from it.
SHIPPED_CASES = {
    "faithful": (lambda: load_faithful().data, 2, 5),
    "iris": (lambda: standardized(load_iris().data), 2, 41),
    "galaxies": (lambda: load_galaxies().data, 3, 79),
    "penguins": (lambda: standardized(complete_rows(load_penguins().data)), 3, 291),
}


@pytest.mark.parametrize("name", sorted(SHIPPED_CASES))
def test_shipped_data_do_not_warn(name):
    load, n_components, largest = SHIPPED_CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyComponentWarning)
        warnings.simplefilter("error", OtherOptimumWarning)
        result = GaussianMixture(n_components, random_state=0).fit(load()).influence()
        smallest = np.argsort(result.kl)[:7].tolist()
        result.compute_exact([largest] + smallest)
    assert not result.exact_other_optimum.any()
    assert result.exact_kl[0] >= OPTIMUM_SCREEN_FACTOR * np.median(result.exact_kl)


def test_separated_mixture_does_not_warn():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.repeat(centres, 20, axis=0) + rng.normal(size=(60, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyComponentWarning)
        warnings.simplefilter("error", OtherOptimumWarning)
        result = GaussianMixture(3, random_state=0).fit(X).influence()
        result.compute_exact("all")
    assert result.exact_other_optimum.shape == (60,)
    assert not result.exact_other_optimum.any()


def lda_posterior():
    rng = np.random.default_rng(0)
    counts = scipy.sparse.csr_matrix(rng.poisson(1.0, size=(20, 12)).astype(float))
    return LatentDirichletAllocation(2, random_state=0, tol=1e-12, max_iter=5000).fit(counts).posterior_


def test_restore_sites_merges_ragged_block():
    # Documents are ragged blocks: the removed document's word rows go back
    # in between the other documents' rows, which come from the refit.
    posterior = lda_posterior()
    fitted = posterior.locals["document_topics"]
    reduced = refit_without(posterior, [3]).locals["document_topics"]
    keep = np.arange(20) != 3
    merged = _restore_sites(fitted, reduced, keep)
    words = np.arange(fitted.offsets[3], fitted.offsets[4])
    np.testing.assert_array_equal(merged.gamma[keep], reduced.gamma)
    np.testing.assert_array_equal(merged.gamma[3], fitted.gamma[3])
    np.testing.assert_array_equal(merged.phi[words], fitted.phi[words])
    np.testing.assert_array_equal(np.delete(merged.phi, words, axis=0), reduced.phi)
    np.testing.assert_array_equal(merged.offsets, fitted.offsets)


def test_restored_refit_returns_to_lda_fit():
    posterior = lda_posterior()
    refit = refit_without(posterior, [3])
    restored = refit_with_sites_restored(posterior, refit, [3])
    moved = posterior_kl(posterior.globals, refit.globals)
    # A return to the fit leaves only the refits' rounding, far below the
    # tenth of the exact KL at which a refit counts as another optimum.
    assert posterior_kl(posterior.globals, restored.globals) < 1e-3 * moved


def test_restored_refit_returns_to_hmm_fit():
    data = load_epil().data
    y, subject, period = data[:, 0], data[:, 1].astype(int), data[:, 2]
    sequences = [y[subject == s][np.argsort(period[subject == s])] for s in np.unique(subject)]
    posterior = HiddenMarkovModel(2, tol=1e-12).fit(sequences).posterior_
    refit = refit_without(posterior, [0])
    restored = refit_with_sites_restored(posterior, refit, [0])
    # As for LDA: rounding only, far below a tenth of the exact KL.
    assert posterior_kl(posterior.globals, restored.globals) < 1e-3 * posterior_kl(posterior.globals, refit.globals)


# Empty components at fit time


def test_empty_component_warning_names_components():
    X = overlapping_clusters(seed=2, n=600)
    with pytest.warns(EmptyComponentWarning) as caught:
        model = GaussianMixture(5, init_params="random", random_state=0).fit(X)
    counts = expected_counts(model.posterior_)
    empty = np.flatnonzero(counts < 1.0)
    message = str(caught[0].message)
    used = counts.size - empty.size
    assert empty.size >= 2
    assert f"components {empty[0]} (" in message
    for component in empty[1:]:
        assert f"), {component} (" in message
    assert f"so the fit uses only {used}. " in message
    assert f"Fit {used} components, or more n_init" in message
    assert caught[0].filename == __file__


@pytest.mark.parametrize("make_fit", [
    pytest.param(lambda X: DiagonalGaussianMixture(5, random_state=0).fit(X), id="diagonal"),
    pytest.param(lambda X: MixtureOfRegressions(4, random_state=0).fit(X[:, :1], X[:, 1]), id="regressions"),
])
def test_other_mixtures_warn_on_empty_component(make_fit):
    X = overlapping_clusters(seed=2, n=300)
    with pytest.warns(EmptyComponentWarning, match=r"fitted \d components, but component") as caught:
        make_fit(X)
    # The warning points at the caller of fit, also through MixtureOfRegressions.fit.
    assert caught[0].filename == __file__


# Nearly constant columns


def test_nearly_constant_column_named():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({
        "a": rng.normal(size=300),
        "b": rng.normal(size=300),
        "depth": 5.0 + 1e-8 * rng.normal(size=300),
    })
    with pytest.raises(ValueError, match=r"lost positive definiteness") as caught:
        GaussianMixture(2, random_state=0).fit(X)
    message = str(caught.value)
    assert "X column 2 ('depth') is nearly constant far from 0" in message
    assert "its mean 5," in message
    assert "Centre and scale that column" in message
    assert "or drop it" in message
    assert "too few rows per component (300 rows for 2 components)" in message


def test_cli_note_gives_agreement_without_flagged_rows():
    from fg_influence.cli._options import other_optimum_note

    with pytest.warns(EmptyComponentWarning):
        model = three_component_fit(seed=2, random_state=0)
    result = model.influence()
    result.row_labels = [f"r{i}" for i in range(result.n_sites)]
    with pytest.warns(OtherOptimumWarning):
        result.compute_exact([78, 27, 0, 1, 2])
    line, labels = other_optimum_note(result)
    assert labels == ["r78"]
    assert line.startswith("1 of these refits landed at another local optimum (rows r78); without them: ")
    kept = result.exact_sites[1:]
    estimate, exact = result.kl[kept], result.exact_kl[1:]
    expected = np.median(np.abs(estimate - exact) / exact)
    assert line.endswith(f"median relative error {100 * expected:.3g}%")
    unflagged = model.influence()
    assert other_optimum_note(unflagged) == (None, [])


def test_group_exact_warns_when_refit_swaps_components():
    from fg_influence.influence import leave_group_out_kl

    with pytest.warns(EmptyComponentWarning):
        model = three_component_fit(seed=2, random_state=0)
    groups = [[78], [27], [0], [1], [2]]
    with pytest.warns(OtherOptimumWarning) as caught:
        values = leave_group_out_kl(model.posterior_, groups, method="exact")
    message = str(caught[0].message)
    assert "1 of 5 exact refits landed at a different local optimum than the fit" in message
    assert "first positions in groups: [0]" in message
    # The same refits as compute_exact's, so the same values.
    result = model.influence()
    with pytest.warns(OtherOptimumWarning):
        result.compute_exact([78, 27, 0, 1, 2])
    np.testing.assert_array_equal(values, result.exact_kl)


def test_group_exact_quiet_on_one_optimum():
    from fg_influence.influence import leave_group_out_kl

    model = GaussianMixture(2, random_state=0).fit(load_faithful().data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtherOptimumWarning)
        values = leave_group_out_kl(model.posterior_, [[0], [1], [2, 3]], method="exact")
    assert np.all(np.isfinite(values))


def test_cli_exact_rows_flag_other_optimum():
    # --method exact refits every row, and row 78's refit leaves the fit's
    # optimum (see test_exact_warns_when_refit_swaps_components).
    from fg_influence.cli._exact_influence import ExactInfluence

    with pytest.warns(EmptyComponentWarning):
        model = three_component_fit(seed=2, random_state=0)
    with pytest.warns(OtherOptimumWarning, match=r"1 of 100 exact refits .* \(first positions: \[78\]\)"):
        result = ExactInfluence(model.posterior_)
    assert np.flatnonzero(result.other_optimum).tolist() == [78]
