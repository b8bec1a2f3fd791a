"""yidi: the settlement engine (SETTLEMENT.md). The command line is engine.cli."""
import os as _os

# numpy's OpenBLAS would start a spinning thread per core; the engine does no
# linear algebra, and on a small hub those cores belong to the server and the store.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
