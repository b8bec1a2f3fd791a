"""The hub's log: one JSON line per request and per event, written by a thread of its own (docs/server.md, "Logs").

Every line is a JSON object with `time` (the hub's local time with its offset, to
the millisecond), `level` and `event`. A request's line (`event` "request") says
`transport`, `infno`, `msgid`, `institution` (the envelope's `fixmedins_code`, or
else a hospital credential's), `paasid` (the credential that signed it; "" under
`--no-auth`), `err_code` ("" for a success, as in `yidi_requests_total`) and `ms`,
from the request's last byte read to its reply released. Nothing of a person goes
there: no `psn_no`, name, certificate number or amount. The hub's events (start,
stop, reload, fail-stop, and what the store and the engine log) are lines of the
same stream, with `msg` and the event's fields.

Writing never holds the hub. The event-loop thread puts one entry per batch (its
request lines, still as tuples) into a bounded queue (`LOG_QUEUE_ENTRIES_MAX`), and
logging's records go there through a QueueHandler; the writer thread wakes every
`LOG_FLUSH_S`, takes everything queued, encodes it with orjson, writes it and
flushes: one wake-up and one flush for many batches, never one a batch (at 1,000
requests/s a batch holds a few requests, and a wake-up a batch cost more than the
lines). When the queue is full, the entry is dropped and its lines counted
(`yidi_log_dropped_total`); the writer says how many were dropped in a line of
their own once it catches up.
"""
from __future__ import annotations

import copy
import datetime
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson
from prometheus_client.core import CounterMetricFamily

from engine.hub.reload import ReloadRefused

# Entries (one batch's request lines, or one event) waiting for the writer thread. A batch
# holds at most batch_max lines, so this bounds the lines held to about a million at worst,
# a few seconds of a saturated hub: enough to ride out a slow disk for a moment.
LOG_QUEUE_ENTRIES_MAX = 4096
REQUEST_LOG_MODES = ("all", "errors", "off")  # --request-log: every request, those refused, none
LOG_LEVELS = ("debug", "info", "warning", "error")  # --log-level: the hub's events
FILE_BUFFER_BYTES = 1 << 16
# How often the writer thread takes what is queued: a line reaches the file at most this late.
LOG_FLUSH_S = 0.1
# At stop, how long the writer thread gets to write what is queued: a log that cannot be
# written (a stderr nobody reads) must not keep a drained hub from exiting.
LOG_DRAIN_S = 10.0


def _time_text(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


class RequestLines:
    """The request lines of one batch (or of one refusal), as captured on the event-loop thread.

    `rows` are tuples (t0, transport, infno, msgid, institution, paasid, err_code); `t_s` and
    `t_perf` are the wall and perf_counter times of their release."""

    __slots__ = ("rows", "t_s", "t_perf")

    def __init__(self, rows: list[tuple]):
        self.rows = rows
        self.t_s = 0.0
        self.t_perf = 0.0


class _Handler(logging.Handler):
    """On the writer thread: encodes entries as JSON lines and writes them to one binary stream."""

    def __init__(self, log: "HubLog", stream: BinaryIO):
        super().__init__()
        self.log = log
        self.stream = stream
        self.dropped_said = 0

    def emit(self, record: Any) -> None:
        is_requests = type(record) is RequestLines
        try:
            self._write(self._requests(record) if is_requests else self._event(record))
        except Exception:  # noqa: BLE001  a full disk, a closed stderr: the hub goes on, the lines are counted
            self.log.drop(len(record.rows) if is_requests else 1)

    def _write(self, data: bytes) -> None:
        stream = self.stream
        stream.write(data)
        dropped = self.log.dropped
        if dropped != self.dropped_said:
            stream.write(orjson.dumps({"time": _time_text(time.time()), "level": "warning", "event": "log-dropped",
                                       "msg": "the log's queue was full: lines dropped (yidi_log_dropped_total)",
                                       "lines": dropped - self.dropped_said}, option=orjson.OPT_APPEND_NEWLINE))
            self.dropped_said = dropped

    def flush(self) -> None:
        with self.lock:
            try:
                if self.stream is not None:  # None once stopped (logging's own flush at exit comes later)
                    self.stream.flush()
            except OSError:
                pass  # the lines stay in the buffer: the next flush tries again

    @staticmethod
    def _requests(batch: RequestLines) -> bytes:
        when = _time_text(batch.t_s)
        t1 = batch.t_perf
        dumps = orjson.dumps
        out = []
        for t0, transport, infno, msgid, institution, paasid, err_code in batch.rows:
            line = {"time": when, "level": "warning" if err_code else "info", "event": "request",
                    "transport": transport, "infno": infno, "msgid": msgid, "institution": institution,
                    "paasid": paasid, "err_code": err_code, "ms": round((t1 - t0) * 1e3, 3)}
            try:
                out.append(dumps(line))
            except orjson.JSONEncodeError:  # a lone surrogate a JSON client sent in its msgid
                out.append(dumps({k: v.encode("utf-8", "replace").decode() if isinstance(v, str) else v
                                  for k, v in line.items()}))
        out.append(b"")
        return b"\n".join(out)

    def _event(self, record: logging.LogRecord) -> bytes:
        line = {"time": _time_text(record.created), "level": record.levelname.lower(),
                "event": getattr(record, "event", "log"), "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE, default=str)

    def reopen(self, stream: BinaryIO | None) -> None:
        """Write to `stream` from now on, and close the old one (what it holds is written first)."""
        with self.lock:  # never within an emit
            old, self.stream = self.stream, stream
            try:
                old.close()
            except OSError:
                pass


class _QueueHandler(logging.handlers.QueueHandler):
    """logging's records into the bounded queue: a full queue drops and counts, never waits."""

    def __init__(self, log: "HubLog"):
        super().__init__(log.queue)
        self.log = log

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message and traceback as text now (the arguments may change after this thread goes
        # on), in a copy (other handlers see the record as it was); the writer thread makes the JSON.
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: Any) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.log.drop(1)


class _Writer:
    """The writer thread: every LOG_FLUSH_S (or at once when stopped) it takes what the queue holds, hands it
    to the handler and flushes."""

    def __init__(self, q: queue.Queue, handler: _Handler):
        self.queue = q
        self.handler = handler
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yidi-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        q, handle = self.queue, self.handler.handle
        while True:
            stopping = self._stopped.wait(LOG_FLUSH_S)
            while True:
                try:
                    entry = q.get_nowait()
                except queue.Empty:
                    break
                handle(entry)
            self.handler.flush()
            if stopping:
                return

    def stop(self) -> bool:
        """Write what is queued, within LOG_DRAIN_S; False when the writer did not finish in time."""
        self._stopped.set()
        self._thread.join(LOG_DRAIN_S)
        return not self._thread.is_alive()


class HubLog:
    """The hub's log, from `start()` to `stop()`: logging's records (the root logger) and the request lines
    (`capture`, `released`, `refusal`) into one JSON-lines stream: a file (`path`), or stderr."""

    name = "log"  # a Reloadable (engine.hub.reload): SIGHUP reopens the file, for log rotation

    def __init__(self, path: str | None = None, level: str = "info", requests: str = "all",
                 entries_max: int = LOG_QUEUE_ENTRIES_MAX):
        if requests not in REQUEST_LOG_MODES:
            raise ValueError(f"--request-log {requests!r}: want one of {', '.join(REQUEST_LOG_MODES)}")
        if level not in LOG_LEVELS:
            raise ValueError(f"--log-level {level!r}: want one of {', '.join(LOG_LEVELS)}")
        self.path = path
        self.level = level
        self.requests = requests
        self.errors_only = requests == "errors"
        self.queue: queue.Queue = queue.Queue(entries_max)
        self.dropped = 0  # lines dropped because the queue was full (yidi_log_dropped_total)
        self._dropped_lock = threading.Lock()
        self._handler: _Handler | None = None
        self._writer: _Writer | None = None
        self._root_handler: _QueueHandler | None = None

    def _open(self) -> BinaryIO:
        if self.path is None:
            return os.fdopen(os.dup(sys.stderr.fileno()), "ab", buffering=FILE_BUFFER_BYTES)
        try:
            return open(self.path, "ab", buffering=FILE_BUFFER_BYTES)
        except OSError as e:
            raise OSError(f"--log-file {self.path}: cannot be opened for writing ({e.strerror or e})") from None

    def start(self) -> "HubLog":
        """Open the stream (OSError: one line naming --log-file) and start the writer thread; route logging here."""
        self._handler = _Handler(self, self._open())
        self._writer = _Writer(self.queue, self._handler)
        self._writer.start()
        self._root_handler = _QueueHandler(self)
        root = logging.getLogger()
        root.addHandler(self._root_handler)
        root.setLevel(self.level.upper())
        return self

    def stop(self) -> None:
        """Write what is queued, then close the stream; logging's records go nowhere after this."""
        if self._root_handler is not None:
            logging.getLogger().removeHandler(self._root_handler)
            self._root_handler = None
        if self._writer is not None:
            if self._writer.stop():
                self._handler.reopen(None)  # flushes and closes the stream
            self._writer = None

    def __enter__(self) -> "HubLog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def drop(self, lines: int) -> None:
        with self._dropped_lock:
            self.dropped += lines

    # ------------------------------------------------------------ request lines (the event-loop thread)

    def capture(self, items: list, reqs: list, replies: list) -> RequestLines | None:
        """The lines of a batch just computed (engine.hub.hub.Admitted, engine.core.records.Request and
        Reply, in order), before the replies are encoded and dropped; None when none is to be logged."""
        if self.requests == "off":
            return None
        errors_only = self.errors_only
        rows = []
        for it, req, rep in zip(items, reqs, replies):
            err_code = rep.err_code or ""
            if errors_only and not err_code:
                continue
            cred = it.cred
            institution = req.fixmedins_code or (cred.fixmedins_code if cred is not None else "")
            rows.append((it.t0, "tcp" if it.conn is not None else "http", req.infno or "", rep.inf_refmsgid,
                         institution, "" if cred is None else cred.paasid, err_code))
        return RequestLines(rows) if rows else None

    def released(self, lines: RequestLines) -> None:
        """The batch's replies are released now: queue its lines (or drop and count them)."""
        lines.t_perf = time.perf_counter()
        lines.t_s = time.time()
        try:
            self.queue.put_nowait(lines)
        except queue.Full:
            self.drop(len(lines.rows))

    def refusal(self, transport: str, infno: str, msgid: str, institution: str, cred: Any, err_code: str,
                t0: float) -> None:
        """A request answered by a transport itself (E_BUSY, E_AUTH, E_LIMIT), not by a batch."""
        if self.requests != "off":
            self.released(RequestLines([(t0, transport, infno, msgid, institution,
                                         "" if cred is None else cred.paasid, err_code)]))

    # ------------------------------------------------------------ what the hub's metrics and reload see

    def collector(self):
        """A Prometheus collector of yidi_log_dropped_total, for the hub's registry."""
        log = self

        class _Dropped:
            def collect(self):
                yield CounterMetricFamily("yidi_log_dropped", "Log lines dropped because the log's queue was "
                                          "full (the disk or stderr slower than the hub)", value=log.dropped)

        return _Dropped()

    def load(self) -> None:
        """SIGHUP, on a worker thread: open the file again, after a rotation moved it (what was queued goes
        to the new file); ReloadRefused when it cannot be opened, and the old one is kept."""
        if self.path is None or self._handler is None:
            return
        try:
            stream = self._open()
        except OSError as e:
            raise ReloadRefused(str(e)) from None
        self._handler.reopen(stream)

    def apply(self, loaded: None) -> dict[str, Any]:
        return {"file": self.path or "stderr", "requests": self.requests, "dropped": self.dropped}


def event(name: str, msg: str, *args: Any, level: int = logging.INFO, **fields: Any) -> None:
    """Log one of the hub's events (`event` name and its fields), as a line of the hub's log."""
    logging.getLogger("yidi.server").log(level, msg, *args, extra={"event": name, "fields": fields})
