"""The committed API reference matches the docstrings."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_api", ROOT / "docs" / "generate_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date():
    expected = _generator().build()
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == expected, "docs/api.md is out of date; run python docs/generate_api.py"


def test_numpydoc_sections_become_markdown():
    doc = "Summary.\n\nParameters\n----------\nx : ndarray, shape (N,)\n    The data.\n"
    text = _generator().numpydoc_to_markdown(doc)
    assert "**Parameters**" in text
    assert "- `x` : ndarray, shape (N,)\n  The data." in text
