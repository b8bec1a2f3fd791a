"""A child process for the crash tests: settles what it reads on stdin, acknowledges after commit.

    python tests/crash_child.py --data DIR --world DIR

stdin: batches, each a line `B <n>` followed by n request lines (JSON envelopes).
stdout: `READY` once the store is open; then, for each batch, after its commit
is durable, one line per request: `<msgid or ->\\t<reply JSON>`.

YIDI_CRASH_AT=<batch>:<point> makes the child SIGKILL itself in batch number
<batch> (counted from 0 in this process) at <point>: `before_write` (prepared,
nothing written), `in_transaction` (rows inserted, no COMMIT yet) or
`after_commit` (durable, not acknowledged).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.core.engine import Request  # noqa: E402
from engine.store import open_store  # noqa: E402
from engine.contract.wire import JSON  # noqa: E402

BATCH_REQUESTS_MAX = 4096


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _DieAtPersonLog:
    """The store's batch writer, until the person_log rows: the journal's are inserted, nothing committed."""

    def __init__(self, writer, person_log):
        self.writer, self.person_log = writer, person_log

    def execute(self, sql: str) -> None:
        self.writer.execute(sql)

    def executemany(self, stmt, rows) -> None:
        if stmt == self.person_log:
            assert self.writer.in_transaction
            _die()
        self.writer.executemany(stmt, rows)

    @property
    def in_transaction(self) -> bool:
        return self.writer.in_transaction


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--fold-rows", type=int, default=64)
    a = ap.parse_args()
    crash_batch, crash_point = -1, ""
    if os.environ.get("YIDI_CRASH_AT"):
        b, crash_point = os.environ["YIDI_CRASH_AT"].split(":")
        crash_batch = int(b)
    store = open_store(a.data, a.world, clock="inf_time", fold_rows=a.fold_rows)
    out = sys.stdout.buffer
    out.write(b"READY\n")
    out.flush()
    inp = sys.stdin.buffer
    batch_no = 0
    while True:
        head = inp.readline()
        if not head:
            break
        assert head.startswith(b"B "), head
        n = int(head[2:])
        assert 1 <= n <= BATCH_REQUESTS_MAX
        bodies = [inp.readline().rstrip(b"\n") for _ in range(n)]
        replies = store.engine.handle_batch([Request(b) for b in bodies])
        prepared = store.prepare(store.engine.take_changes())
        crash_here = batch_no == crash_batch
        if crash_here and crash_point == "before_write":
            _die()
        if crash_here and crash_point == "in_transaction" and prepared.changes:
            store._bw = _DieAtPersonLog(store._bw, store._stmts[2])
        store.write(prepared)
        if crash_here and crash_point == "after_commit":
            _die()
        buf = bytearray()
        for r in replies:
            buf += (r.inf_refmsgid or "-").encode() + b"\t" + JSON.encoder.encode(r) + b"\n"
        out.write(buf)
        out.flush()
        batch_no += 1
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
