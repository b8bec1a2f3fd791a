"""Maintenance windows (停机公示), docs/contract.md section 12: the schedule the engine checks against.

An insured region's platform is sometimes down for maintenance, announced ahead
in a CSV file `admdvs,begin,end,reason` (times `YYYY-MM-DD HH:MM:SS` on the
hub's clock). A window is in force from `begin` (included) to `end` (excluded).
While one is in force, a transaction that would charge or query a person insured
in a region its `admdvs` covers (section 4's "covers") is refused
E_MAINTENANCE; the infnos that do so, and where the check sits in the order of
checks, are listed in docs/contract.md ("Choices where the contract is silent",
section 12).

`Schedule` is plain data made once per file: the windows sorted by `begin`,
and, per insured region met, the windows that cover it. The engine holds one
(`Engine.maintenance`, None without a file) and swaps it whole on a reload, so
a request sees one schedule or the other. Its check costs two string
comparisons when no window is in force anywhere at the request's time.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from engine.contract import money
from engine.contract.protocol import (
    E_MAINTENANCE, PROVINCES, REQUEST_DAY_MAX, REQUEST_DAY_MIN, REQUEST_YEAR_MAX, REQUEST_YEAR_MIN, Refused,
    region_covers,
)
from engine.contract.textfile import TextFileError, read_text

MAINTENANCE_HEADER = ("admdvs", "begin", "end", "reason")
WINDOWS_MAX = 10_000  # rows of one file: a schedule is announced windows, not a log
REASON_CHARS_MAX = 200  # the reason goes into every refusal's err_msg
MAINTENANCE_FILE_BYTES_MAX = 4 << 20


class MaintenanceError(Exception):
    """A maintenance file that cannot be used; the message is one line naming file, line and field."""


@dataclass(frozen=True, slots=True)
class Window:
    admdvs: str  # the region under maintenance: a region, a city (ends in 00) or a province (ends in 0000)
    begin: str  # YYYY-MM-DD HH:MM:SS, included
    end: str  # YYYY-MM-DD HH:MM:SS, excluded
    reason: str
    line: int  # its line in the file: the order of windows that tie

    def as_json(self) -> dict:
        return {"admdvs": self.admdvs, "begin": self.begin, "end": self.end, "reason": self.reason}


class MaintenanceRefused(Refused):
    """E_MAINTENANCE, carrying the window that refused (the metrics count refusals by its admdvs)."""

    def __init__(self, window: Window):
        super().__init__(E_MAINTENANCE, f"the platform of insured region {window.admdvs} is down for maintenance "
                                        f"until {window.end}: {window.reason}")
        self.window = window


class Schedule:
    """The windows of one maintenance file, for the checks and the status page."""

    def __init__(self, windows: list[Window], path: str = ""):
        self.path = path
        self.windows = tuple(sorted(windows, key=lambda w: (w.begin, w.line)))
        # No window is in force at a time outside [begin_min, end_max): the engine's fast path.
        self.begin_min = self.windows[0].begin if self.windows else ""
        self.end_max = max((w.end for w in self.windows), default="")
        # Insured region -> the windows covering it, by begin; filled as regions are met (the
        # persons' regions: bounded by the world).
        self._by_region: dict[str, tuple[Window, ...]] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def as_listed(self) -> list[Window]:
        """The windows in the order of their file (the reference takes them so)."""
        return sorted(self.windows, key=lambda w: w.line)

    def window_for(self, insuplc: str, now: str) -> Window | None:
        """The window in force at `now` that covers insured region `insuplc`; of several, the one that
        ends last (the region is down until then), the first in the file on a tie. None: none."""
        if not self.begin_min <= now < self.end_max:
            return None
        ws = self._by_region.get(insuplc)
        if ws is None:
            ws = self._by_region[insuplc] = tuple(w for w in self.windows if region_covers(w.admdvs, insuplc))
        best = None
        for w in ws:
            if w.begin > now:
                break
            if now < w.end and (best is None or w.end > best.end or (w.end == best.end and w.line < best.line)):
                best = w
        return best

    def check(self, insuplc: str, now: str) -> None:
        """MaintenanceRefused when a window covering insured region `insuplc` is in force at `now`."""
        w = self.window_for(insuplc, now)
        if w is not None:
            raise MaintenanceRefused(w)

    def in_force(self, now: str) -> list[Window]:
        return [w for w in self.windows if w.begin <= now < w.end]

    def status(self, now: str) -> dict:
        """What the status page shows at hub time `now`: the windows in force (by end) and the next ones
        (by begin), each {admdvs, begin, end, reason}."""
        return {"in_force": [w.as_json() for w in sorted(self.in_force(now), key=lambda w: (w.end, w.line))],
                "next": [w.as_json() for w in self.windows if w.begin > now]}


# ---------------------------------------------------------------- the file

def _error(path: str, line: int, field: str, what: str) -> MaintenanceError:
    return MaintenanceError(f"{path}:{line}: {field}: {what}")


def _time(path: str, line: int, field: str, text: str) -> str:
    try:
        day = money.parse_time_day(text)
    except ValueError:
        raise _error(path, line, field, f"{text!r} is not a time YYYY-MM-DD HH:MM:SS") from None
    if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
        raise _error(path, line, field, f"{text} is outside {REQUEST_YEAR_MIN}-{REQUEST_YEAR_MAX}")
    return text


def parse_schedule(text: str, path: str = "maintenance.csv") -> Schedule:
    """The schedule of a maintenance file's text; MaintenanceError naming the line and field of the first
    bad cell. A file with its header only announces no window."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != MAINTENANCE_HEADER:
        raise _error(path, 1, "header", f"must be {','.join(MAINTENANCE_HEADER)}")
    windows: list[Window] = []
    for i, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(MAINTENANCE_HEADER):
            raise _error(path, i, "row", f"has {len(row)} cells, want {len(MAINTENANCE_HEADER)}")
        if len(windows) >= WINDOWS_MAX:
            raise _error(path, i, "row", f"more than {WINDOWS_MAX} windows")
        admdvs, begin, end, reason = (c.strip() for c in row)
        if not (len(admdvs) == 6 and admdvs.isascii() and admdvs.isdigit()):
            raise _error(path, i, "admdvs", f"{admdvs!r} is not a 6-digit region code")
        if admdvs[:2] not in PROVINCES:
            raise _error(path, i, "admdvs", f"{admdvs}: {admdvs[:2]} is not a province")
        begin = _time(path, i, "begin", begin)
        end = _time(path, i, "end", end)
        if end <= begin:
            raise _error(path, i, "end", f"{end} is not after begin {begin}")
        if not reason or not reason.isprintable() or len(reason) > REASON_CHARS_MAX:
            raise _error(path, i, "reason", f"must be 1-{REASON_CHARS_MAX} printable characters on one line "
                                            "(it is told to every hospital refused)")
        windows.append(Window(admdvs, begin, end, reason, i))
    return Schedule(windows, path)


def read_schedule(path: str) -> Schedule:
    """Read and check a maintenance file; MaintenanceError (one line) when it cannot be used."""
    try:
        text, _ = read_text(path, MAINTENANCE_FILE_BYTES_MAX)
    except TextFileError as e:
        raise MaintenanceError(str(e)) from None
    return parse_schedule(text, path)
