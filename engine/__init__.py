"""yidi: the settlement hub (docs/contract.md). The command line is engine.cli."""
import os as _os

# numpy's OpenBLAS would start a spinning thread per core; the engine does no
# linear algebra, and on a small hub those cores belong to the server and the store.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# YIDI_INTERPRETED=1 runs the control plane from its Python source even where a
# compiled build of it is present (engine/_compiled.py), so that the tests can run
# one test body both ways.
if _os.environ.get("YIDI_INTERPRETED") == "1":
    from engine._compiled import prefer_source as _prefer_source

    _prefer_source()
