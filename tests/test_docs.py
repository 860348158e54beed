"""The Python code in the README, docs and examples runs as written."""

import doctest
import importlib
import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)
DOCTEST_MODULES = ["fg_influence.graph.factor_graph"]


def _code_blocks():
    for path in DOCUMENTS:
        for number, block in enumerate(FENCE.findall(path.read_text()), start=1):
            yield pytest.param(block, id=f"{path.name}-block{number}")


@pytest.mark.parametrize("code", list(_code_blocks()))
def test_document_code_block_runs(code):
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_script_runs(path):
    runpy.run_path(str(path), run_name="__main__")


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name):
    failures, tried = doctest.testmod(importlib.import_module(name))
    assert tried > 0
    assert failures == 0
