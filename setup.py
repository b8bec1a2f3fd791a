"""Build the Cython kernels of core_ext.

Debug switches come from the environment, never from edits:
  YIDI_DEBUG=1   bounds and wraparound checks on, assertions kept, -O0 -g
  YIDI_TRACE=1   CYTHON_TRACE line tracing (for coverage and profilers)
"""
import glob
import hashlib
import json
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("YIDI_DEBUG") == "1"
trace = os.environ.get("YIDI_TRACE") == "1"

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
    "embedsignature": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if trace:
    directives["linetrace"] = True
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
cflags = ["-O0", "-g"] if debug else ["-O3"]

# C that is real C lives in real files beside the kernel that links it, declared
# to Cython in a .pxd (core_ext/lines_parse.pxd for lines_parse.h).
C_SOURCES = {"core_ext/_lines.pyx": ["core_ext/lines_parse.c"]}
C_HEADERS = sorted(glob.glob("core_ext/*.h"))
extensions = [
    Extension(
        "core_ext." + os.path.splitext(os.path.basename(p))[0],
        [p, *C_SOURCES.get(p, [])],
        include_dirs=[np.get_include(), "core_ext"],
        define_macros=macros,
        extra_compile_args=cflags,
        depends=C_HEADERS,
    )
    for p in sorted(glob.glob("core_ext/*.pyx"))
]

# The engine's control plane (the per-request checks and replies around the
# kernels) is plain Python, compiled as it is: the same source runs interpreted
# when no build is present. engine/_compiled.py refuses a compiled module whose
# source changed since the build (rebuild: python setup.py build_ext --inplace).
COMPILED_PY = [
    "engine/core/engine.py", "engine/core/settling.py", "engine/core/stepwise.py", "engine/core/visits.py", "engine/core/signin.py",
    "engine/core/round.py", "engine/core/records.py", "engine/core/reconcile.py", "engine/core/ledger.py",
    "engine/store/codec.py", "engine/store/steps.py", "engine/store/lookups.py", "engine/store/recon.py", "engine/store/writer.py",
    "engine/store/fold.py", "engine/store/store.py",
]
with open("engine/_compiled_digests.json", "w") as f:
    json.dump({p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in COMPILED_PY}, f, indent=1)
# annotation_typing off: the annotations are documentation, not C types (an int
# annotation would refuse a numpy integer, a list one a subclass).
py_directives = {"language_level": 3, "embedsignature": True, "annotation_typing": False}
if trace:
    py_directives["linetrace"] = True
extensions += [
    Extension(p[:-3].replace("/", "."), [p], define_macros=macros, extra_compile_args=cflags)
    for p in COMPILED_PY
]

setup(ext_modules=cythonize(extensions[:-len(COMPILED_PY)], compiler_directives=directives, quiet=True)
      + cythonize(extensions[-len(COMPILED_PY):], compiler_directives=py_directives, quiet=True))
