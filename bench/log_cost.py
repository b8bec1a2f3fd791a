"""What the hub's request log costs, alone: the CPU of the process (both threads) per line.

    python bench/log_cost.py                  # batches of 256 back to back, and of 4 a millisecond apart

The same calls the hub makes (engine.hub.logs.HubLog: `capture` when a batch is
computed, `released` when it is released; the writer thread encodes and writes)
on batches shaped as the hub's, into a real file. Two shapes: a saturated hub's
(batches of 256, back to back) and a hub at 1,000 requests/s (batches of 4, a
millisecond apart, so the writer's wake-ups are not shared out over many lines).
The same loop without a log is subtracted, so the figure is the log's own. The
load campaigns measure it inside the hub (`python bench/serve_load.py --campaign
log-ab`), where a shared machine's noise is larger than the cost.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.contract.credential import Credential  # noqa: E402
from engine.contract.wire import JSON, Reply  # noqa: E402
from engine.core.records import Request  # noqa: E402
from engine.hub.hub import Admitted  # noqa: E402
from engine.hub.logs import HubLog  # noqa: E402

SHAPES = {"saturated": (256, 0.0), "1000/s": (4, 0.001)}  # name: (requests a batch, seconds between batches)


def _batch(n: int):
    cred = Credential("plat-53", "t" * 40, "", "530000")
    items = [Admitted(b"", JSON, None, None, time.perf_counter(), cred) for _ in range(n)]
    reqs = [Request(b"") for _ in range(n)]
    for r in reqs:
        r.infno, r.fixmedins_code = "2207", "H53010020000"
    replies = [Reply(0, f"H53010020000202612050000{i:06d}", "", "", "", "E_SCHEMA" if i % 50 == 0 else None)
               for i in range(n)]
    return items, reqs, replies


def _loop(log: HubLog | None, n: int, pause_s: float, batches: int) -> float:
    """CPU seconds of the process for `batches` batches of `n`, with the log or without."""
    items, reqs, replies = _batch(n)
    c0 = time.process_time()
    for _ in range(batches):
        if log is not None:
            log.released(log.capture(items, reqs, replies))
        if pause_s:
            time.sleep(pause_s)
    if log is not None:
        log.stop()  # what is queued is written: its CPU counts
    return time.process_time() - c0


def measure(lines: int, folder: str) -> dict:
    out = {}
    for name, (n, pause_s) in SHAPES.items():
        batches = max(1, lines // n)
        path = os.path.join(folder, f"log-{n}.jsonl")
        base_s = _loop(None, n, pause_s, batches)
        log = HubLog(path).start()
        with_s = _loop(log, n, pause_s, batches)
        with open(path, "rb") as f:
            written = sum(1 for _ in f)
        os.remove(path)
        out[name] = {"batch": n, "lines": batches * n, "written": written, "dropped": log.dropped,
                     "cpu_us_per_line": round(1e6 * (with_s - base_s) / (batches * n), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=40_000, help="lines of each shape (default 40,000)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yidi-log-cost-") as folder:
        r = measure(a.lines, folder)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
