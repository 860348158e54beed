"""Influence function against EM-influence for a mixture density network.

The mixture density network has one hidden layer of 10 tanh units and
heads for 3 mixing proportions (softmax), 3 means and 3 standard deviations
(exp). Full-batch Adam (learning rate 1e-2, weight decay 1e-3) trains it on
Bishop's (1994) inverse-problem toy data. For every training point it
computes the Newton influence function H^-1 grad l_i with the exact Hessian
H, EM-influence H_complete^-1 grad l_i, and EM-influence with the missing
information added, (H_complete - I_missing)^-1 H_complete (EM-influence),
which equals the influence function.

Everything is numpy with analytic gradients. Hessians are exact to rounding
by complex-step differentiation of the analytic gradient (Squire and Trapp
1998): column j is Im grad(w + i h e_j) / h with h = 1e-20.

    python examples/mdn_figure1.py           # quick run: 200 points, 300 epochs, no figure
    python examples/mdn_figure1.py --full    # 500 points, 1000 epochs, saves docs/images/figure1.png

The full run needs matplotlib (the ``plot`` extra) and takes well under a
minute on two cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HIDDEN = 10
COMPONENTS = 3
OUTPUTS = 3 * COMPONENTS
COMPLEX_STEP = 1e-20
QUICK = {"n_points": 200, "epochs": 300}
FULL = {"n_points": 500, "epochs": 1000}


def bishop_data(n_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bishop's (1994) inverse problem: t ~ U(0, 1), x = t + 0.3 sin(2 pi t) + U(-0.1, 0.1); predict t from x."""
    target = rng.uniform(0.0, 1.0, n_points)
    inputs = target + 0.3 * np.sin(2 * np.pi * target) + rng.uniform(-0.1, 0.1, n_points)
    return inputs, target


# Network and its parameter vector


def n_weights() -> int:
    return 2 * HIDDEN + HIDDEN * OUTPUTS + OUTPUTS


def unpack(w):
    """Split the flat weights into W1 (H,), b1 (H,), W2 (H, 9) and b2 (9,)."""
    first = w[:HIDDEN]
    bias = w[HIDDEN: 2 * HIDDEN]
    second = w[2 * HIDDEN: 2 * HIDDEN + HIDDEN * OUTPUTS].reshape(HIDDEN, OUTPUTS)
    return first, bias, second, w[2 * HIDDEN + HIDDEN * OUTPUTS:]


def initial_weights(rng: np.random.Generator) -> np.ndarray:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every layer, as PyTorch's nn.Linear does."""
    first = rng.uniform(-1.0, 1.0, 2 * HIDDEN)
    bound = 1.0 / np.sqrt(HIDDEN)
    second = rng.uniform(-bound, bound, HIDDEN * OUTPUTS + OUTPUTS)
    return np.concatenate([first, second])


def _logsumexp(values, axis):
    """log sum exp along ``axis``, analytic in complex arguments (the shift uses the real part only)."""
    shift = np.max(values.real, axis=axis, keepdims=True)
    return np.squeeze(shift, axis=axis) + np.log(np.sum(np.exp(values - shift), axis=axis))


def forward(w, inputs, targets):
    """Hidden units and complete-data log densities c_ik = log pi_k(x_i) + log N(t_i | m_k, s_k^2).

    Returns
    -------
    hidden : array, shape (N, H)
    outputs : array, shape (N, 9)
    log_joint : array, shape (N, K)
    """
    first, bias, second, output_bias = unpack(w)
    hidden = np.tanh(inputs[:, None] * first + bias)
    outputs = hidden @ second + output_bias
    logits, means, log_scales = outputs[:, :3], outputs[:, 3:6], outputs[:, 6:]
    log_weights = logits - _logsumexp(logits, axis=1)[:, None]
    residuals = targets[:, None] - means
    log_density = -0.5 * np.log(2 * np.pi) - log_scales - 0.5 * residuals ** 2 * np.exp(-2 * log_scales)
    return hidden, outputs, log_weights + log_density


def site_losses(w, inputs, targets):
    """l_i = -log p(t_i | x_i, w), shape (N,)."""
    _, _, log_joint = forward(w, inputs, targets)
    return -_logsumexp(log_joint, axis=1)


def complete_scores(w, inputs, targets):
    """Scores s_ik = grad_w c_ik for every point and component, shape (N, K, P)."""
    first, bias, second, output_bias = unpack(w)
    hidden, outputs, _ = forward(w, inputs, targets)
    logits, means, log_scales = outputs[:, :3], outputs[:, 3:6], outputs[:, 6:]
    weights = np.exp(logits - _logsumexp(logits, axis=1)[:, None])
    scaled = (targets[:, None] - means) * np.exp(-2 * log_scales)
    n = inputs.size
    eye = np.eye(COMPONENTS)

    # d c_ik / d outputs_i: softmax part for the logits, Gaussian part only for component k.
    output_grad = np.zeros((n, COMPONENTS, OUTPUTS), dtype=outputs.dtype)
    output_grad[:, :, :3] = eye[None] - weights[:, None, :]
    output_grad[:, :, 3:6] = eye[None] * scaled[:, None, :]
    output_grad[:, :, 6:] = eye[None] * (scaled * (targets[:, None] - means) - 1.0)[:, None, :]

    # Back through the output layer and the tanh layer.
    hidden_grad = np.einsum("nko,ho->nkh", output_grad, second) * (1 - hidden ** 2)[:, None, :]
    return np.concatenate([
        inputs[:, None, None] * hidden_grad,
        hidden_grad,
        (hidden[:, None, :, None] * output_grad[:, :, None, :]).reshape(n, COMPONENTS, HIDDEN * OUTPUTS),
        output_grad,
    ], axis=2)


def responsibilities(w, inputs, targets):
    _, _, log_joint = forward(w, inputs, targets)
    return np.exp(log_joint - _logsumexp(log_joint, axis=1)[:, None])


def site_gradients(w, inputs, targets):
    """grad l_i = -sum_k gamma_ik s_ik (Fisher's identity), shape (N, P)."""
    return -np.einsum("nk,nkp->np", responsibilities(w, inputs, targets), complete_scores(w, inputs, targets))


# The regularised loss L(w) = sum_i l_i + (N decay / 2) |w|^2 has the same
# minimiser as the training objective mean_i l_i + (decay / 2) |w|^2 that Adam
# with L2 weight decay follows.


def loss_gradient(w, inputs, targets, decay):
    return site_gradients(w, inputs, targets).sum(axis=0) + inputs.size * decay * w


def complete_gradient(w, inputs, targets, decay, resp):
    """Gradient of the expected complete-data loss at fixed responsibilities ``resp``."""
    return -np.einsum("nk,nkp->p", resp, complete_scores(w, inputs, targets)) + inputs.size * decay * w


def complex_step_jacobian(function, w):
    """Jacobian of a real-analytic vector function by the complex step, exact to rounding."""
    columns = []
    for index in range(w.size):
        shifted = w.astype(complex)
        shifted[index] += 1j * COMPLEX_STEP
        columns.append(function(shifted).imag / COMPLEX_STEP)
    jacobian = np.array(columns).T
    return 0.5 * (jacobian + jacobian.T)


def hessians(w, inputs, targets, decay):
    """Exact H, H_complete and I_missing at w, each of shape (P, P)."""
    resp = responsibilities(w, inputs, targets)
    full = complex_step_jacobian(lambda v: loss_gradient(v, inputs, targets, decay), w)
    complete = complex_step_jacobian(lambda v: complete_gradient(v, inputs, targets, decay, resp), w)
    scores = complete_scores(w, inputs, targets)
    mean_scores = np.einsum("nk,nkp->np", resp, scores)
    missing = np.einsum("nk,nkp,nkq->pq", resp, scores, scores) - mean_scores.T @ mean_scores
    return full, complete, missing


# Training


def train_adam(inputs, targets, *, epochs, rng, learning_rate=1e-2, decay=1e-3):
    """Full-batch Adam (beta1 0.9, beta2 0.999, eps 1e-8) on mean_i l_i with L2 weight decay added to the gradient."""
    w = initial_weights(rng)
    first_moment = np.zeros_like(w)
    second_moment = np.zeros_like(w)
    for step in range(1, epochs + 1):
        gradient = site_gradients(w, inputs, targets).mean(axis=0) + decay * w
        first_moment = 0.9 * first_moment + 0.1 * gradient
        second_moment = 0.999 * second_moment + 0.001 * gradient ** 2
        corrected_first = first_moment / (1 - 0.9 ** step)
        corrected_second = second_moment / (1 - 0.999 ** step)
        w = w - learning_rate * corrected_first / (np.sqrt(corrected_second) + 1e-8)
    return w


@dataclass
class Figure1Result:
    """Per-point influence of the three methods and the Hessians behind them."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    hessian: np.ndarray
    complete_hessian: np.ndarray
    missing_information: np.ndarray
    influence_function: np.ndarray
    em_influence: np.ndarray
    em_plus_missing: np.ndarray
    decay: float

    @property
    def identity_error(self) -> float:
        """max |H_complete - I_missing - H| / max |H|."""
        difference = self.complete_hessian - self.missing_information - self.hessian
        return float(np.abs(difference).max() / np.abs(self.hessian).max())

    def self_influence(self) -> dict[str, np.ndarray]:
        """grad l_i^T step_i for each method, shape (N,): the scalar plotted and ranked."""
        gradients = site_gradients(self.weights, self.inputs, self.targets)
        return {name: np.einsum("np,np->n", gradients, getattr(self, name))
                for name in ("influence_function", "em_influence", "em_plus_missing")}


def run(n_points: int, epochs: int, seed: int = 0, decay: float = 1e-3) -> Figure1Result:
    """Train the network and compute every point's influence by the three methods."""
    rng = np.random.default_rng(seed)
    inputs, targets = bishop_data(n_points, rng)
    w = train_adam(inputs, targets, epochs=epochs, rng=rng, decay=decay)
    full, complete, missing = hessians(w, inputs, targets, decay)
    gradients = site_gradients(w, inputs, targets)
    influence = np.linalg.solve(full, gradients.T).T
    em = np.linalg.solve(complete, gradients.T).T
    corrected = np.linalg.solve(complete - missing, complete @ em.T).T
    return Figure1Result(inputs, targets, w, full, complete, missing, influence, em, corrected, decay)


def top_overlap(first: np.ndarray, second: np.ndarray, count: int) -> int:
    """Number of shared points among the ``count`` largest values of two scores."""
    return len(set(np.argsort(-first)[:count]) & set(np.argsort(-second)[:count]))


def save_figure(result: Figure1Result, path: Path) -> None:
    """Three panels: data with the fitted conditional density, IF against EM-influence, IF against EM + missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = result.self_influence()
    grid_x = np.linspace(result.inputs.min(), result.inputs.max(), 200)
    grid_t = np.linspace(-0.1, 1.1, 200)
    xx, tt = np.meshgrid(grid_x, grid_t)
    density = np.exp(-site_losses(result.weights, xx.ravel(), tt.ravel())).reshape(xx.shape)

    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    # Clip the sharp single-branch ends so the three-branch middle stays visible.
    axes[0].contourf(xx, tt, np.minimum(density, np.quantile(density, 0.97)), levels=30, cmap="Blues")
    axes[0].scatter(result.inputs, result.targets, s=4, color="black")
    axes[0].set(xlabel="x", ylabel="t", title="data and fitted p(t | x)")
    for axis, name, label in ((axes[1], "em_influence", "EM-influence"),
                              (axes[2], "em_plus_missing", "EM-influence + missing information")):
        axis.scatter(scores[name], scores["influence_function"], s=6)
        low = min(scores[name].min(), scores["influence_function"].min())
        high = max(scores[name].max(), scores["influence_function"].max())
        axis.plot([low, high], [low, high], color="grey", linewidth=0.8)
        axis.set(xlabel=label, ylabel="influence function")
        axis.set_title(f"influence function vs {label}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="500 points and 1000 epochs, and save the figure (default: 200 points, 300 epochs)")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/figure1.png",
                        help="where --full saves the figure (default docs/images/figure1.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights (default 0)")
    args = parser.parse_args(argv)
    config = FULL if args.full else QUICK

    start = time.perf_counter()
    result = run(config["n_points"], config["epochs"], seed=args.seed)
    elapsed = time.perf_counter() - start
    scores = result.self_influence()
    print(f"{config['n_points']} points, {config['epochs']} Adam epochs, {n_weights()} weights, {elapsed:.1f} s")
    print(f"max |H_complete - I_missing - H| / max |H| = {result.identity_error:.2e}")
    error = np.abs(result.em_plus_missing - result.influence_function).max() / np.abs(result.influence_function).max()
    print(f"max |EM + missing - influence function| / max |influence function| = {error:.2e}")
    for count in (10, 50):
        shared = top_overlap(scores["influence_function"], scores["em_influence"], count)
        print(f"top-{count} overlap, influence function vs EM-influence: {shared}/{count}")
    if args.full:
        save_figure(result, args.output)
        print(f"saved {args.output}")


def _run_as_script() -> bool:
    """True when this file is the program Python was started with (``sys.orig_argv``, Python 3.10+).

    runpy, which the docs tests use, sets sys.argv[0] to this file but leaves
    the caller's other arguments in place, so sys.argv alone cannot tell.
    """
    this_file = Path(__file__).resolve()
    return any(Path(argument).resolve() == this_file for argument in sys.orig_argv[1:]
               if not argument.startswith("-"))


if __name__ == "__main__":
    main(sys.argv[1:] if _run_as_script() else [])
