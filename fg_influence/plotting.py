"""Plots of influence results (needs Matplotlib, the ``plot`` extra).

* :func:`plot_index`: a measure against row position, with the top rows labelled.
* :func:`plot_data`: the data (1-D, 2-D, or the first two principal
  components) coloured by a measure, with the fitted Gaussian components
  drawn as two-standard-deviation ellipses.
* :func:`plot_calibration`: the estimated KL against the KL after an exact
  refit, with their Spearman rank correlation in the title.
* :func:`save_report`: the three panels in one PNG file.

Each function draws on ``ax`` when given and otherwise on a new figure, and
returns the axes. Matplotlib is imported inside the functions, so the rest
of the library works without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ._validation import check_int

__all__ = ["measure_values", "plot_calibration", "plot_data", "plot_index", "save_report", "top_sites"]

#: Standard deviations spanned by each component ellipse along its axes.
ELLIPSE_N_STD = 2.0

MEASURE_TITLES = {
    "kl": "KL(q || q without the site)",
    "loo_log_predictive": "log p(x_i | data without i)",
}


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plotting needs Matplotlib; install it with pip install 'fg-influence[plot]' "
            "(or pip install matplotlib)"
        ) from None
    return matplotlib


def _new_axes(ax):
    if ax is not None:
        return ax
    _require_matplotlib()
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    return ax


def measure_values(result, measure: str) -> np.ndarray:
    """Per-site values of ``measure``: ``kl``, ``loo_log_predictive`` or a 1-D shift name.

    Shift names are those in ``result.shift_names`` whose array has shape
    (N,), such as ``components.mean_norm``.
    """
    if not isinstance(measure, str):
        raise TypeError(f"measure must be a string, got {type(measure).__name__}")
    if measure in MEASURE_TITLES:
        return result.measure(measure)
    if measure not in result.shift_names:
        raise ValueError(
            f"measure must be one of {list(MEASURE_TITLES)} or a shift in {result.shift_names}, "
            f"got {measure!r}"
        )
    values = np.asarray(result.shift(measure))
    if values.ndim != 1:
        raise ValueError(
            f"measure {measure!r} has shape {values.shape}, but a plot needs one value per row "
            f"(shape (N,)); pick a scalar measure such as 'kl'"
        )
    return values


def top_sites(result, measure: str, k: int) -> np.ndarray:
    """Positions of the ``k`` most extreme sites under ``measure``, most extreme first.

    KL and shifts rank by largest absolute value, the LOO log predictive
    density by smallest value.
    """
    k = check_int(k, "top", minimum=0)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if measure in MEASURE_TITLES:
        return result.top(k, by=measure)
    values = measure_values(result, measure)
    return np.argsort(-np.abs(values), kind="stable")[: min(k, values.size)]


def plot_index(result, measure: str = "kl", *, top: int = 5, ax=None):
    """Plot a measure against row position and label the ``top`` most extreme rows.

    Parameters
    ----------
    result : InfluenceResult
    measure : str, default "kl"
        ``kl``, ``loo_log_predictive`` or a 1-D shift name.
    top : int, default 5
        Number of rows to label with their row labels.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    values = measure_values(result, measure)
    chosen = top_sites(result, measure, top)
    ax = _new_axes(ax)
    positions = np.arange(values.size)
    finite = np.isfinite(values)

    ax.vlines(positions[finite], 0 if measure != "loo_log_predictive" else values[finite].max(),
              values[finite], color="0.6", linewidth=0.8)
    ax.plot(positions[finite], values[finite], "o", markersize=3, color="C0")
    if not finite.all():
        ax.plot(positions[~finite], np.full((~finite).sum(), np.nanmax(values[finite], initial=0.0)),
                "x", color="C3", label="improper when removed")
        ax.legend(loc="best", fontsize="small")
    labels = result.labels
    for i in chosen:
        if np.isfinite(values[i]):
            ax.annotate(str(labels[i]), (positions[i], values[i]), textcoords="offset points",
                        xytext=(3, 4), fontsize="small", color="C3")
    ax.set_xlabel("site position (a row, group, sequence or document)")
    ax.set_ylabel(MEASURE_TITLES.get(measure, f"shift {measure}"))
    ax.set_title(f"Influence of each site ({measure})")
    return ax


def _observed_data(result) -> np.ndarray | None:
    """Stack the observed arrays side by side when each has one row per site, else return None.

    Models whose sites are groups, sequences or documents store several rows
    per site, which have no single point to draw.
    """
    if result.posterior is None:
        return None
    observed = result.posterior.graph.variables_of_role("observed")
    arrays = [np.asarray(variable.data) for variable in observed]
    if not arrays or any(a.ndim != 2 or a.shape[0] != result.n_sites for a in arrays):
        return None
    return np.hstack(arrays)


def _gaussian_components(result, dim: int):
    """(weights, means, covariances) of a fitted Gaussian mixture in ``result``, or None."""
    from .families import Dirichlet, NormalWishart

    globals_ = result.posterior.globals
    components = [f for f in globals_.values() if isinstance(f, NormalWishart)]
    weights = [f for f in globals_.values() if isinstance(f, Dirichlet)]
    if len(components) != 1 or components[0].mean.ndim != 2 or components[0].dim != dim:
        return None
    means = components[0].mean
    covariances = np.linalg.inv(components[0].wishart.mean())
    if len(weights) == 1 and weights[0].concentration.shape == (means.shape[0],):
        mixing = weights[0].mean()
    else:
        mixing = np.full(means.shape[0], 1.0 / means.shape[0])
    return mixing, means, covariances


def _draw_ellipse(ax, mean, covariance, weight, color):
    from matplotlib.patches import Ellipse

    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    width, height = 2.0 * ELLIPSE_N_STD * np.sqrt(np.maximum(eigenvalues[::-1], 0.0))
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, edgecolor=color,
                         linewidth=1.5 + 2.0 * weight))
    ax.plot(*mean, "+", color=color, markersize=10, markeredgewidth=2)


def plot_data(result, measure: str = "kl", *, top: int = 5, column_names=None, ax=None):
    """Scatter the training data coloured by a measure, with the fitted components.

    Two-column data are drawn as they are, and one column is drawn against
    the measure. Data with more columns are projected on their first two
    principal components, and so are the components' means and covariances. Gaussian
    components are drawn as ellipses spanning two standard deviations of
    the posterior-mean covariance E[Lambda_k]^-1, thicker for larger
    weights. KL values are coloured on a log scale. ``column_names`` (one
    per data column) label the axes of 1-D and 2-D data.

    Returns
    -------
    matplotlib Axes
    """
    matplotlib = _require_matplotlib()
    values = measure_values(result, measure)
    X = _observed_data(result)
    if X is None:
        raise ValueError(
            "plot_data needs one data row per site, but this model's sites (groups, sequences or "
            "documents) span several rows; use plot_index instead"
        )
    ax = _new_axes(ax)
    dim = X.shape[1]
    components = _gaussian_components(result, dim)
    finite = np.isfinite(values)

    # Coordinates to draw in.
    names = [f"column {j}" for j in range(dim)] if column_names is None else [str(c) for c in column_names]
    if len(names) != dim:
        raise ValueError(f"column_names must have {dim} entries, one per data column, got {len(names)}")
    if dim == 1:
        coords = np.column_stack([X[:, 0], np.where(finite, values, np.nan)])
        xlabel, ylabel = names[0], MEASURE_TITLES.get(measure, measure)
    elif dim == 2:
        coords, (xlabel, ylabel) = X, names
    else:
        center = X.mean(axis=0)
        _, _, vt = np.linalg.svd(X - center, full_matrices=False)
        basis = vt[:2]
        coords = (X - center) @ basis.T
        xlabel, ylabel = "principal component 1", "principal component 2"

    # Colour scale.
    shown = values[finite]
    positive = shown.size and measure == "kl" and np.all(shown > 0)
    if positive:
        norm = matplotlib.colors.LogNorm(vmin=shown.min(), vmax=max(shown.max(), shown.min() * 1.0001))
    else:
        norm = matplotlib.colors.Normalize(vmin=shown.min() if shown.size else 0.0,
                                           vmax=shown.max() if shown.size else 1.0)
    cmap = "viridis_r" if measure == "loo_log_predictive" else "viridis"
    points = ax.scatter(coords[finite, 0], coords[finite, 1], c=shown, cmap=cmap, norm=norm, s=14,
                        edgecolors="none")
    if not finite.all():
        ax.scatter(coords[~finite, 0], np.nan_to_num(coords[~finite, 1]), marker="x", color="C3",
                   label="improper when removed")
        ax.legend(loc="best", fontsize="small")
    ax.figure.colorbar(points, ax=ax, label=MEASURE_TITLES.get(measure, f"shift {measure}"))

    # Fitted components.
    if components is not None:
        mixing, means, covariances = components
        for k in range(means.shape[0]):
            color = f"C{(k + 1) % 10}"
            if dim == 1:
                ax.axvspan(means[k, 0] - ELLIPSE_N_STD * np.sqrt(covariances[k, 0, 0]),
                           means[k, 0] + ELLIPSE_N_STD * np.sqrt(covariances[k, 0, 0]),
                           color=color, alpha=0.12)
                ax.axvline(means[k, 0], color=color)
            elif dim == 2:
                _draw_ellipse(ax, means[k], covariances[k], mixing[k], color)
            else:
                _draw_ellipse(ax, (means[k] - center) @ basis.T, basis @ covariances[k] @ basis.T,
                              mixing[k], color)

    labels = result.labels
    for i in top_sites(result, measure, top):
        if finite[i]:
            ax.annotate(str(labels[i]), coords[i], textcoords="offset points", xytext=(3, 4),
                        fontsize="small", color="C3")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Data coloured by {measure}")
    return ax


def plot_calibration(result, *, ax=None):
    """Plot the estimated KL against the KL after exact refits, one point per refitted row.

    The title gives the Spearman rank correlation; the dashed line is
    estimate = exact. Both axes are logarithmic when every value is
    positive. Needs ``result.compute_exact`` on at least 2 rows first.

    Returns
    -------
    matplotlib Axes
    """
    if result.exact_sites.size < 2:
        raise ValueError(
            "plot_calibration needs exact refits of at least 2 rows; call "
            "result.compute_exact(...) first"
        )
    ax = _new_axes(ax)
    estimate = result.kl[result.exact_sites]
    exact = result.exact_kl
    finite = np.isfinite(estimate) & np.isfinite(exact)
    rho = spearmanr(estimate[finite], exact[finite]).statistic if finite.sum() >= 2 else np.nan

    ax.plot(exact[finite], estimate[finite], "o", markersize=3, color="C0")
    low = min(exact[finite].min(), estimate[finite].min())
    high = max(exact[finite].max(), estimate[finite].max())
    ax.plot([low, high], [low, high], "--", color="0.5", linewidth=1, label="estimate = exact")
    if low > 0:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        # Minor tick labels on a log axis spanning less than a decade overlap.
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("KL after exact refit")
    ax.set_ylabel(f"KL estimated by {getattr(result, 'method', 'division').replace('-', ' ')}")
    rho_text = "undefined" if not np.isfinite(rho) else f"{rho:.4f}"
    ax.set_title(f"Estimate against exact refit ({int(finite.sum())} sites)\nSpearman rank correlation {rho_text}")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def save_report(result, path, *, measure: str = "kl", top: int = 5, column_names=None, dpi: int = 110):
    """Draw the index, data and (after exact refits) calibration plots into one PNG file.

    The data panel is left out for models whose sites span several rows.

    Uses a standalone Matplotlib figure with the Agg canvas, so it works
    without a display and leaves pyplot's state alone.

    Parameters
    ----------
    result : InfluenceResult
    path : str or pathlib.Path
        Output file; written as PNG whatever its suffix.
    measure, top
        As in :func:`plot_index`.
    column_names : sequence of str, optional
        As in :func:`plot_data`.
    dpi : int, default 110

    Returns
    -------
    pathlib.Path
        The file written.
    """
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measure_values(result, measure)
    path = Path(path)
    draw_data = _observed_data(result) is not None
    draw_calibration = result.exact_sites.size >= 2
    panels = 1 + int(draw_data) + int(draw_calibration)
    figure = Figure(figsize=(5.2 * panels, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(np.atleast_1d(figure.subplots(1, panels)))
    plot_index(result, measure, top=top, ax=axes.pop(0))
    if draw_data:
        plot_data(result, measure, top=top, column_names=column_names, ax=axes.pop(0))
    if draw_calibration:
        plot_calibration(result, ax=axes.pop(0))
    try:
        figure.savefig(path, format="png", dpi=dpi)
    except OSError as error:
        raise ValueError(f"could not write plot file {path}: {error.strerror or error}") from None
    return path


class SiteScores:
    """Per-site KL values and exact refits held as plain arrays, for models whose
    influence is not an InfluenceResult (such as the time steps of one HMM series).

    It offers what :func:`plot_index`, :func:`plot_calibration` and
    :func:`save_report` read: ``kl``, ``labels``, ``exact_sites``, ``exact_kl``,
    ``measure`` and ``top``. It has no data panel.

    Parameters
    ----------
    kl : array_like, shape (N,)
    labels : sequence, optional
        Site labels; default the 0-based positions.
    exact_sites : array_like of int, shape (M,), optional
    exact_kl : array_like, shape (M,), optional
    """

    shift_names: list = []
    posterior = None

    def __init__(self, kl, labels=None, exact_sites=None, exact_kl=None):
        self.kl = np.asarray(kl, dtype=float)
        self.n_sites = self.kl.size
        self.labels = list(range(self.n_sites)) if labels is None else list(labels)
        self.exact_sites = np.zeros(0, dtype=np.int64) if exact_sites is None else np.asarray(exact_sites, dtype=np.int64)
        self.exact_kl = np.zeros(0) if exact_kl is None else np.asarray(exact_kl, dtype=float)

    def measure(self, name: str) -> np.ndarray:
        if name != "kl":
            raise ValueError(f"measure must be 'kl' for per-site scores, got {name!r}")
        return self.kl

    def top(self, k: int = 10, by: str = "kl") -> np.ndarray:
        return np.argsort(-self.measure(by), kind="stable")[: min(k, self.n_sites)]


def save_comparison_report(comparison, path, *, dpi: int = 110):
    """Plot each method's estimate against its exact-refit reference, one panel per method.

    Parameters
    ----------
    comparison : fg_influence.reference.compare.MethodComparison
    path : str or pathlib.Path
        Output file; written as PNG whatever its suffix.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .reference.compare import METHODS

    path = Path(path)
    figure = Figure(figsize=(4.4 * len(METHODS), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(1, len(METHODS)))
    for ax, (name, _, reference) in zip(axes, METHODS):
        estimate = comparison.estimates[name][comparison.sites]
        exact = comparison.exact[reference]
        finite = np.isfinite(estimate) & np.isfinite(exact)
        ax.plot(exact[finite], estimate[finite], "o", markersize=3, color="C0")
        if finite.any() and min(exact[finite].min(), estimate[finite].min()) > 0:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("exact refit" + (" KL" if reference == "vb" else " d^T H d"))
        ax.set_ylabel("estimate")
        rho = comparison.spearman[name]
        ax.set_title(f"{name}\nSpearman {rho:.4f}" if np.isfinite(rho) else name)
    try:
        figure.savefig(path, format="png", dpi=dpi)
    except OSError as error:
        raise ValueError(f"could not write plot file {path}: {error.strerror or error}") from None
    return path
