"""Input checks shared by every public entry point.

Each check raises ValueError or TypeError with a message that names the
argument, states the rule, shows the value received and suggests a fix.
Checked arrays are returned as new float64 arrays, so callers' arrays are
never modified.
"""

from __future__ import annotations

import numbers

import numpy as np


def _describe(value) -> str:
    text = np.array2string(np.asarray(value), threshold=6, edgeitems=2)
    return text if len(text) < 80 else text[:77] + "..."


def as_float_array(value, name: str, *, ndim: int | tuple[int, ...] | None = None,
                   shape: tuple | None = None, min_rows: int | None = None) -> np.ndarray:
    """Copy ``value`` to a finite float64 array, checking its dimensionality."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a numeric array, got a string {value!r}")
    try:
        # NumPy parses strings such as "1.5" when casting to float64, so text
        # must be caught before the cast instead of being silently converted.
        dtype_kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError):
        dtype_kind = None
    if dtype_kind in ("U", "S"):
        raise TypeError(
            f"{name} must be a numeric array, got an array of strings; convert the values to "
            f"numbers first"
        )
    if dtype_kind == "c":
        # Casting complex to float64 only warns and drops the imaginary part.
        raise TypeError(
            f"{name} must be a real numeric array, got complex values; pass numpy.real(...) "
            f"if the imaginary part is meant to be dropped"
        )
    if dtype_kind == "O" and any(isinstance(item, (str, bytes)) for item in np.asarray(value).flat):
        raise TypeError(
            f"{name} must be a numeric array, got an object array containing strings; convert "
            f"the values to numbers first"
        )
    try:
        array = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a numeric array; could not convert it to float64 ({error})"
        ) from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if array.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {array.shape}"
            )
    if shape is not None:
        for axis, (expected, got) in enumerate(zip(shape, array.shape)):
            if expected is not None and expected != got:
                raise ValueError(
                    f"{name} must have shape {tuple('any' if e is None else e for e in shape)}, "
                    f"got {array.shape} (axis {axis} differs)"
                )
    if min_rows is not None and array.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} rows, got {array.shape[0]}"
        )
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name} must contain only finite values; found {array[tuple(bad)]} at "
            f"index {tuple(int(i) for i in bad)}. Remove or impute missing values first"
        )
    return array


def check_positive(array: np.ndarray, name: str, *, strict: bool = True) -> None:
    bad = array <= 0 if strict else array < 0
    if np.any(bad):
        rule = "positive" if strict else "non-negative"
        raise ValueError(f"{name} must be {rule}, got {_describe(array)}")


def check_greater(array: np.ndarray, bound, name: str, bound_text: str) -> None:
    if np.any(array <= bound):
        raise ValueError(f"{name} must be greater than {bound_text}, got {_describe(array)}")


def check_int(value, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Check that ``value`` is an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_real(value, name: str, *, low: float | None = None, high: float | None = None,
               low_inclusive: bool = False) -> float:
    """Check that ``value`` is a finite real number, optionally above ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None:
        if low_inclusive and value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
        if not low_inclusive and value <= low:
            raise ValueError(f"{name} must be greater than {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}, got {value}")
    return value


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``choices``, whose first entry is the default."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}; use {choices[0]!r} (the default)")
    return value


def check_tol(value, name: str = "tol") -> float:
    """Check a relative ELBO tolerance: a finite real number in [0, 1).

    CAVI stops when the ELBO changes by at most ``tol * |ELBO|`` between
    iterations, so a tolerance of 1 or more stops almost any fit after a
    couple of iterations and reports it as converged. 0 is allowed and
    means "run until max_iter".
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number in [0, 1), got {value!r} of type {type(value).__name__}; "
            f"pass a small relative tolerance such as 1e-9"
        )
    value = float(value)
    if not np.isfinite(value) or value < 0 or value >= 1:
        raise ValueError(
            f"{name} must be in [0, 1), because it bounds the relative change of the ELBO between "
            f"iterations and a value of 1 or more stops the fit after a couple of iterations; got "
            f"{value:g}. Pass a small value such as 1e-9, or 0 to run until max_iter"
        )
    return value


def check_random_state(seed) -> np.random.Generator:
    """Turn None, an integer or a Generator into a numpy Generator."""
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(seed, bool):
            raise TypeError(f"random_state must be None, an integer or a numpy Generator, got {seed!r}")
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {seed}")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(
        f"random_state must be None, an integer or a numpy Generator, got {type(seed).__name__}"
    )


def check_site_indices(sites, n_sites: int, name: str = "sites") -> np.ndarray:
    """Check a list of site indices: integers in [0, n_sites), no duplicates."""
    array = np.asarray(sites)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of site indices, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must contain at least one site index, got an empty list")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must contain integer site indices, got dtype {array.dtype}; "
            f"pass positions such as [0, 5, 7]"
        )
    array = array.astype(np.int64)
    out_of_range = (array < 0) | (array >= n_sites)
    if np.any(out_of_range):
        raise ValueError(
            f"{name} must be in [0, {n_sites - 1}] (0-based site positions); got "
            f"{array[out_of_range][:5].tolist()}"
        )
    unique, counts = np.unique(array, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"{name} must not repeat a site, because each site's message can be divided "
            f"out only once; repeated: {unique[counts > 1][:5].tolist()}"
        )
    return array


def row_labels_of(value) -> list | None:
    """Row labels of a pandas DataFrame or Series (its index), or None for other inputs.

    Detected by duck typing, so pandas is not imported.
    """
    index = getattr(value, "index", None)
    if index is None or not hasattr(value, "to_numpy") or not hasattr(index, "tolist"):
        return None
    return index.tolist()


def column_names_of(value) -> list[str] | None:
    """Column names of a pandas DataFrame as strings, or None for other inputs."""
    columns = getattr(value, "columns", None)
    if columns is None or not hasattr(value, "to_numpy") or not hasattr(columns, "tolist"):
        return None
    return [str(column) for column in columns.tolist()]


#: Largest magnitude accepted for data whose squares and cross products a model sums.
#: float64 overflows above about 1.8e308, so squares of values up to 1e100 summed
#: over many rows stay finite with a wide margin.
MAX_DATA_MAGNITUDE = 1e100


#: Smallest non-zero spread accepted for such data: squared deviations below
#: about 1e-308 underflow, so a spread below 1e-100 loses the data's shape.
MIN_DATA_SPREAD = 1e-100


def check_magnitude(array: np.ndarray, name: str, limit: float = MAX_DATA_MAGNITUDE) -> None:
    """Raise ValueError if a finite array has an entry larger than ``limit`` in magnitude,
    or a column whose non-zero spread is so small that its squares underflow."""
    if array.ndim == 2 and array.shape[0] > 1:
        spread = np.max(np.abs(array - array.mean(axis=0)), axis=0)
        tiny = (spread > 0) & (spread < MIN_DATA_SPREAD)
        if np.any(tiny):
            column = int(np.flatnonzero(tiny)[0])
            raise ValueError(
                f"{name} column {column} varies by only {spread[column]:g}, below "
                f"{MIN_DATA_SPREAD:g}, so its squared deviations underflow in float64. Rescale "
                f"the data, for example divide each column by its standard deviation"
            )
    if array.size and np.max(np.abs(array)) > limit:
        bad = np.unravel_index(np.argmax(np.abs(array)), array.shape)
        raise ValueError(
            f"{name} must have entries of magnitude at most {limit:g}, because the model sums "
            f"their squares in float64; found {array[bad]:g} at index "
            f"{tuple(int(i) for i in bad)}. Rescale the data, for example divide by its "
            f"standard deviation"
        )
