"""The engine modules compiled from their Python source (setup.py COMPILED_PY)."""
from __future__ import annotations

import hashlib
import json

import pytest

import engine.pipeline
from engine._compiled import check_fresh


def test_pipeline_runs_compiled():
    # The installed build compiles the control plane; the interpreted source is the fallback only.
    assert not engine.pipeline.__file__.endswith(".py"), engine.pipeline.__file__


def test_stale_build_is_refused(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("x = 1\n")
    so = tmp_path / "mod.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    (tmp_path / "_compiled_digests.json").write_text(json.dumps({"engine/mod.py": digest}))
    check_fresh(str(so))  # built from this very source
    src.write_text("x = 2\n")
    with pytest.raises(ImportError, match="build_ext --inplace"):
        check_fresh(str(so))
    check_fresh(str(src))  # interpreted: nothing to compare
