"""The regularised negative log-likelihood of a Gaussian mixture, its gradient and exact Hessian.

The loss is l(theta) = sum_i l_i(theta) - log p(theta) with
l_i = -log sum_k pi_k N(x_i | mu_k, Lambda_k^-1) and p the Dirichlet and
Normal-Wishart prior. The Hessian is built by the missing-information
principle (Louis 1982):

    H = H_complete - I_missing

where H_complete is the Hessian of the expected complete-data loss
-sum_i sum_k gamma_ik log[pi_k p_k(x_i)] - log p(theta) at fixed
responsibilities gamma, and I_missing = sum_i Cov_{z_i ~ gamma_i}[s_i(z_i)]
with s_i(k) = grad log[pi_k p_k(x_i)], the complete-data score. The
identity holds at every theta, not only at the MAP, and is checked against
finite differences of :func:`gradient` in the tests.

Every function is vectorised over sites; coordinates are those of
:meth:`MixtureParameters.to_vector`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, logsumexp, multigammaln

from .parameters import MixtureParameters, MixturePrior, block_size, n_parameters, symmetric_basis, to_free_gradient


def _residuals(X, parameters):
    """u_ik = x_i - mu_k, shape (N, K, D)."""
    return X[:, None, :] - parameters.means[None, :, :]


def component_log_densities(X: np.ndarray, parameters: MixtureParameters) -> np.ndarray:
    """log pi_k + log N(x_i | mu_k, Lambda_k^-1), shape (N, K)."""
    d = parameters.dim
    residuals = _residuals(X, parameters)
    quadratic = np.einsum("nka,kab,nkb->nk", residuals, parameters.precisions, residuals)
    _, log_det = np.linalg.slogdet(parameters.precisions)
    return np.log(parameters.weights) + 0.5 * log_det - 0.5 * d * np.log(2 * np.pi) - 0.5 * quadratic


def responsibilities(X: np.ndarray, parameters: MixtureParameters) -> tuple[np.ndarray, np.ndarray]:
    """Posterior probabilities gamma_ik of the components and the site losses l_i.

    Returns
    -------
    resp : ndarray, shape (N, K)
    site_loss : ndarray, shape (N,)
        l_i = -log p(x_i | theta).
    """
    logits = component_log_densities(X, parameters)
    log_norm = logsumexp(logits, axis=1)
    return np.exp(logits - log_norm[:, None]), -log_norm


def log_prior(parameters: MixtureParameters, prior: MixturePrior) -> float:
    """log p(theta): Dirichlet density of the weights plus Normal-Wishart density of each component."""
    k, d = parameters.n_components, parameters.dim
    alpha0, beta0, nu0 = prior.weight_concentration_prior, prior.mean_precision_prior, prior.degrees_of_freedom_prior
    value = gammaln(k * alpha0) - k * gammaln(alpha0) + (alpha0 - 1.0) * np.log(parameters.weights).sum()

    _, log_det = np.linalg.slogdet(parameters.precisions)
    offsets = parameters.means - prior.mean_prior
    quadratic = np.einsum("ka,kab,kb->k", offsets, parameters.precisions, offsets)
    normal = 0.5 * d * np.log(beta0 / (2 * np.pi)) + 0.5 * log_det - 0.5 * beta0 * quadratic

    _, log_det_covariance = np.linalg.slogdet(prior.covariance_prior)
    trace = np.einsum("ab,kba->k", prior.covariance_prior, parameters.precisions)
    wishart = (0.5 * (nu0 - d - 1) * log_det - 0.5 * trace - 0.5 * nu0 * d * np.log(2.0)
               + 0.5 * nu0 * log_det_covariance - multigammaln(0.5 * nu0, d))
    return float(value + normal.sum() + wishart.sum())


def loss(X: np.ndarray, parameters: MixtureParameters, prior: MixturePrior) -> float:
    """l(theta) = sum_i l_i(theta) - log p(theta)."""
    _, site_loss = responsibilities(X, parameters)
    return float(site_loss.sum() - log_prior(parameters, prior))


# Gradients


def _weight_score_matrix(weights: np.ndarray) -> np.ndarray:
    """A[k, j] = d log pi_k / d pi_j in the K - 1 free weight coordinates, shape (K, K - 1)."""
    k = weights.size
    matrix = np.zeros((k, k - 1))
    matrix[np.arange(k - 1), np.arange(k - 1)] = 1.0 / weights[:-1]
    matrix[k - 1, :] = -1.0 / weights[-1]
    return matrix


def complete_scores(X: np.ndarray, parameters: MixtureParameters) -> np.ndarray:
    """Complete-data scores s_i(k) = grad log[pi_k p_k(x_i)] in theta, shape (N, K, P).

    Row (i, k) is zero outside the weight coordinates and component k's block.
    """
    n = X.shape[0]
    k, d = parameters.n_components, parameters.dim
    size = block_size(d)
    residuals = _residuals(X, parameters)
    covariances = parameters.covariances

    scores = np.zeros((n, k, n_parameters(k, d)))
    scores[:, :, : k - 1] = _weight_score_matrix(parameters.weights)[None]
    mean_scores = np.einsum("kab,nkb->nka", parameters.precisions, residuals)
    precision_scores = to_free_gradient(0.5 * covariances[None] - 0.5 * residuals[..., :, None] * residuals[..., None, :])
    for component in range(k):
        start = k - 1 + component * size
        scores[:, component, start: start + d] = mean_scores[:, component]
        scores[:, component, start + d: start + size] = precision_scores[:, component]
    return scores


def site_gradients(X: np.ndarray, parameters: MixtureParameters, resp: np.ndarray | None = None) -> np.ndarray:
    """grad l_i(theta) for every site, shape (N, P).

    By Fisher's identity grad l_i = -sum_k gamma_ik s_i(k).
    """
    if resp is None:
        resp, _ = responsibilities(X, parameters)
    return -np.einsum("nk,nkp->np", resp, complete_scores(X, parameters))


def prior_gradient(parameters: MixtureParameters, prior: MixturePrior) -> np.ndarray:
    """grad log p(theta), shape (P,)."""
    k, d = parameters.n_components, parameters.dim
    alpha0, beta0, nu0 = prior.weight_concentration_prior, prior.mean_precision_prior, prior.degrees_of_freedom_prior
    gradient = np.zeros(n_parameters(k, d))
    gradient[: k - 1] = (alpha0 - 1.0) * _weight_score_matrix(parameters.weights).sum(axis=0)

    offsets = parameters.means - prior.mean_prior
    mean_gradient = -beta0 * np.einsum("kab,kb->ka", parameters.precisions, offsets)
    matrix_gradient = (0.5 * (nu0 - d) * parameters.covariances
                       - 0.5 * beta0 * offsets[:, :, None] * offsets[:, None, :]
                       - 0.5 * prior.covariance_prior[None])
    blocks = np.concatenate([mean_gradient, to_free_gradient(matrix_gradient)], axis=1)
    gradient[k - 1:] = blocks.ravel()
    return gradient


def gradient(X: np.ndarray, parameters: MixtureParameters, prior: MixturePrior) -> np.ndarray:
    """grad l(theta) = sum_i grad l_i - grad log p, shape (P,)."""
    return site_gradients(X, parameters).sum(axis=0) - prior_gradient(parameters, prior)


# Hessians


def _trace_products(covariance: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """T[p, q] = tr(Sigma E_p Sigma E_q), the Hessian of -log|Lambda| in free coordinates."""
    left = np.einsum("ab,pbc->pac", covariance, basis)
    return np.einsum("pac,qca->pq", left, left)


def weight_hessian(weights: np.ndarray, counts: np.ndarray, alpha0: float) -> np.ndarray:
    """Hessian of -sum_k (counts_k + alpha0 - 1) log pi_k in the K - 1 free weights, shape (K-1, K-1)."""
    totals = counts + alpha0 - 1.0
    hessian = np.full((weights.size - 1, weights.size - 1), totals[-1] / weights[-1] ** 2)
    hessian[np.diag_indices(weights.size - 1)] += totals[:-1] / weights[:-1] ** 2
    return hessian


def component_hessians(X: np.ndarray, parameters: MixtureParameters, prior: MixturePrior,
                       resp: np.ndarray) -> np.ndarray:
    """Hessian blocks of the expected complete-data loss for each component, shape (K, B, B).

    B = D + D (D + 1) / 2; the prior's Normal-Wishart term is included.
    """
    k, d = parameters.n_components, parameters.dim
    beta0, nu0 = prior.mean_precision_prior, prior.degrees_of_freedom_prior
    basis = symmetric_basis(d)
    counts = resp.sum(axis=0)
    weighted_residuals = np.einsum("nk,nka->ka", resp, _residuals(X, parameters))
    offsets = parameters.means - prior.mean_prior
    covariances = parameters.covariances

    blocks = np.zeros((k, block_size(d), block_size(d)))
    for component in range(k):
        blocks[component, :d, :d] = (counts[component] + beta0) * parameters.precisions[component]
        cross = (-np.einsum("pab,b->ap", basis, weighted_residuals[component])
                 + beta0 * np.einsum("pab,b->ap", basis, offsets[component]))
        blocks[component, :d, d:] = cross
        blocks[component, d:, :d] = cross.T
        blocks[component, d:, d:] = 0.5 * (counts[component] + nu0 - d) * _trace_products(covariances[component], basis)
    return blocks


def site_component_hessians(X: np.ndarray, parameters: MixtureParameters) -> np.ndarray:
    """-Hessian of log p_k(x_i | mu_k, Lambda_k) in component k's block, shape (N, K, B, B)."""
    n = X.shape[0]
    k, d = parameters.n_components, parameters.dim
    basis = symmetric_basis(d)
    residuals = _residuals(X, parameters)
    covariances = parameters.covariances

    hessians = np.zeros((n, k, block_size(d), block_size(d)))
    hessians[:, :, :d, :d] = parameters.precisions[None]
    cross = -np.einsum("pab,nkb->nkap", basis, residuals)
    hessians[:, :, :d, d:] = cross
    hessians[:, :, d:, :d] = np.swapaxes(cross, -1, -2)
    for component in range(k):
        hessians[:, component, d:, d:] = 0.5 * _trace_products(covariances[component], basis)[None]
    return hessians


def complete_hessian(X: np.ndarray, parameters: MixtureParameters, prior: MixturePrior,
                     resp: np.ndarray | None = None) -> np.ndarray:
    """H_complete: the Hessian of the expected complete-data loss at fixed responsibilities, shape (P, P).

    It is block diagonal: one block for the K - 1 free weights and one per component.
    """
    if resp is None:
        resp, _ = responsibilities(X, parameters)
    k, d = parameters.n_components, parameters.dim
    size = block_size(d)
    hessian = np.zeros((n_parameters(k, d), n_parameters(k, d)))
    hessian[: k - 1, : k - 1] = weight_hessian(parameters.weights, resp.sum(axis=0), prior.weight_concentration_prior)
    blocks = component_hessians(X, parameters, prior, resp)
    for component in range(k):
        start = k - 1 + component * size
        hessian[start: start + size, start: start + size] = blocks[component]
    return hessian


def missing_information(X: np.ndarray, parameters: MixtureParameters, resp: np.ndarray | None = None) -> np.ndarray:
    """I_missing = sum_i Cov_{z_i ~ gamma_i}[s_i(z_i)], shape (P, P)."""
    if resp is None:
        resp, _ = responsibilities(X, parameters)
    scores = complete_scores(X, parameters)
    mean_scores = np.einsum("nk,nkp->np", resp, scores)
    second_moment = np.einsum("nk,nkp,nkq->pq", resp, scores, scores)
    return second_moment - mean_scores.T @ mean_scores


def hessian(X: np.ndarray, parameters: MixtureParameters, prior: MixturePrior) -> np.ndarray:
    """Exact Hessian of l(theta), H_complete - I_missing, shape (P, P)."""
    resp, _ = responsibilities(X, parameters)
    return complete_hessian(X, parameters, prior, resp) - missing_information(X, parameters, resp)


def finite_difference_hessian(X: np.ndarray, parameters: MixtureParameters, prior: MixturePrior,
                              steps: np.ndarray) -> np.ndarray:
    """Hessian of l by the fourth-order central difference of :func:`gradient`, shape (P, P).

    ``steps`` (P,) gives the step of each coordinate; the truncation error is
    O(step^4) and the rounding error about eps |grad| / step. The result is
    symmetrised.
    """
    theta = parameters.to_vector()
    k, d = parameters.n_components, parameters.dim
    columns = []
    for index, step in enumerate(steps):
        values = []
        for multiple in (2, 1, -1, -2):
            shifted = theta.copy()
            shifted[index] += multiple * step
            values.append(gradient(X, MixtureParameters.from_vector(shifted, k, d), prior))
        columns.append((-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step))
    result = np.array(columns).T
    return 0.5 * (result + result.T)


def natural_scales(parameters: MixtureParameters) -> np.ndarray:
    """A typical size of each coordinate's movement, shape (P,), used for steps and scaled comparisons.

    Weights scale with min(pi_j, pi_K), means with the component's standard
    deviations and precision entries with sqrt(Lambda_aa Lambda_bb).
    """
    d = parameters.dim
    weights = np.minimum(parameters.weights[:-1], parameters.weights[-1])
    rows, cols = np.tril_indices(d)
    diagonal = np.diagonal(parameters.precisions, axis1=1, axis2=2)
    mean_scales = np.sqrt(np.diagonal(parameters.covariances, axis1=1, axis2=2))
    precision_scales = np.sqrt(diagonal[:, rows] * diagonal[:, cols])
    return np.concatenate([weights, np.concatenate([mean_scales, precision_scales], axis=1).ravel()])
