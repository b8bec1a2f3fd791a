/* LZ4 (core_ext/lz4/lz4.c and lz4.h, BSD 2-Clause, Copyright (C) 2011-2020
 * Yann Collet; vendored unchanged from the python-lz4 4.4.5 sdist) compiled
 * into the one extension that uses it (core_ext/_pack.pyx), its symbols hidden
 * so that they never clash with another copy loaded in the same process. */
#define LZ4LIB_VISIBILITY __attribute__ ((visibility ("hidden")))
#include "lz4.c"
