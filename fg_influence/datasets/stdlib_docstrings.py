"""A text corpus available offline everywhere: docstrings of Python's standard library.

Each documented function, method or class in the standard library's
source files is one document. The files are parsed with ``ast``, never
imported, so building the corpus runs no library code. The exact documents
depend on the Python version.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

#: Folders of the standard library that hold tests, demos or vendored code.
SKIPPED_FOLDERS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
                   "ensurepip", "__pycache__", "config-3", "tkinter", "pydoc_data"}

#: Modules whose docstrings are mostly doctest sessions or drawing commands.
SKIPPED_MODULES = {"turtle", "_pydecimal", "decimal", "this", "antigravity", "doctest", "pydoc"}

#: Common English words and Python docstring boilerplate left out of the vocabulary.
STOP_WORDS = frozenset("""
a about above after again against all also an and any are as at be because been before being below
between both but by can could did do does doing down during each either else etc even ever every
few for from further given had has have having here how however if in into is it its itself just
may might more most much must no nor not now of off on once one only or other otherwise our out over
own same see should since so some such than that the their them then there these they this those
through to too under until up upon use used uses using very was way we were what when where whether
which while who whom why will with within without would yet you your return returns returned none
true false default object objects value values argument arguments function method class instance
new name names given set get called call calls first second two new note example otherwise
""".split())

TOKEN = re.compile(r"[a-z][a-z]{2,}")


@dataclass(frozen=True)
class TextCorpus:
    """A document-word count matrix with its vocabulary and document names."""

    counts: scipy.sparse.csr_matrix
    vocabulary: tuple[str, ...]
    document_names: tuple[str, ...]
    description: str


def tokenize(text: str) -> list[str]:
    """Lower-case alphabetic words of at least 3 letters, without stop words."""
    return [word for word in TOKEN.findall(text.lower()) if word not in STOP_WORDS]


def stdlib_docstrings(stdlib: Path | None = None) -> list[tuple[str, str]]:
    """(qualified name, docstring) of every documented function and class in the standard library."""
    root = Path(sysconfig.get_paths()["stdlib"]) if stdlib is None else Path(stdlib)
    documents = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_FOLDERS or part.startswith("config-") for part in relative.parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        module = ".".join(relative.with_suffix("").parts)
        if module in SKIPPED_MODULES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    documents.append((f"{module}.{node.name}", _without_doctests(docstring)))
    return documents


def _without_doctests(text: str) -> str:
    """The docstring without interactive examples (lines from '>>>' to the next blank line)."""
    kept, in_example = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_example = True
        elif not stripped:
            in_example = False
        if not in_example:
            kept.append(line)
    return "\n".join(kept)


def load_stdlib_docstrings(*, min_tokens: int = 8, min_document_frequency: int = 5,
                           max_document_fraction: float = 0.2, max_vocabulary: int = 3000,
                           max_documents: int | None = None, stdlib: Path | None = None) -> TextCorpus:
    """Count matrix of the standard library's docstrings.

    Parameters
    ----------
    min_tokens : int
        Documents with fewer tokens (after the vocabulary cut) are dropped.
    min_document_frequency, max_document_fraction : int, float
        Words in fewer documents, or in a larger fraction of them, are dropped.
    max_vocabulary : int
        At most this many words, the most frequent by document count.
    max_documents : int, optional
        Keep every k-th document so that at most this many remain (for quick runs).
    stdlib : path, optional
        Folder of the standard library; default the running interpreter's.
    """
    documents = stdlib_docstrings(stdlib)
    tokens = [tokenize(text) for _, text in documents]
    frequency = Counter(word for words in tokens for word in set(words))
    limit = max_document_fraction * len(tokens)
    eligible = [(count, word) for word, count in frequency.items() if min_document_frequency <= count <= limit]
    eligible.sort(key=lambda item: (-item[0], item[1]))
    vocabulary = sorted(word for _, word in eligible[:max_vocabulary])
    index = {word: i for i, word in enumerate(vocabulary)}

    rows, columns, values, names = [], [], [], []
    for (name, _), words in zip(documents, tokens):
        counted = Counter(index[word] for word in words if word in index)
        if sum(counted.values()) < min_tokens:
            continue
        row = len(names)
        names.append(name)
        for column, value in sorted(counted.items()):
            rows.append(row)
            columns.append(column)
            values.append(value)
    counts = scipy.sparse.csr_matrix((np.array(values, dtype=float), (rows, columns)),
                                     shape=(len(names), len(vocabulary)))
    if max_documents is not None and len(names) > max_documents:
        # NOTE: the vocabulary is still cut on the full corpus, so a few words may be unused.
        step = int(np.ceil(len(names) / max_documents))
        keep = np.arange(0, len(names), step)
        counts = counts[keep]
        names = [names[i] for i in keep]
    return TextCorpus(counts=counts, vocabulary=tuple(vocabulary), document_names=tuple(names),
                      description="Docstrings of Python's standard library, one document per "
                                  "documented function or class")
