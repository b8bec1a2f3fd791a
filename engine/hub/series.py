"""The hub's recent traffic, second by second, for the status page (engine.hub.status; docs/server.md, "Status page").

A ring of one slot a second over the last `SLOTS` seconds (15 minutes): replies,
settlements and reversals made durable, replies by err_code, and a latency
histogram. Nothing here is on the request path but `LatencyHistogram.observe`, one
bucket increment per reply released (engine.hub.hub.Hub._release); the counts are
read once a second (`Series.sample`) from the hub's Prometheus counters, which
already see every reply, E_BUSY and E_AUTH included, and the slot's share is the
difference from the last reading. Memory is fixed: `SLOTS` rows of
`LatencyHistogram.BUCKETS` counters, and at most one small dict of err_codes a slot.

Latency is in buckets an eighth of an octave wide (each bound 2^(1/8) times the one
before it, from 0.1 ms to a minute), so a p50 or p99 read from them as the bucket's
geometric middle is within 4.5 % of the exact value.
"""
from __future__ import annotations

import bisect
import math
import time

import numpy as np

SLOT_S = 1  # one slot a second
SLOTS = 900  # the last 15 minutes
CHART_STEP_S = 5  # the chart's points: five slots each (180 points)
RECENT_S = 60  # "the last minute" of the summaries


def _bounds() -> list[float]:
    low_s, high_s, per_octave = 1e-4, 60.0, 8
    n = math.ceil(per_octave * math.log2(high_s / low_s))
    return [low_s * 2 ** (i / per_octave) for i in range(n + 1)]


class LatencyHistogram:
    """Reply latencies since start, in fixed logarithmic buckets: `counts[k]` holds the latencies in
    [BOUNDS_S[k-1], BOUNDS_S[k]); the first bucket everything below 0.1 ms, the last everything from a
    minute on."""

    BOUNDS_S = _bounds()
    BUCKETS = len(BOUNDS_S) + 1

    __slots__ = ("counts",)

    def __init__(self):
        self.counts = [0] * self.BUCKETS

    def observe(self, latency_s: float) -> None:
        self.counts[bisect.bisect_right(self.BOUNDS_S, latency_s)] += 1


def quantile_s(hist: np.ndarray, q: float) -> float | None:
    """The q-quantile of a bucket histogram (LatencyHistogram's buckets) as the geometric middle of its
    bucket; None when it is empty."""
    total = int(hist.sum())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    k = int(np.searchsorted(np.cumsum(hist), rank))
    b = LatencyHistogram.BOUNDS_S
    if k == 0:
        return b[0]
    if k >= len(b):
        return b[-1]
    return math.sqrt(b[k - 1] * b[k])


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1e3, 3)


class Series:
    """The ring of slots. `read()` returns the hub's counters since start (replies by err_code,
    settlements, reversals) and `latency` is the histogram the hub feeds; `sample()`, once a second on
    the event loop, puts what they gained since the last call in the current slot."""

    def __init__(self, read, latency: LatencyHistogram):
        """`read() -> (replies by err_code ("" success), settlements, reversals)`, all since start."""
        self._read = read
        self.latency = latency
        self.replies = np.zeros(SLOTS, np.int64)
        self.settled = np.zeros(SLOTS, np.int64)
        self.reversed = np.zeros(SLOTS, np.int64)
        self.errors: list[dict[str, int] | None] = [None] * SLOTS
        self.lat = np.zeros((SLOTS, LatencyHistogram.BUCKETS), np.int64)
        self.slot_no = np.full(SLOTS, -1, np.int64)  # the slot number a ring position holds (-1: none)
        self.last_slot = -1
        self._prev_codes: dict[str, int] = {}
        self._prev_settled = self._prev_reversed = 0
        self._prev_lat = np.zeros(LatencyHistogram.BUCKETS, np.int64)
        self.started_mono = time.monotonic()

    @staticmethod
    def slot_of(mono_s: float) -> int:
        return int(mono_s // SLOT_S)

    def sample(self, mono_s: float | None = None) -> None:
        """Put what the counters gained since the last call in the slot of `mono_s` (time.monotonic());
        slots skipped since (a stalled loop) are left empty."""
        s = self.slot_of(time.monotonic() if mono_s is None else mono_s)
        codes, settled, reversed_ = self._read()
        lat = np.array(self.latency.counts, np.int64)
        if s != self.last_slot:
            first = max(self.last_slot + 1, s - SLOTS + 1)
            for n in range(first, s + 1):
                i = n % SLOTS
                self.slot_no[i] = n
                self.replies[i] = self.settled[i] = self.reversed[i] = 0
                self.errors[i] = None
                self.lat[i] = 0
            self.last_slot = s
        i = s % SLOTS
        prev = self._prev_codes
        errs = self.errors[i]
        for code, n in codes.items():
            d = n - prev.get(code, 0)
            if d:
                self.replies[i] += d
                if code:
                    if errs is None:
                        errs = self.errors[i] = {}
                    errs[code] = errs.get(code, 0) + d
        self._prev_codes = dict(codes)
        self.settled[i] += settled - self._prev_settled
        self.reversed[i] += reversed_ - self._prev_reversed
        self._prev_settled, self._prev_reversed = settled, reversed_
        self.lat[i] += lat - self._prev_lat
        self._prev_lat = lat

    def view(self, now_mono: float, now_wall: float) -> dict:
        """The chart's points (CHART_STEP_S each, oldest first, over the last SLOTS seconds) and the
        summaries of the last minute and of the whole window; times as Unix seconds."""
        end = self.slot_of(now_mono) - 1  # the last slot that has ended (sample() fills it just after)
        steps = SLOTS // CHART_STEP_S
        g_end = end // CHART_STEP_S
        g_first = g_end - steps + 1
        # The first slot shown: the window's, or the hub's first (before it, no point rather than a zero).
        lo = max(end - SLOTS + 1, self.slot_of(self.started_mono))
        pos = np.nonzero((self.slot_no >= lo) & (self.slot_no <= end))[0]
        g = self.slot_no[pos] // CHART_STEP_S - g_first
        keep = (g >= 0) & (g < steps)
        pos, g = pos[keep], g[keep]
        replies = np.bincount(g, self.replies[pos], steps)
        settled = np.bincount(g, self.settled[pos], steps)
        errors = np.zeros(steps)
        for p, k in zip(pos.tolist(), g.tolist()):
            e = self.errors[p]
            if e:
                errors[k] += sum(e.values())
        hist = np.zeros((steps, LatencyHistogram.BUCKETS), np.int64)
        np.add.at(hist, g, self.lat[pos])
        wall_of = now_wall - now_mono  # a monotonic time plus this is a wall time
        points = []
        for k in range(steps):
            first = (g_first + k) * CHART_STEP_S
            # The point's rate is over its slots that have ended since the hub started (the newest
            # point and the hub's first may have fewer than CHART_STEP_S).
            span_s = (min(first + CHART_STEP_S - 1, end) - max(first, lo) + 1) * SLOT_S
            seen = span_s > 0
            points.append({
                "t": round(min(first + CHART_STEP_S, end + 1) * SLOT_S + wall_of, 3),
                "replies_per_s": round(float(replies[k]) / span_s, 2) if seen else None,
                "settlements_per_s": round(float(settled[k]) / span_s, 2) if seen else None,
                "errors_per_s": round(float(errors[k]) / span_s, 2) if seen else None,
                "p50_ms": _ms(quantile_s(hist[k], 0.50)),
                "p99_ms": _ms(quantile_s(hist[k], 0.99)),
            })
        return {"step_s": CHART_STEP_S * SLOT_S, "window_s": SLOTS * SLOT_S, "points": points,
                "recent": self._summary(end - RECENT_S // SLOT_S + 1, end, now_mono),
                "window": self._summary(end - SLOTS + 1, end, now_mono)}

    def _summary(self, first: int, last: int, now_mono: float) -> dict:
        """Rates, quantiles and errors by code over the slots first..last (numbers)."""
        pos = np.nonzero((self.slot_no >= first) & (self.slot_no <= last))[0]
        # The rate's time: the span asked for, or less while the hub has not run that long.
        span_s = max(SLOT_S, min((last - first + 1) * SLOT_S, now_mono - self.started_mono))
        errors: dict[str, int] = {}
        for p in pos.tolist():
            e = self.errors[p]
            if e:
                for code, n in e.items():
                    errors[code] = errors.get(code, 0) + n
        hist = self.lat[pos].sum(axis=0)
        return {"seconds": round(span_s, 1),
                "replies": int(self.replies[pos].sum()), "settlements": int(self.settled[pos].sum()),
                "reversals": int(self.reversed[pos].sum()), "errors": errors,
                "replies_per_s": round(int(self.replies[pos].sum()) / span_s, 2),
                "settlements_per_s": round(int(self.settled[pos].sum()) / span_s, 2),
                "p50_ms": _ms(quantile_s(hist, 0.50)), "p99_ms": _ms(quantile_s(hist, 0.99))}
