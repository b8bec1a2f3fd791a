# cython: language_level=3
"""The store's batch inserts, bound from Python rows and stepped without the GIL.

engine.store writes a batch of settlements as a few thousand rows in one
transaction. Through the sqlite3 module every row costs a bind per value with
type dispatch and adaptation checks, and every sqlite3_step gives the GIL back
and takes it again: the writer thread and the engine's thread, which computes
the next batch meanwhile, trade it thousands of times a commit. Here a batch of
rows is read into a C array of values while the GIL is held, then bound and
stepped with the GIL released for all of it; BEGIN and COMMIT (the WAL fsync)
run without the GIL too.

The SQLite functions are the ones the sqlite3 module itself uses: they are
looked up with dlsym in the library that `_sqlite3` loaded, never linked from
another copy. Two copies of SQLite in one process, each with a connection to
the same file, would not see each other's POSIX locks (SQLite keeps them per
library), and closing one could drop the other's locks. When `_sqlite3` does
not export them (SQLite linked into it statically and hidden), `available()` is
False and engine.store writes through the sqlite3 module as before.

Values: int (64-bit), str (UTF-8), bytes (BLOB) and None; anything else is a
TypeError before anything is bound.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdlib cimport free, malloc
from libc.string cimport strlen

import sqlite3 as _pysqlite
import _sqlite3

cdef extern from *:
    """
    #include <dlfcn.h>
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_stmt sqlite3_stmt;
    static struct {
        int (*open_v2)(const char*, sqlite3**, int, const char*);
        int (*close_v2)(sqlite3*);
        int (*exec)(sqlite3*, const char*, void*, void*, char**);
        int (*prepare_v2)(sqlite3*, const char*, int, sqlite3_stmt**, const char**);
        int (*bind_int64)(sqlite3_stmt*, int, long long);
        int (*bind_text)(sqlite3_stmt*, int, const char*, int, void (*)(void*));
        int (*bind_blob)(sqlite3_stmt*, int, const void*, int, void (*)(void*));
        int (*bind_null)(sqlite3_stmt*, int);
        int (*bind_parameter_count)(sqlite3_stmt*);
        int (*step)(sqlite3_stmt*);
        int (*reset)(sqlite3_stmt*);
        int (*clear_bindings)(sqlite3_stmt*);
        long long (*column_int64)(sqlite3_stmt*, int);
        int (*finalize)(sqlite3_stmt*);
        const char* (*errmsg)(sqlite3*);
        int (*extended_errcode)(sqlite3*);
        int (*get_autocommit)(sqlite3*);
        int (*busy_timeout)(sqlite3*, int);
        const char* (*libversion)(void);
        void (*free)(void*);
    } yidi_sq;

    /* Resolve yidi_sq from the shared object at `path` (already loaded): NULL, or the name missing. */
    static const char* yidi_sq_load(const char* path) {
        void* h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (h == NULL) return "dlopen";
        #define YIDI_SYM(field, name) \
            if ((*(void**) &yidi_sq.field = dlsym(h, name)) == NULL) return name;
        YIDI_SYM(open_v2, "sqlite3_open_v2")
        YIDI_SYM(close_v2, "sqlite3_close_v2")
        YIDI_SYM(exec, "sqlite3_exec")
        YIDI_SYM(prepare_v2, "sqlite3_prepare_v2")
        YIDI_SYM(bind_int64, "sqlite3_bind_int64")
        YIDI_SYM(bind_text, "sqlite3_bind_text")
        YIDI_SYM(bind_blob, "sqlite3_bind_blob")
        YIDI_SYM(bind_null, "sqlite3_bind_null")
        YIDI_SYM(bind_parameter_count, "sqlite3_bind_parameter_count")
        YIDI_SYM(step, "sqlite3_step")
        YIDI_SYM(reset, "sqlite3_reset")
        YIDI_SYM(clear_bindings, "sqlite3_clear_bindings")
        YIDI_SYM(column_int64, "sqlite3_column_int64")
        YIDI_SYM(finalize, "sqlite3_finalize")
        YIDI_SYM(errmsg, "sqlite3_errmsg")
        YIDI_SYM(extended_errcode, "sqlite3_extended_errcode")
        YIDI_SYM(get_autocommit, "sqlite3_get_autocommit")
        YIDI_SYM(busy_timeout, "sqlite3_busy_timeout")
        YIDI_SYM(libversion, "sqlite3_libversion")
        YIDI_SYM(free, "sqlite3_free")
        #undef YIDI_SYM
        return NULL;  /* the handle stays open: _sqlite3 is never unloaded */
    }
    #define YIDI_SQLITE_OK 0
    #define YIDI_SQLITE_ROW 100
    #define YIDI_SQLITE_DONE 101
    #define YIDI_SQLITE_CONSTRAINT 19
    #define YIDI_OPEN_READWRITE 0x00000002
    #define YIDI_OPEN_NOMUTEX 0x00008000
    """
    ctypedef struct sqlite3:
        pass
    ctypedef struct sqlite3_stmt:
        pass
    ctypedef struct yidi_sq_t:
        int (*open_v2)(const char*, sqlite3**, int, const char*) nogil
        int (*close_v2)(sqlite3*) nogil
        int (*exec)(sqlite3*, const char*, void*, void*, char**) nogil
        int (*prepare_v2)(sqlite3*, const char*, int, sqlite3_stmt**, const char**) nogil
        int (*bind_int64)(sqlite3_stmt*, int, long long) nogil
        int (*bind_text)(sqlite3_stmt*, int, const char*, int, void (*)(void*)) nogil
        int (*bind_blob)(sqlite3_stmt*, int, const void*, int, void (*)(void*)) nogil
        int (*bind_null)(sqlite3_stmt*, int) nogil
        int (*bind_parameter_count)(sqlite3_stmt*) nogil
        int (*step)(sqlite3_stmt*) nogil
        int (*reset)(sqlite3_stmt*) nogil
        int (*clear_bindings)(sqlite3_stmt*) nogil
        long long (*column_int64)(sqlite3_stmt*, int) nogil
        int (*finalize)(sqlite3_stmt*) nogil
        const char* (*errmsg)(sqlite3*) nogil
        int (*extended_errcode)(sqlite3*) nogil
        int (*get_autocommit)(sqlite3*) nogil
        int (*busy_timeout)(sqlite3*, int) nogil
        const char* (*libversion)() nogil
        void (*free)(void*) nogil
    yidi_sq_t yidi_sq
    const char* yidi_sq_load(const char* path)
    int YIDI_SQLITE_OK, YIDI_SQLITE_ROW, YIDI_SQLITE_DONE, YIDI_SQLITE_CONSTRAINT, YIDI_OPEN_READWRITE, YIDI_OPEN_NOMUTEX

cdef const char* _missing = yidi_sq_load(_sqlite3.__file__.encode())
UNAVAILABLE = None if _missing == NULL else (
    f"{_sqlite3.__file__} does not export {_missing.decode()} (SQLite linked into it statically?)")
if UNAVAILABLE is None:
    _version = yidi_sq.libversion().decode()
    if _version != _pysqlite.sqlite_version:
        UNAVAILABLE = f"SQLite {_version} found, but the sqlite3 module reports {_pysqlite.sqlite_version}"


def available() -> bool:
    """True when the writer can use the sqlite3 module's own SQLite (see the module docstring)."""
    return UNAVAILABLE is None


cdef enum:
    V_NULL = 0
    V_INT = 1
    V_TEXT = 2
    V_BLOB = 3


cdef struct Value:
    long long i
    const char* p
    int n
    int kind


cdef class Writer:
    """One read-write connection to an SQLite file, with statements prepared once.

    Use it from one thread at a time. `execute` runs SQL without parameters and
    without results (BEGIN, COMMIT, PRAGMA x = y); `executemany(k, rows)` inserts
    rows with statement k from `prepare`. Errors raise the sqlite3 module's
    exceptions (IntegrityError for a constraint, OperationalError otherwise).
    """

    cdef sqlite3* db
    cdef list stmts  # of int addresses, in prepare order
    cdef sqlite3_stmt** st
    cdef int n_st

    def __cinit__(self, str path, int busy_timeout_ms=5000):
        if UNAVAILABLE is not None:
            raise RuntimeError(UNAVAILABLE)
        self.db = NULL
        self.st = NULL
        self.n_st = 0
        cdef bytes p = path.encode()
        cdef int rc = yidi_sq.open_v2(p, &self.db, YIDI_OPEN_READWRITE | YIDI_OPEN_NOMUTEX, NULL)
        if rc != YIDI_SQLITE_OK:
            msg = yidi_sq.errmsg(self.db).decode() if self.db != NULL else f"code {rc}"
            yidi_sq.close_v2(self.db)
            self.db = NULL
            raise _pysqlite.OperationalError(f"{path}: {msg}")
        yidi_sq.busy_timeout(self.db, busy_timeout_ms)

    def __dealloc__(self):
        self._close()

    cdef void _close(self) noexcept:
        cdef int k
        if self.st != NULL:
            for k in range(self.n_st):
                yidi_sq.finalize(self.st[k])
            free(self.st)
            self.st = NULL
            self.n_st = 0
        if self.db != NULL:
            yidi_sq.close_v2(self.db)
            self.db = NULL

    def close(self) -> None:
        """Finalize the statements and close the connection (an open transaction is rolled back)."""
        self._close()

    cdef _raise(self, int rc, what):
        code = yidi_sq.extended_errcode(self.db)
        msg = f"{what}: {yidi_sq.errmsg(self.db).decode(errors='replace')}"
        if (code & 0xFF) == YIDI_SQLITE_CONSTRAINT:
            raise _pysqlite.IntegrityError(msg)
        raise _pysqlite.OperationalError(msg)

    cdef _open_db(self):
        if self.db == NULL:
            raise _pysqlite.ProgrammingError("the writer is closed")

    cdef sqlite3_stmt* _compile(self, str sql) except NULL:
        self._open_db()
        cdef sqlite3_stmt* s = NULL
        cdef bytes q = sql.encode()
        cdef int rc = yidi_sq.prepare_v2(self.db, q, <int> len(q), &s, NULL)
        if rc != YIDI_SQLITE_OK or s == NULL:
            self._raise(rc, sql)
        return s

    def prepare(self, str sql) -> int:
        """Prepare an INSERT (or any statement without results); returns its number for executemany."""
        cdef sqlite3_stmt* s = self._compile(sql)
        cdef sqlite3_stmt** grown = <sqlite3_stmt**> malloc((self.n_st + 1) * sizeof(sqlite3_stmt*))
        if grown == NULL:
            yidi_sq.finalize(s)
            raise MemoryError()
        cdef int k
        for k in range(self.n_st):
            grown[k] = self.st[k]
        grown[self.n_st] = s
        free(self.st)
        self.st = grown
        self.n_st += 1
        return self.n_st - 1

    def execute(self, str sql) -> None:
        """Run SQL without parameters or results (the GIL released: a COMMIT waits for the fsync)."""
        self._open_db()
        cdef bytes q = sql.encode()
        cdef const char* c = q
        cdef int rc
        with nogil:
            rc = yidi_sq.exec(self.db, c, NULL, NULL, NULL)
        if rc != YIDI_SQLITE_OK:
            self._raise(rc, sql)

    @property
    def in_transaction(self) -> bool:
        return self.db != NULL and yidi_sq.get_autocommit(self.db) == 0

    def executemany(self, int k, rows) -> int:
        """Insert every row (a tuple of one value per parameter) with statement k; returns the rows.

        The values are read with the GIL, then bound and stepped without it. The rows
        (and the str and bytes in them) are held until the last step.
        """
        self._open_db()
        if not 0 <= k < self.n_st:
            raise IndexError(f"no statement {k}")
        cdef tuple held = tuple(rows)
        cdef Py_ssize_t n = len(held), i, j, at
        if n == 0:
            return 0
        cdef sqlite3_stmt* s = self.st[k]
        cdef int m = yidi_sq.bind_parameter_count(s)
        cdef Value* v = <Value*> malloc(n * m * sizeof(Value))
        if v == NULL:
            raise MemoryError()
        cdef Py_ssize_t size
        cdef const char* text
        cdef int rc = YIDI_SQLITE_DONE, bad = -1
        try:
            for i in range(n):
                row = held[i]
                if type(row) is not tuple or len(<tuple> row) != m:
                    raise TypeError(f"row {i}: a tuple of {m} values expected, got {row!r:.80}")
                for j in range(m):
                    x = (<tuple> row)[j]
                    at = i * m + j
                    if x is None:
                        v[at].kind = V_NULL
                    elif type(x) is int:
                        v[at].kind = V_INT
                        v[at].i = PyLong_AsLongLong(x)
                    elif type(x) is str:
                        text = PyUnicode_AsUTF8AndSize(x, &size)
                        v[at].kind = V_TEXT
                        v[at].p = text
                        v[at].n = <int> size
                    elif type(x) is bytes:
                        v[at].kind = V_BLOB
                        v[at].p = PyBytes_AS_STRING(x)
                        v[at].n = <int> PyBytes_GET_SIZE(x)
                    else:
                        raise TypeError(f"row {i}, value {j + 1}: {type(x).__name__} is not int, str, bytes or None")
            with nogil:
                for i in range(n):
                    for j in range(m):
                        at = i * m + j
                        if v[at].kind == V_INT:
                            rc = yidi_sq.bind_int64(s, <int> j + 1, v[at].i)
                        elif v[at].kind == V_TEXT:
                            rc = yidi_sq.bind_text(s, <int> j + 1, v[at].p, v[at].n, NULL)
                        elif v[at].kind == V_BLOB:
                            rc = yidi_sq.bind_blob(s, <int> j + 1, v[at].p, v[at].n, NULL)
                        else:
                            rc = yidi_sq.bind_null(s, <int> j + 1)
                        if rc != YIDI_SQLITE_OK:
                            break
                    if rc == YIDI_SQLITE_OK:
                        rc = yidi_sq.step(s)
                    if rc != YIDI_SQLITE_DONE:
                        bad = <int> i
                        break
                    rc = yidi_sq.reset(s)
                    if rc != YIDI_SQLITE_OK:
                        bad = <int> i
                        break
                    rc = YIDI_SQLITE_DONE
            if bad >= 0:
                yidi_sq.reset(s)
                self._raise(rc, f"row {bad}")
            return n
        finally:
            yidi_sq.clear_bindings(s)  # no binding may outlive the values it points into
            free(v)

    def query_int(self, str sql) -> int:
        """The first column of the first row of a query without parameters (a PRAGMA's value, say)."""
        cdef sqlite3_stmt* s = self._compile(sql)
        cdef int rc
        try:
            rc = yidi_sq.step(s)
            if rc != YIDI_SQLITE_ROW:
                self._raise(rc, sql)
            return yidi_sq.column_int64(s, 0)
        finally:
            yidi_sq.finalize(s)
