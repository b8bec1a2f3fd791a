"""The engine modules compiled from their Python source (setup.py COMPILED_PY)."""
from __future__ import annotations

import hashlib
import json

import pytest

import engine.core.engine
from engine._compiled import check_fresh


def test_pipeline_runs_compiled():
    # The installed build compiles the control plane; the interpreted source is the fallback only.
    assert not engine.core.engine.__file__.endswith(".py"), engine.core.engine.__file__


def test_stale_build_is_refused(tmp_path):
    sub = tmp_path / "engine" / "sub"
    sub.mkdir(parents=True)
    src = sub / "mod.py"
    src.write_text("x = 1\n")
    so = sub / "mod.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    digests = tmp_path / "engine" / "_compiled_digests.json"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    digests.write_text(json.dumps({"engine/sub/mod.py": digest}))
    check_fresh(str(so), str(digests))  # built from this very source
    src.write_text("x = 2\n")
    with pytest.raises(ImportError, match="build_ext --inplace"):
        check_fresh(str(so), str(digests))
    check_fresh(str(src), str(digests))  # interpreted: nothing to compare
