"""The mixture density network example: exact Hessians and the missing-information identity."""

import pathlib
import runpy

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mdn_figure1.py"


@pytest.fixture(scope="module")
def mdn():
    return runpy.run_path(str(EXAMPLE), run_name="mdn_figure1")


@pytest.fixture(scope="module")
def quick_result(mdn):
    return mdn["run"](**mdn["QUICK"])


def test_missing_information_identity_on_quick_run(quick_result):
    # Complex-step Hessians are exact to rounding, so H_complete - I_missing
    # matches H to about 1e-15 relative (measured 1.0e-15); the required bound is 1e-6.
    assert quick_result.identity_error < 1e-6


def test_em_plus_missing_information_is_influence_function(quick_result):
    scale = np.abs(quick_result.influence_function).max()
    # Two solves with the Hessian after a product: rounding times its
    # condition number (measured difference 5e-11 of the largest entry).
    np.testing.assert_allclose(quick_result.em_plus_missing, quick_result.influence_function, rtol=0,
                               atol=1e-6 * scale)


def test_em_influence_differs_from_influence_function(quick_result):
    # Without the missing information the steps differ visibly; the identity
    # above would be empty if they did not.
    difference = np.abs(quick_result.em_influence - quick_result.influence_function).max()
    assert difference > 1e-3 * np.abs(quick_result.influence_function).max()


def test_gradient_matches_finite_differences(mdn):
    rng = np.random.default_rng(1)
    inputs, targets = mdn["bishop_data"](40, rng)
    weights = mdn["initial_weights"](rng)
    decay = 1e-3

    def objective(w):
        return mdn["site_losses"](w, inputs, targets).sum() + 0.5 * inputs.size * decay * w @ w

    numeric = np.array([(objective(weights + 1e-6 * e) - objective(weights - 1e-6 * e)) / 2e-6
                        for e in np.eye(weights.size)])
    analytic = mdn["loss_gradient"](weights, inputs, targets, decay)
    # Central differences with step 1e-6: truncation ~1e-12 and rounding
    # ~eps * |loss| / 1e-6 ~ 1e-9 against gradients of order 1-10.
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6 * np.abs(analytic).max())


def test_complex_step_hessian_matches_finite_differences(mdn):
    rng = np.random.default_rng(2)
    inputs, targets = mdn["bishop_data"](40, rng)
    weights = mdn["initial_weights"](rng)
    decay = 1e-3
    full, _, _ = mdn["hessians"](weights, inputs, targets, decay)
    columns = [(mdn["loss_gradient"](weights + 1e-5 * e, inputs, targets, decay)
                - mdn["loss_gradient"](weights - 1e-5 * e, inputs, targets, decay)) / 2e-5
               for e in np.eye(weights.size)]
    numeric = np.array(columns).T
    # Central differences of the analytic gradient with step 1e-5: truncation
    # ~1e-10 and rounding ~eps * |grad| / 1e-5 ~ 1e-10 relative to the
    # largest entry (measured 1.4e-10).
    np.testing.assert_allclose(full, numeric, rtol=0, atol=1e-7 * np.abs(full).max())


def test_quick_run_reports_overlaps(mdn, capsys):
    mdn["main"]([])
    output = capsys.readouterr().out
    assert "top-10 overlap" in output
    assert "top-50 overlap" in output
