"""The control plane's two forms: compiled (the build) and interpreted (its source).

setup.py compiles the engine's control plane from its Python source; the same
source runs interpreted where no build is present. YIDI_INTERPRETED=1 makes the
package import that source even beside a build, and the engine's conformance and
differential tests run again that way, with the same test bodies.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

from engine._compiled import compiled_modules

SHARED_BODIES = ("tests/test_conformance.py", "tests/test_differential.py")


def _env() -> dict:
    env = dict(os.environ, YIDI_INTERPRETED="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return env


def test_interpreted_mode_imports_every_compiled_module_from_source():
    names = sorted(compiled_modules())
    assert "engine.core.engine" in names
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    print(importlib.import_module(n).__file__)"
    out = subprocess.run([sys.executable, "-c", code, *names], env=_env(), cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert len(out) == len(names)
    assert all(f.endswith(".py") for f in out), out


def test_engine_tests_pass_interpreted():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SHARED_BODIES],
                       env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # "N failed" in the summary, not the "xfailed" of a strict xfail.
    assert " passed" in r.stdout and not re.search(r"\b[0-9]+ failed\b", r.stdout)
