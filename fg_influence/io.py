"""Save and load fitted models and influence results without pickle.

A saved file is a NumPy ``.npz`` archive. Every array (data, prior and
posterior parameters, responsibilities, exact refits) is a plain numeric
array, and one member, ``metadata.json``, contains UTF-8 JSON describing the
graph (plates, variables with their family, factors with their arguments),
the model's constructor settings and fitted attributes (public names
ending in ``_``, such as ``row_labels_``) and a SHA-256 digest of every
array.
A second member holds the digest of the JSON itself.

Loading reads the archive with ``numpy.load(..., allow_pickle=False)`` and
parses the JSON, so it never runs code from the file. Classes are looked up
by name among fg_influence's own models, families and factors only. Any
mismatch (unknown format version, truncated archive, changed JSON or
array, inconsistent shapes) raises ValueError.

The graph is serialised generically: a family's parameters are the
arguments of its constructor, read back from attributes of the same names,
and a factor's arguments likewise. A new model or factor that follows this
convention can be saved with no code here.

Graphs with local blocks (the hierarchical normal model, factor analysis,
hidden Markov models, LDA) store each block's declaration (its plate and
its family or owning factor), each ragged observed variable's rows, CSR
offsets and covariates, and each fitted block state's named arrays as
plain arrays. Such files are format version 2; files of graphs without
blocks keep the version 1 layout and number, so older releases still read
them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .families import ExponentialFamily
from .graph import FactorGraph
from .graph.blocks import BlockState, LocalBlock, RaggedObservedVariable, block_names
from .graph.factors import Factor
from .graph.nodes import GlobalVariable, LocalVariable
from .inference.posterior import Posterior
from .influence._export import json_label

FORMAT_NAME = "fg_influence"
#: Incremented whenever the layout changes in a way older readers cannot follow.
#: Version 2 added local blocks and ragged observed variables.
FORMAT_VERSION = 2
#: Versions that :func:`load` reads. :func:`save` writes version 1 for graphs
#: without blocks or ragged variables, whose layout version 2 did not change.
READABLE_VERSIONS = (1, 2)
METADATA_MEMBER = "metadata.json"
DIGEST_MEMBER = "metadata.sha256"

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "load", "save"]


# Saving


def save(obj, path) -> None:
    """Write a fitted model or an :class:`~fg_influence.influence.InfluenceResult` to ``path``.

    Parameters
    ----------
    obj : fitted model (such as GaussianMixture) or InfluenceResult
    path : str or pathlib.Path
        File to write; written as given, without adding a ``.npz`` suffix.

    Raises
    ------
    TypeError
        If ``path`` is not a str or os.PathLike, ``obj`` is neither, or its
        graph uses a family or factor whose constructor arguments cannot be
        read back, or a block state contains a non-numeric array, or a
        fitted attribute is an array that is neither numeric nor text (an
        object array of str is stored as a unicode array).
    ValueError
        If ``path`` is a directory, the model is not fitted or the file
        cannot be written.

    Notes
    -----
    Every ready-made model can be saved, including those with local blocks
    (hierarchical normal, factor analysis, hidden Markov, LDA), and so can
    their results.
    """
    from .influence import InfluenceResult

    path = _check_path(path, "the file to write, such as 'model.npz'")
    if path.is_dir():
        raise ValueError(
            f"cannot save to {path}: it is a directory, but path must be a file; pass a file "
            f"path inside it, such as {str(path / 'model.npz')!r}"
        )
    arrays: dict[str, np.ndarray] = {}
    if isinstance(obj, InfluenceResult):
        posterior = obj.posterior
        metadata = {"kind": "result", "result": _result_metadata(obj, arrays)}
    elif hasattr(obj, "posterior_") or _is_model(obj):
        if not hasattr(obj, "posterior_"):
            raise ValueError(f"this {type(obj).__name__} is not fitted yet; call fit first")
        posterior = obj.posterior_
        metadata = {"kind": "model", "model": _model_metadata(obj, arrays)}
    else:
        raise TypeError(
            f"save expects a fitted model or an InfluenceResult, got {type(obj).__name__}"
        )
    metadata["graph"] = _graph_metadata(posterior.graph, arrays)
    metadata["posterior"] = _posterior_metadata(posterior, arrays)
    metadata = {"format": FORMAT_NAME, "format_version": _format_version(posterior.graph),
                "library_version": __version__, **metadata}
    metadata["arrays"] = {key: _array_record(value) for key, value in arrays.items()}

    text = json.dumps(metadata, allow_nan=False, sort_keys=True).encode("utf-8")
    members = dict(arrays)
    members[METADATA_MEMBER] = np.frombuffer(text, dtype=np.uint8)
    members[DIGEST_MEMBER] = np.frombuffer(hashlib.sha256(text).digest(), dtype=np.uint8)
    try:
        with open(path, "wb") as handle:
            np.savez(handle, **members)
    except OSError as error:
        raise ValueError(f"could not write {path}: {error.strerror or error}") from None


def _check_path(path, expected: str) -> Path:
    """Return ``path`` as a Path; raise TypeError unless it is a str or os.PathLike."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a file path (str or pathlib.Path), got {path!r} of type "
            f"{type(path).__name__}; pass {expected}"
        )
    if str(path) == "":
        raise ValueError(f"path must be a file path, got an empty string; pass {expected}")
    return Path(path)


def _format_version(graph: FactorGraph) -> int:
    """Return the oldest format version that can hold ``graph``."""
    ragged = any(isinstance(v, RaggedObservedVariable) for v in graph.variables.values())
    return 2 if ragged or block_names(graph) else 1


def _is_model(obj) -> bool:
    from . import models

    return type(obj).__name__ in models.__all__ and type(obj) is getattr(models, type(obj).__name__)


def _array_record(array: np.ndarray) -> dict:
    return {
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(),
    }


def _json_value(value, description: str):
    """Convert a constructor setting to JSON: scalars as they are, arrays as nested lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise TypeError(f"cannot save {description}: non-finite value {value}")
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        # Factor arguments such as the names of a factor's parameter nodes.
        return {"tuple" if isinstance(value, tuple) else "list": list(value)}
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return {"array": array.astype(np.float64).tolist(), "dtype": array.dtype.str}
    raise TypeError(f"cannot save {description}: values of type {type(value).__name__} are not supported")


def _model_metadata(model, arrays: dict) -> dict:
    settings = {}
    for name in _init_names(type(model)):
        value = getattr(model, name)
        if name == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
            # A Generator's state is not needed to reproduce the fitted posterior.
            value = None
        settings[name] = _json_value(value, f"{type(model).__name__}.{name}")
    return {
        "class": type(model).__name__,
        "settings": settings,
        "fitted": _fitted_attributes(model, arrays),
    }


def _fitted_attributes(model, arrays: dict) -> dict:
    """Record the model's fitted attributes (public names ending in ``_``) other than ``posterior_``.

    Numeric arrays and scalars go to ``arrays`` under ``fitted/<name>``;
    None, text and lists of labels go into the JSON. Other values are
    listed as unsaved and are missing after loading unless the model
    rebuilds them from its posterior.
    """
    record = {}
    for name, value in vars(model).items():
        if not name.endswith("_") or name.startswith("_") or name == "posterior_":
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[f"fitted/{name}"] = value
            record[name] = {"kind": "array"}
        elif isinstance(value, np.ndarray) and value.dtype.kind in "UO":
            # Text labels, such as HierarchicalNormal.group_labels_ read from a CSV column
            # or from a pandas column of object dtype, which are stored as unicode.
            text = _text_array(value, f"{type(model).__name__}.{name}")
            record[name] = {"kind": "text_array", "dtype": text.dtype.str, "value": text.tolist()}
        elif isinstance(value, np.ndarray):
            raise TypeError(
                f"cannot save {type(model).__name__}.{name}: arrays of dtype {value.dtype} are not "
                f"supported, because files hold numeric and text arrays only; convert it to numbers "
                f"or strings before saving"
            )
        elif isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            arrays[f"fitted/{name}"] = np.asarray(value)
            builtin = type(value).__name__ if type(value) in (bool, int, float) else None
            record[name] = {"kind": "scalar", "type": builtin}
        elif value is None or isinstance(value, str):
            record[name] = {"kind": "json", "value": value}
        elif isinstance(value, (list, tuple)) and all(
                isinstance(item, (str, bool, int, float, np.generic)) for item in value):
            record[name] = {"kind": "json", "value": [json_label(item) for item in value]}
        else:
            record[name] = {"kind": "unsaved", "type": type(value).__name__}
    return record


def _text_array(value: np.ndarray, description: str) -> np.ndarray:
    """Return a unicode copy of a text array; raise TypeError for an object array holding non-strings.

    Object arrays are never pickled, so only those whose every item is a str are kept.
    """
    if value.dtype.kind == "U":
        return value
    other = [item for item in value.flat if not isinstance(item, str)]
    if other:
        raise TypeError(
            f"cannot save {description}: it is an object array containing "
            f"{type(other[0]).__name__} values such as {other[0]!r}, and files hold no pickled "
            f"objects, only numeric and text arrays. Refit with labels of one plain type, for "
            f"example numpy.asarray(labels, dtype=str)"
        )
    return value.astype(str) if value.size else value.astype("<U1")


def _result_metadata(result, arrays: dict) -> dict:
    arrays["result/exact_sites"] = np.asarray(result.exact_sites, dtype=np.int64)
    arrays["result/exact_kl"] = np.asarray(result.exact_kl, dtype=np.float64)
    arrays["result/exact_other_optimum"] = np.asarray(result.exact_other_optimum, dtype=bool)
    labels = result.row_labels
    return {"row_labels": None if labels is None else [json_label(label) for label in labels],
            "method": result.method}


def _init_names(cls) -> list[str]:
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _family_params(family: ExponentialFamily, owner: str) -> dict[str, np.ndarray]:
    params = {}
    for name in _init_names(type(family)):
        if not hasattr(family, name):
            raise TypeError(
                f"cannot save {owner}: {type(family).__name__} has no attribute {name!r} matching "
                f"its constructor argument"
            )
        params[name] = np.array(getattr(family, name), dtype=np.float64)
    return params


def _graph_metadata(graph: FactorGraph, arrays: dict) -> dict:
    variables = []
    for variable in graph.variables.values():
        record = {"name": variable.name, "role": variable.role}
        if isinstance(variable, GlobalVariable):
            record["family"] = type(variable.prior).__name__
            record["plates"] = list(variable.plates)
            params = _family_params(variable.prior, f"the prior of {variable.name!r}")
            record["params"] = list(params)
            for name, value in params.items():
                arrays[f"prior/{variable.name}/{name}"] = value
        elif isinstance(variable, LocalVariable):
            record["plate"] = variable.plate
            record["categories"] = variable.categories
        elif isinstance(variable, LocalBlock):
            record["plate"] = variable.plate
            record["family"] = None if variable.family is None else variable.family.__name__
            record["owner"] = variable.owner
        elif isinstance(variable, RaggedObservedVariable):
            record["plate"] = variable.plate
            record["ragged"] = True
            record["covariates"] = variable.covariates is not None
            arrays[f"data/{variable.name}"] = np.asarray(variable.data, dtype=np.float64)
            arrays[f"offsets/{variable.name}"] = np.asarray(variable.offsets, dtype=np.int64)
            if variable.covariates is not None:
                arrays[f"covariates/{variable.name}"] = np.asarray(variable.covariates, dtype=np.float64)
        else:
            record["plate"] = variable.plate
            arrays[f"data/{variable.name}"] = np.asarray(variable.data, dtype=np.float64)
        variables.append(record)
    factors = []
    for factor in graph.factors.values():
        args = {}
        for name in _init_names(type(factor)):
            if not hasattr(factor, name):
                raise TypeError(
                    f"cannot save factor {factor.name!r}: {type(factor).__name__} has no attribute "
                    f"{name!r} matching its constructor argument"
                )
            args[name] = _json_value(getattr(factor, name), f"argument {name!r} of factor {factor.name!r}")
        factors.append({"class": type(factor).__name__, "args": args})
    plates = [[plate.name, int(plate.size)] for plate in graph.plates.values()]
    return {"plates": plates, "variables": variables, "factors": factors}


def _posterior_metadata(posterior: Posterior, arrays: dict) -> dict:
    globals_ = {}
    for name, family in posterior.globals.items():
        params = _family_params(family, f"the posterior of {name!r}")
        globals_[name] = {"family": type(family).__name__, "params": list(params)}
        for param, value in params.items():
            arrays[f"posterior/{name}/{param}"] = value
    locals_, blocks = [], {}
    for name, value in posterior.locals.items():
        if isinstance(value, BlockState):
            blocks[name] = _block_state_metadata(name, value, arrays)
        else:
            arrays[f"locals/{name}"] = np.asarray(value, dtype=np.float64)
            locals_.append(name)
    arrays["posterior/elbo"] = np.array(posterior.elbo, dtype=np.float64)
    arrays["posterior/elbo_history"] = np.asarray(posterior.elbo_history, dtype=np.float64)
    record = {
        "globals": globals_,
        "locals": locals_,
        "n_iter": int(posterior.n_iter),
        "converged": bool(posterior.converged),
    }
    if blocks:
        record["blocks"] = blocks
    return record


def _block_state_metadata(name: str, state: BlockState, arrays: dict) -> dict:
    """Store a block state's arrays under ``blocks/<name>/`` and return the names that list them.

    Arrays keep their dtype, so a loaded block state is the fitted one bit for bit.
    """
    record = {"arrays": [], "ragged": [], "offsets": state.offsets is not None}
    for kind, store in (("arrays", state.arrays), ("ragged", state.ragged)):
        for key, value in store.items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf" or "/" in key:
                raise TypeError(
                    f"cannot save block {name!r}: its array {key!r} must be numeric and named "
                    f"without '/', got dtype {array.dtype}"
                )
            arrays[f"blocks/{name}/{kind}/{key}"] = array
            record[kind].append(key)
    if state.offsets is not None:
        arrays[f"blocks/{name}/offsets"] = np.asarray(state.offsets)
    return record


# Loading


def load(path):
    """Read a model or result written by :func:`save`.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    fitted model or InfluenceResult
        The same type that was saved, with the same posterior bit for bit,
        so every influence number is reproduced exactly.

    Raises
    ------
    TypeError
        If ``path`` is not a str or os.PathLike.
    ValueError
        If the file is missing or a directory, not an archive written by :func:`save`,
        truncated, changed after saving, of another format version, or
        internally inconsistent.
    """
    path = _check_path(path, "the .npz file written by fg_influence.io.save")
    arrays, metadata = _read_archive(path)
    try:
        return _rebuild(metadata, arrays, path)
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(
            f"cannot load {path}: the metadata is inconsistent ({error!r}), so the file was not "
            f"written by fg_influence.io.save or was changed after saving"
        ) from None


#: The first four bytes of a zip file: a local file header, or the end of
#: the central directory for an archive with no members.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def _unreadable_archive(path: Path, reason: str) -> ValueError:
    """Return the error for a file that is not a complete .npz archive, whether truncated or of another format."""
    return ValueError(
        f"cannot load {path}: not a readable fg_influence archive, because it is not a NumPy "
        f".npz (zip) file; pass a file written by fg_influence.io.save. A truncated or damaged "
        f"copy of such a file also gives this error ({reason})"
    )


def _read_archive(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if path.is_dir():
        raise ValueError(
            f"cannot load {path}: it is a directory, but path must be the .npz file written by "
            f"fg_influence.io.save"
        )
    if not path.is_file():
        raise ValueError(f"cannot load {path}: file not found; check the path")
    # The file is opened here, not by np.load, so that the with block closes it on
    # every error path: np.load(path) leaves its own handle open when the zip
    # directory is unreadable (numpy 2.4), which shows as a ResourceWarning.
    with open(path, "rb") as handle:
        signature = handle.read(len(ZIP_SIGNATURES[0]))
        if signature not in ZIP_SIGNATURES:
            # Without this check np.load would read a .npy file as one array and treat
            # other files, including a zip file cut to a few bytes, as pickles that
            # allow_pickle=False refuses, with advice about allow_pickle that does not apply here.
            raise _unreadable_archive(path, "it does not start with a zip signature")
        handle.seek(0)
        try:
            with np.load(handle, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            raise _unreadable_archive(path, str(error)) from None
    if METADATA_MEMBER not in arrays or DIGEST_MEMBER not in arrays:
        raise ValueError(f"cannot load {path}: {METADATA_MEMBER} is missing, so it was not written by save")
    text = arrays.pop(METADATA_MEMBER)
    digest = arrays.pop(DIGEST_MEMBER)
    if text.dtype != np.uint8 or text.ndim != 1:
        raise ValueError(f"cannot load {path}: {METADATA_MEMBER} must be a 1-D uint8 array")
    raw = text.tobytes()
    if hashlib.sha256(raw).digest() != digest.tobytes():
        raise ValueError(
            f"cannot load {path}: the metadata does not match its SHA-256 digest; the file was "
            f"changed after saving"
        )
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot load {path}: the metadata is not valid JSON ({error})") from None
    _check_header(metadata, path)
    _check_arrays(arrays, metadata["arrays"], path)
    return arrays, metadata


def _check_header(metadata, path: Path) -> None:
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"cannot load {path}: not an fg_influence file")
    version = metadata.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ValueError(
            f"cannot load {path}: format version {version!r} is not supported; this "
            f"fg_influence {__version__} reads versions {list(READABLE_VERSIONS)}. Load it with "
            f"the library version that wrote it ({metadata.get('library_version')!r})"
        )
    if metadata.get("kind") not in ("model", "result") or not isinstance(metadata.get("arrays"), dict):
        raise ValueError(f"cannot load {path}: the metadata has no valid 'kind' and 'arrays' entries")


def _check_arrays(arrays: dict, records: dict, path: Path) -> None:
    if set(arrays) != set(records):
        missing = sorted(set(records) - set(arrays))
        extra = sorted(set(arrays) - set(records))
        raise ValueError(f"cannot load {path}: arrays missing {missing}, unexpected {extra}")
    for name, record in records.items():
        array = arrays[name]
        if list(array.shape) != record.get("shape") or array.dtype.str != record.get("dtype"):
            raise ValueError(
                f"cannot load {path}: array {name!r} has shape {array.shape} and dtype "
                f"{array.dtype.str}, but the metadata records {record.get('shape')} and "
                f"{record.get('dtype')}"
            )
        if hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() != record.get("sha256"):
            raise ValueError(
                f"cannot load {path}: array {name!r} does not match its SHA-256 digest; the file "
                f"was changed after saving"
            )


def _subclasses(base) -> dict[str, type]:
    """Subclasses of ``base`` defined inside fg_influence, by class name."""
    found, stack = {}, [base]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.__module__.split(".")[0] == "fg_influence":
                found[sub.__name__] = sub
    return found


def _lookup(registry: dict[str, type], name, kind: str) -> type:
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    return registry[name]


def _family(registry, family_name, params: list, prefix: str, arrays: dict, description: str):
    cls = _lookup(registry, family_name, "family")
    expected = _init_names(cls)
    if list(params) != expected:
        raise ValueError(f"{description}: {family_name} takes parameters {expected}, the file lists {params}")
    values = [arrays[f"{prefix}/{name}"] for name in expected]
    try:
        return cls(*values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{description}: invalid {family_name} parameters ({error})") from None


def _rebuild_graph(record: dict, arrays: dict) -> FactorGraph:
    families = _subclasses(ExponentialFamily)
    factor_types = _subclasses(Factor)
    graph = FactorGraph()
    for name, size in record["plates"]:
        graph.add_plate(name, size)
    for variable in record["variables"]:
        name, role = variable["name"], variable["role"]
        if role == "global":
            prior = _family(families, variable["family"], variable["params"], f"prior/{name}", arrays,
                            f"the prior of {name!r}")
            graph.add_global(name, prior, tuple(variable["plates"]))
        elif role == "local":
            graph.add_local(name, variable["plate"], variable["categories"])
        elif role == "block":
            family = variable["family"]
            family = None if family is None else _lookup(families, family, "family")
            graph.add_block(name, variable["plate"], family=family, owner=variable["owner"])
        elif role == "observed" and variable.get("ragged", False):
            covariates = arrays[f"covariates/{name}"] if variable["covariates"] else None
            graph.add_ragged_observed(name, arrays[f"data/{name}"], arrays[f"offsets/{name}"],
                                      variable["plate"], covariates=covariates)
        elif role == "observed":
            graph.add_observed(name, arrays[f"data/{name}"], variable["plate"])
        else:
            raise ValueError(f"unknown variable role {role!r} for {name!r}")
    for factor in record["factors"]:
        cls = _lookup(factor_types, factor["class"], "factor")
        args = {key: _from_json_value(value) for key, value in factor["args"].items()}
        graph.add_factor(cls(**args))
    graph.validate()
    return graph


def _from_json_value(value):
    if isinstance(value, dict) and "tuple" in value:
        return tuple(value["tuple"])
    if isinstance(value, dict) and "list" in value:
        return list(value["list"])
    if isinstance(value, dict):
        return np.asarray(value["array"], dtype=np.float64).astype(np.dtype(value["dtype"]))
    return value


def _rebuild_posterior(record: dict, graph: FactorGraph, arrays: dict) -> Posterior:
    families = _subclasses(ExponentialFamily)
    globals_ = {}
    for variable in graph.variables_of_role("global"):
        name = variable.name
        entry = record["globals"][name]
        family = _family(families, entry["family"], entry["params"], f"posterior/{name}", arrays,
                         f"the posterior of {name!r}")
        if type(family) is not type(variable.prior) or family.batch_shape != variable.prior.batch_shape:
            raise ValueError(
                f"the posterior of {name!r} must be a {type(variable.prior).__name__} with batch "
                f"shape {variable.prior.batch_shape} like its prior"
            )
        globals_[name] = family
    locals_ = {}
    for variable in graph.variables_of_role("local"):
        resp = arrays[f"locals/{variable.name}"]
        expected = (graph.n_sites, graph.plates[variable.categories].size)
        if resp.shape != expected:
            raise ValueError(f"responsibilities of {variable.name!r} must have shape {expected}, got {resp.shape}")
        # Responsibilities from CAVI sum to 1 up to rounding; 1e-8 leaves room for that and nothing else.
        if not np.all(np.isfinite(resp)) or np.any(resp < 0) or not np.allclose(resp.sum(axis=1), 1.0, atol=1e-8):
            raise ValueError(f"responsibilities of {variable.name!r} must be finite, non-negative rows summing to 1")
        locals_[variable.name] = resp
    if set(record["locals"]) != set(locals_):
        raise ValueError(f"the file lists local variables {record['locals']}, the graph has {sorted(locals_)}")
    blocks = record.get("blocks", {})
    if set(blocks) != set(block_names(graph)):
        raise ValueError(f"the file has block states {sorted(blocks)}, the graph has blocks {block_names(graph)}")
    for name in block_names(graph):
        locals_[name] = _rebuild_block_state(name, blocks[name], graph, arrays)
    data = {v.name: v.data for v in graph.variables_of_role("observed")}
    return Posterior(
        graph, globals_, locals_, data,
        elbo=float(arrays["posterior/elbo"]),
        elbo_history=arrays["posterior/elbo_history"].tolist(),
        n_iter=int(record["n_iter"]),
        converged=bool(record["converged"]),
    )


def _rebuild_block_state(name: str, record: dict, graph: FactorGraph, arrays: dict) -> BlockState:
    """Rebuild a block state, checking its site axis and the offsets of its ragged arrays."""
    values = {key: arrays[f"blocks/{name}/arrays/{key}"] for key in record["arrays"]}
    ragged = {key: arrays[f"blocks/{name}/ragged/{key}"] for key in record["ragged"]}
    offsets = arrays[f"blocks/{name}/offsets"] if record["offsets"] else None
    leading = sorted({value.shape[0] if value.ndim else -1 for value in values.values()})
    if leading != [graph.n_sites]:
        raise ValueError(
            f"the arrays of block {name!r} must have one entry per site ({graph.n_sites}) on their "
            f"first axis, got leading sizes {leading}"
        )
    if ragged and offsets is None:
        raise ValueError(f"block {name!r} has ragged arrays {sorted(ragged)} but no offsets")
    if offsets is not None:
        _check_block_offsets(name, offsets, ragged, graph.n_sites)
    return BlockState(values, ragged, offsets)


def _check_block_offsets(name: str, offsets: np.ndarray, ragged: dict, n_sites: int) -> None:
    """Check that ``offsets`` split the rows of a block's ragged arrays into ``n_sites`` non-empty sites."""
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.size != n_sites + 1:
        raise ValueError(
            f"the offsets of block {name!r} must be {n_sites + 1} integers, got shape "
            f"{offsets.shape} and dtype {offsets.dtype}"
        )
    rows = sorted({value.shape[0] if value.ndim else -1 for value in ragged.values()})
    if len(rows) > 1:
        raise ValueError(f"the ragged arrays of block {name!r} have different row counts {rows}")
    # Without ragged arrays any strictly increasing offsets from 0 will do.
    last = rows[0] if rows else offsets[-1]
    if offsets[0] != 0 or offsets[-1] != last or np.any(np.diff(offsets) <= 0):
        raise ValueError(
            f"the offsets of block {name!r} must increase strictly from 0 to the number of "
            f"ragged rows ({last}), got {offsets[:5].tolist()}...{offsets[-2:].tolist()}"
        )


def _rebuild(metadata: dict, arrays: dict, path: Path):
    from . import models
    from .influence import InfluenceResult
    from .influence.result import METHODS

    try:
        graph = _rebuild_graph(metadata["graph"], arrays)
        if metadata["format_version"] < 2 and _format_version(graph) > 1:
            raise ValueError("a version 1 file cannot hold local blocks or ragged observed variables")
        posterior = _rebuild_posterior(metadata["posterior"], graph, arrays)
    except ValueError as error:
        raise ValueError(f"cannot load {path}: {error}") from None

    if metadata["kind"] == "result":
        sites = arrays["result/exact_sites"]
        values = arrays["result/exact_kl"]
        if sites.ndim != 1 or values.shape != sites.shape or np.any((sites < 0) | (sites >= graph.n_sites)):
            raise ValueError(f"cannot load {path}: the exact refit arrays are inconsistent")
        # Files written before results recorded their method hold division results.
        method = metadata["result"].get("method", "division")
        if method not in METHODS:
            raise ValueError(f"cannot load {path}: unknown method {method!r}; known: {list(METHODS)}")
        result = InfluenceResult(posterior, method=method)
        result.row_labels = _checked_labels(metadata["result"]["row_labels"], graph.n_sites, path)
        result.exact_sites = sites.astype(np.int64)
        result.exact_kl = values
        # Files written before the other-optimum check have no such array.
        other_optimum = arrays.get("result/exact_other_optimum")
        if other_optimum is None:
            other_optimum = np.zeros(sites.shape, dtype=bool)
        elif other_optimum.shape != sites.shape or other_optimum.dtype != bool:
            raise ValueError(f"cannot load {path}: the exact refit arrays are inconsistent")
        result.exact_other_optimum = other_optimum
        return result

    record = metadata["model"]
    cls = _lookup({name: getattr(models, name) for name in models.__all__}, record["class"], "model")
    settings = {key: _from_json_value(value) for key, value in record["settings"].items()}
    if set(settings) != set(_init_names(cls)):
        raise ValueError(f"cannot load {path}: settings {sorted(settings)} do not match {cls.__name__}")
    model = cls(**settings)
    if hasattr(model, "_set_posterior"):
        model._set_posterior(posterior)
    else:
        model.posterior_ = posterior
    _restore_fitted_attributes(model, record["fitted"], arrays)
    _restore_private_state(model)
    if getattr(model, "row_labels_", None) is not None:
        _checked_labels(model.row_labels_, graph.n_sites, path)
    return model


def _restore_fitted_attributes(model, record: dict, arrays: dict) -> None:
    builtins = {"bool": bool, "int": int, "float": float}
    for name, entry in record.items():
        kind = entry["kind"]
        if kind == "array":
            setattr(model, name, arrays[f"fitted/{name}"])
        elif kind == "scalar":
            value = arrays[f"fitted/{name}"]
            if value.ndim != 0:
                raise ValueError(f"fitted attribute {name!r} must be a scalar, got shape {value.shape}")
            convert = builtins.get(entry["type"])
            setattr(model, name, value[()] if convert is None else convert(value.item()))
        elif kind == "json":
            setattr(model, name, entry["value"])
        elif kind == "text_array":
            dtype = np.dtype(entry["dtype"])
            if dtype.kind != "U":
                raise ValueError(f"fitted attribute {name!r} must have a text dtype, got {dtype}")
            setattr(model, name, np.array(entry["value"], dtype=dtype))


def _restore_private_state(model) -> None:
    """Set the private attributes that a model's fit leaves for its later methods."""
    from .models import HiddenMarkovModel

    if isinstance(model, HiddenMarkovModel):
        # time_step_influence rebuilds the graph for its refits from the
        # priors that fit resolved against the data: those of the fitted graph.
        variables = model.posterior_.graph.variables
        model._priors = {f"{name}_prior": variables[name].prior
                         for name in ("initial", "transition", "emission")}


def _checked_labels(labels, n_sites: int, path: Path):
    if labels is not None and (not isinstance(labels, list) or len(labels) != n_sites):
        raise ValueError(f"cannot load {path}: the row labels must be a list of {n_sites} entries")
    return labels
