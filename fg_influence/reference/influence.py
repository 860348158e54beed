"""Newton-step influence of removing sites from a MAP Gaussian mixture.

Removing the sites M from l(theta) = sum_i l_i - log p(theta) moves the
minimiser by approximately one Newton step on the reduced loss from theta*:

    theta^{\\M} - theta* ~ A^-1 sum_{i in M} grad l_i(theta*)

The methods differ in the matrix A:

* influence function (Cook 1986; Koh and Liang 2017): A = H, the exact
  Hessian of l, built as H_complete - I_missing;
* EM-influence (Zhu and Lee 2001): A = H_complete, the Hessian of the
  expected complete-data loss, which is block diagonal so each block is
  solved on its own (``hessian="complete"``); with ``hessian="divided"``
  each component block is H_k^{\\M}, the complete-data Hessian with the
  sites' terms removed, and the weights take the exact M-step without the
  sites, (|M| pi_k - sum_{i in M} gamma_ik) / (N - |M| + K alpha0 - K);
* missing-information correction: A = H_complete - I_missing applied to the
  EM-influence step, (H_complete - I_missing)^-1 H_complete delta_EM, which
  equals the influence function exactly.

All shifts are in the coordinates of :meth:`MixtureParameters.to_vector`
and are (value without the sites) minus (value at theta*).
"""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_site_indices
from .mixture_loss import (
    complete_hessian, component_hessians, missing_information, responsibilities, site_component_hessians,
    site_gradients, weight_hessian,
)
from .parameters import MixtureParameters, MixturePrior, block_size, check_parameters

HESSIANS = ("complete", "divided")


def group_matrix(groups, n_sites: int) -> np.ndarray:
    """Membership matrix of site groups, shape (G, N); None means every site on its own.

    Each entry of ``groups`` is a site index or a list of site indices.
    """
    if groups is None:
        return np.eye(n_sites)
    if isinstance(groups, (int, np.integer)):
        groups = [groups]
    matrix = np.zeros((len(groups), n_sites))
    for row, group in enumerate(groups):
        matrix[row, check_site_indices(group, n_sites, name="groups")] = 1.0
    return matrix


def _check(X, parameters, prior):
    X = as_float_array(X, "X", ndim=2)
    check_parameters(parameters, prior)
    if X.shape[1] != parameters.dim:
        raise ValueError(f"X must have {parameters.dim} columns like the parameters, got shape {X.shape}")
    return X


def influence_function(X, parameters: MixtureParameters, prior: MixturePrior, groups=None,
                       hessian_matrix: np.ndarray | None = None) -> np.ndarray:
    """Newton influence function H^-1 sum_{i in M} grad l_i for each group, shape (G, P).

    Parameters
    ----------
    X : array_like, shape (N, D)
    parameters : MixtureParameters
        Normally the MAP; the step is a Newton step from these parameters.
    prior : MixturePrior
    groups : None or sequence of int or of sequences of int
        None gives every site on its own (G = N).
    hessian_matrix : ndarray, shape (P, P), optional
        A precomputed exact Hessian (:func:`fg_influence.reference.hessian`).
    """
    X = _check(X, parameters, prior)
    if hessian_matrix is None:
        resp, _ = responsibilities(X, parameters)
        hessian_matrix = complete_hessian(X, parameters, prior, resp) - missing_information(X, parameters, resp)
    gradients = group_matrix(groups, X.shape[0]) @ site_gradients(X, parameters)
    return np.linalg.solve(hessian_matrix, gradients.T).T


def self_influence(X, parameters: MixtureParameters, prior: MixturePrior, groups=None,
                   hessian_matrix: np.ndarray | None = None) -> np.ndarray:
    """Cook's-distance-style scalar g^T H^-1 g with g = sum_{i in M} grad l_i, shape (G,).

    It equals the squared length of the influence-function step in the
    metric of H, so it is comparable with d^T H d for any other shift d.
    """
    X = _check(X, parameters, prior)
    gradients = group_matrix(groups, X.shape[0]) @ site_gradients(X, parameters)
    steps = influence_function(X, parameters, prior, groups, hessian_matrix)
    return np.einsum("gp,gp->g", gradients, steps)


def influence_on_test_loss(X_test, X, parameters: MixtureParameters, prior: MixturePrior, groups=None,
                        hessian_matrix: np.ndarray | None = None) -> np.ndarray:
    """First-order change of each test point's loss -log p(x_test | theta) when a group is removed, shape (M, G).

    Equal to grad l_test^T H^-1 sum_{i in M} grad l_i; positive values mean
    the test point is fitted worse without the group.
    """
    X = _check(X, parameters, prior)
    X_test = as_float_array(X_test, "X_test", ndim=2)
    if X_test.shape[1] != parameters.dim:
        raise ValueError(f"X_test must have {parameters.dim} columns, got shape {X_test.shape}")
    steps = influence_function(X, parameters, prior, groups, hessian_matrix)
    return site_gradients(X_test, parameters) @ steps.T


def em_influence(X, parameters: MixtureParameters, prior: MixturePrior, groups=None,
                 hessian: str = "complete", resp: np.ndarray | None = None) -> np.ndarray:
    """EM-influence: the Newton step with the complete-data Hessian, block by block, shape (G, P).

    Parameters
    ----------
    hessian : {"complete", "divided"}
        "complete" uses H_complete at theta*, so the correction of
        :func:`missing_information_correction` recovers the influence
        function exactly. "divided" removes the group's terms from each
        block; its weight step is the closed form
        (|M| pi_k - sum_{i in M} gamma_ik) / (N - |M| + K alpha0 - K),
        which is the exact M-step only when ``parameters`` is the MAP, and
        its mean step at fixed precision equals the mean shift of the
        divided variational posterior.
    resp : array_like, shape (N, K), optional
        Responsibilities to use in place of those at ``parameters``, for
        example a variational fit's, to compare the two methods at the same
        responsibilities.
    """
    X = _check(X, parameters, prior)
    if hessian not in HESSIANS:
        raise ValueError(f"hessian must be one of {HESSIANS}, got {hessian!r}")
    n = X.shape[0]
    k, d = parameters.n_components, parameters.dim
    size = block_size(d)
    alpha0 = prior.weight_concentration_prior
    members = group_matrix(groups, n)
    if resp is None:
        resp, _ = responsibilities(X, parameters)
    else:
        resp = as_float_array(resp, "resp", ndim=2, shape=(n, k))
        if np.any(resp < 0) or not np.allclose(resp.sum(axis=1), 1.0):
            raise ValueError("resp must be non-negative and each row must sum to 1")
    gradients = members @ site_gradients(X, parameters, resp)
    blocks = component_hessians(X, parameters, prior, resp)
    shifts = np.empty_like(gradients)

    # Weights: one (K - 1) x (K - 1) block.
    if hessian == "complete":
        weight_block = weight_hessian(parameters.weights, resp.sum(axis=0), alpha0)
        shifts[:, : k - 1] = np.linalg.solve(weight_block, gradients[:, : k - 1].T).T
    else:
        sizes = members.sum(axis=1)
        removed = members @ resp
        denominator = n - sizes + k * alpha0 - k
        shifts[:, : k - 1] = ((sizes[:, None] * parameters.weights - removed) / denominator[:, None])[:, : k - 1]

    # Components: one block per component, batched over groups for the divided Hessian.
    if hessian == "divided":
        site_blocks = site_component_hessians(X, parameters)
        removed_blocks = np.einsum("gn,nk,nkab->gkab", members, resp, site_blocks)
    for component in range(k):
        start = k - 1 + component * size
        right = gradients[:, start: start + size]
        if hessian == "complete":
            shifts[:, start: start + size] = np.linalg.solve(blocks[component], right.T).T
        else:
            divided = blocks[component][None] - removed_blocks[:, component]
            shifts[:, start: start + size] = np.linalg.solve(divided, right[:, :, None])[:, :, 0]
    return shifts


def missing_information_correction(X, parameters: MixtureParameters, prior: MixturePrior,
                                   em_shifts: np.ndarray) -> np.ndarray:
    """Add the missing information to EM-influence steps: (H_c - I_m)^-1 H_c delta_EM, shape (G, P).

    ``em_shifts`` must come from :func:`em_influence` with
    ``hessian="complete"`` at the same parameters; the result then equals
    :func:`influence_function`.
    """
    X = _check(X, parameters, prior)
    resp, _ = responsibilities(X, parameters)
    complete = complete_hessian(X, parameters, prior, resp)
    right = complete @ np.atleast_2d(em_shifts).T
    return np.linalg.solve(complete - missing_information(X, parameters, resp), right).T


def unpack_shifts(shifts: np.ndarray, n_components: int, dim: int) -> dict[str, np.ndarray]:
    """Split flat shifts (G, P) into weights (G, K), means (G, K, D) and precisions (G, K, D, D).

    The shift of the last weight is minus the sum of the others.
    """
    shifts = np.atleast_2d(shifts)
    k, d = n_components, dim
    weights = np.concatenate([shifts[:, : k - 1], -shifts[:, : k - 1].sum(axis=1, keepdims=True)], axis=1)
    blocks = shifts[:, k - 1:].reshape(shifts.shape[0], k, block_size(d))
    rows, cols = np.tril_indices(d)
    precisions = np.zeros((shifts.shape[0], k, d, d))
    precisions[:, :, rows, cols] = blocks[:, :, d:]
    precisions[:, :, cols, rows] = blocks[:, :, d:]
    return {"weights": weights, "means": blocks[:, :, :d].copy(), "precisions": precisions}
