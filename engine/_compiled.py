"""Guard for the engine modules that setup.py compiles from their Python source.

A compiled module (`.so`) is imported in preference to its `.py`. If the source
was edited after the build, the stale build would silently run the old code: the
module refuses to import instead, naming the command that rebuilds it.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys


# setup.py writes the digests beside this file, keyed by each source's path from
# the folder that holds the package ("engine/core/engine.py").
DIGESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_compiled_digests.json")


def _source_key(src: str, digests: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(digests)))
    return os.path.relpath(os.path.abspath(src), root).replace(os.sep, "/")


def check_fresh(module_file: str, digests: str = DIGESTS) -> None:
    if module_file.endswith(".py"):
        return  # interpreted: nothing to compare
    here = os.path.dirname(module_file)
    name = os.path.basename(module_file).split(".")[0]
    src = os.path.join(here, name + ".py")
    if not os.path.exists(src):
        return  # an install without sources
    try:
        with open(digests) as f:
            built = json.load(f).get(_source_key(src, digests))
    except OSError:
        built = None
    with open(src, "rb") as f:
        now = hashlib.sha256(f.read()).hexdigest()
    if built != now:
        raise ImportError(
            f"{src} changed after it was compiled into {module_file}; "
            "rebuild with `python setup.py build_ext --inplace` (or `pip install -e .`)"
        )


class _SourceFirst:
    """A meta path finder that loads the compiled modules from their .py source."""

    def __init__(self, names: frozenset[str], root: str):
        self.names = names
        self.root = root

    def find_spec(self, name, path=None, target=None):
        if name not in self.names:
            return None
        src = os.path.join(self.root, *name.split(".")) + ".py"
        return importlib.util.spec_from_file_location(name, src, loader=importlib.machinery.SourceFileLoader(name, src))


def compiled_modules(digests: str = DIGESTS) -> frozenset[str]:
    """The dotted names of the modules setup.py compiles ("engine.core.engine", ...)."""
    try:
        with open(digests) as f:
            keys = json.load(f)
    except OSError:
        return frozenset()  # no build: everything runs from source already
    return frozenset(k[: -len(".py")].replace("/", ".") for k in keys)


def prefer_source() -> None:
    """Import the compiled modules from source from now on (YIDI_INTERPRETED=1)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(DIGESTS)))
    sys.meta_path.insert(0, _SourceFirst(compiled_modules(), root))
