"""Tables and JSON documents built from an InfluenceResult.

Every model's result goes through the same code: the columns come from the
result's per-site measures and from the named shifts its factors offer, so a
new model needs no export code of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Text stored with every exported result, so that a reader of the file can interpret the signs.
CONVENTIONS = (
    "Per-site arrays have the site axis first. A shift is (value without the site) minus "
    "(value with all sites). kl is KL(q || q without the site) over the global factors; "
    "loo_log_predictive is log p(x_i | data without i). Improper divided posteriors have "
    "kl +inf and loo_log_predictive -inf (null in JSON)."
)


def json_label(label):
    """Convert a row label to a JSON scalar: Python int, float or bool as they are, anything else as text."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, (bool, int, str)):
        return label
    if isinstance(label, float) and np.isfinite(label):
        return label
    return str(label)


def json_array(values: np.ndarray):
    """Convert an array to nested lists with infinite or NaN entries as None, because strict JSON has no inf."""
    values = np.asarray(values)
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
        return values.tolist()
    as_objects = values.astype(object)
    as_objects[~np.isfinite(values)] = None
    return as_objects.tolist()


def _flat_columns(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of a per-site array: ``name`` for shape (N,), ``name[k, d]`` for trailing axes."""
    if values.ndim == 1:
        return {name: values}
    columns = {}
    for index in np.ndindex(values.shape[1:]):
        columns[f"{name}[{', '.join(map(str, index))}]"] = values[(slice(None),) + index]
    return columns


def result_columns(result) -> dict[str, np.ndarray]:
    """Collect every per-site quantity of ``result`` as 1-D columns of length N, in display order."""
    columns = {"kl": result.kl}
    for variable, values in result.kl_by_variable.items():
        kl_part = np.array(values, dtype=float)
        kl_part[result.improper] = np.inf
        columns[f"kl.{variable}"] = kl_part
    log_predictive = _log_predictive_or_none(result)
    if log_predictive is not None:
        columns["loo_log_predictive"] = log_predictive
    for name, values in result.shifts().items():
        columns.update(_flat_columns(f"shift.{name}", np.asarray(values)))
    columns["improper"] = result.improper
    if result.exact_sites.size:
        exact = np.full(result.n_sites, np.nan)
        exact[result.exact_sites] = result.exact_kl
        columns["exact_kl"] = exact
        # None for the sites without a refit, where exact_kl is NaN.
        other_optimum = np.full(result.n_sites, None, dtype=object)
        other_optimum[result.exact_sites] = result.exact_other_optimum.tolist()
        columns["exact_other_optimum"] = other_optimum
    return columns


def summary_frame(result):
    """Build a pandas DataFrame with one row per site, indexed by the row labels."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "summary_frame needs pandas; install it with pip install 'fg-influence[pandas]' "
            "(or pip install pandas), or use to_dict() instead"
        ) from None
    index = pd.Index(result.labels, name="row")
    frame = pd.DataFrame(result_columns(result), index=index)
    frame.attrs["method"] = result.method
    return frame


def _log_predictive_or_none(result):
    """Return the result's LOO log predictive density, or None for models that offer none."""
    try:
        return result.loo_log_predictive
    except ValueError:
        return None


def result_to_dict(result) -> dict:
    """Build a JSON-ready document of ``result``: labels, measures, shifts, exact values and LOO summary.

    For models without a LOO predictive density (factor analysis, hidden
    Markov models, LDA) ``loo_log_predictive`` and ``loo`` are None.
    """
    log_predictive = _log_predictive_or_none(result)
    loo = None
    if log_predictive is not None:
        loo = {key: (value if value is None or np.isfinite(value) else None)
               for key, value in result.loo_summary.to_dict().items()}
    document = {
        "conventions": CONVENTIONS,
        "method": result.method,
        "n_sites": int(result.n_sites),
        "row_labels": [json_label(label) for label in result.labels],
        "kl": json_array(result.kl),
        "kl_by_variable": {name: json_array(values) for name, values in result.kl_by_variable.items()},
        "loo_log_predictive": None if log_predictive is None else json_array(log_predictive),
        "improper": result.improper.tolist(),
        "shifts": {name: json_array(values) for name, values in result.shifts().items()},
        "exact": {
            "sites": result.exact_sites.tolist(),
            "kl": json_array(result.exact_kl),
            "other_optimum": result.exact_other_optimum.tolist(),
        },
        "loo": loo,
    }
    return document


def result_to_json(result, path=None, *, indent: int = 2) -> str:
    """``result_to_dict`` as strict JSON text; also written to ``path`` when given."""
    text = json.dumps(result_to_dict(result), indent=indent, allow_nan=False) + "\n"
    if path is not None:
        path = Path(path)
        try:
            path.write_text(text)
        except OSError as error:
            raise ValueError(f"could not write JSON file {path}: {error.strerror or error}") from None
    return text
