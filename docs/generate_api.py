"""Build docs/api.md from the numpydoc docstrings of the public API.

Run ``python docs/generate_api.py`` after changing a public docstring or
signature; ``tests/test_api_docs.py`` fails while the committed file is out
of date. ``--check`` exits with status 1 instead of writing when the file
would change.

Each module below contributes the names in its ``__all__``. Classes list
their public methods and properties defined in the class itself. numpydoc
section headings become Markdown headings and parameter entries become
list items; other docstring text is kept as written.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import re
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "api.md"

#: Modules documented, in this order.
MODULES = [
    "fg_influence",
    "fg_influence.models",
    "fg_influence.influence",
    "fg_influence.influence.loo",
    "fg_influence.io",
    "fg_influence.plotting",
    "fg_influence.inference",
    "fg_influence.graph",
    "fg_influence.families",
    "fg_influence.datasets",
]

SECTION_UNDERLINE = re.compile(r"^-{3,}\s*$")
PARAMETER_LINE = re.compile(r"^(\*{0,2}[A-Za-z_][\w, *]*?)\s+:\s+(.+)$")
PARAMETER_SECTIONS = {"Parameters", "Returns", "Yields", "Raises", "Attributes", "Other Parameters",
                      "Warns"}


def numpydoc_to_markdown(doc: str) -> str:
    """Turn numpydoc section headings and parameter entries into Markdown."""
    lines = doc.splitlines()
    out: list[str] = []
    section = None
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and SECTION_UNDERLINE.match(following):
            section = line.strip()
            out.extend(["", f"**{section}**", ""])
            index += 2
            continue
        if section in PARAMETER_SECTIONS and line and not line.startswith(" "):
            match = PARAMETER_LINE.match(line)
            if match:
                out.append(f"- `{match.group(1)}` : {match.group(2)}")
            else:
                out.append(f"- `{line.strip()}`")
        elif section in PARAMETER_SECTIONS and line.startswith(" "):
            out.append("  " + line.strip())
        else:
            out.append(line)
        index += 1
    text = "\n".join(out)
    # Docstring examples are shown as plain code, so the docs tests do not run them twice.
    text = re.sub(r"((?:^[ ]*(?:>>>|\.\.\.).*\n?(?:^[ ]*\S.*\n?)*?)+)(?=^\s*$|\Z)",
                  lambda m: "```\n" + inspect.cleandoc(m.group(1)) + "\n```\n", text, flags=re.M)
    return text.strip()


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj) -> str:
    doc = inspect.getdoc(obj)
    return numpydoc_to_markdown(doc) if doc else "(no docstring)"


def _class_members(cls) -> list[str]:
    lines = []
    for name, member in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(member, (property, functools.cached_property)):
            lines += [f"#### `{cls.__name__}.{name}` (property)", "", _doc(member), ""]
        elif isinstance(member, (classmethod, staticmethod)):
            function = member.__func__
            lines += [f"#### `{cls.__name__}.{name}{_signature(function)}`", "", _doc(function), ""]
        elif inspect.isfunction(member):
            lines += [f"#### `{cls.__name__}.{name}{_signature(member)}`", "", _doc(member), ""]
    return lines


def document_module(name: str) -> list[str]:
    module = importlib.import_module(name)
    summary = (inspect.getdoc(module) or "").split("\n\n")[0]
    lines = [f"## `{name}`", "", summary, ""]
    for public in getattr(module, "__all__", []):
        obj = getattr(module, public)
        if public.startswith("__") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if getattr(obj, "__module__", "").split(".")[0] != "fg_influence":
            continue
        if inspect.isclass(obj):
            heading = f"### class `{public}{_signature(obj)}`"
            if issubclass(obj, BaseException):
                heading = f"### exception `{public}`"
            lines += [heading, "", _doc(obj), ""]
            if not issubclass(obj, BaseException):
                lines += _class_members(obj)
        else:
            lines += [f"### `{public}{_signature(obj)}`", "", _doc(obj), ""]
    return lines


def build() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/generate_api.py`; do not edit by hand.",
        "Shapes are given on the type lines; per-site arrays have the site axis first, and a",
        "shift is (value without the site) minus (value with all sites).",
        "",
    ]
    for name in MODULES:
        lines += document_module(name)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if docs/api.md is out of date instead of writing it")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date; run python docs/generate_api.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"Wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
