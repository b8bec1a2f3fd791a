"""Reloading what a running hub reads from files, on SIGHUP or `POST /admin/reload` (docs/server.md, "Reload").

A `Reloadable` is one such part: the keys file (engine.hub.auth.KeysSource) and
the maintenance file of contract section 12 (engine.hub.maintenance). `Server.reload()` reloads
every part, each on its own: a part is read and checked on a worker thread
(`load`, which raises `ReloadRefused` with one line for the operator), then put in
force on the event loop in one step (`apply`), so a request sees either the old
state or the new one, never a mixture. A part refused keeps what was in force, and
the other parts are reloaded all the same. The report says, part by part, what is
in force now or why the file was refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol


class ReloadRefused(Exception):
    """A file that cannot be put in force; the message is one line naming the file (and line and field)."""


class Reloadable(Protocol):
    """One part of the hub's state that is read from a file."""

    name: str  # the part's name in the report and in yidi_reloads_total{part}

    def load(self) -> Any:
        """Read and check the file (on a worker thread); ReloadRefused when it cannot be used."""

    def apply(self, loaded: Any) -> dict[str, Any]:
        """Put what `load` returned in force (on the event loop); what is in force now, for the report."""


@dataclasses.dataclass(frozen=True)
class PartReport:
    name: str
    ok: bool
    error: str = ""  # why the file was refused (the state in force was kept)
    in_force: dict[str, Any] = dataclasses.field(default_factory=dict)  # after a good reload


@dataclasses.dataclass(frozen=True)
class ReloadReport:
    parts: tuple[PartReport, ...]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parts)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "parts": {p.name: ({"ok": True, **p.in_force} if p.ok else
                                                  {"ok": False, "error": p.error, "kept": "the state in force"})
                                         for p in self.parts}}

    def line(self) -> str:
        """One line for the log."""
        if not self.parts:
            return "nothing to reload"
        return "; ".join(f"{p.name}: " + (", ".join(f"{k} {v}" for k, v in p.in_force.items()) if p.ok else
                                          f"refused, the state in force kept: {p.error}") for p in self.parts)
