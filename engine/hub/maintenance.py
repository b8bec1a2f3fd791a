"""The hub's maintenance file (docs/contract.md section 12): reloaded as a part, counted in the metrics.

`MaintenanceSource` is the `--maintenance FILE` of `yidi serve`, a Reloadable part
(engine.hub.reload): the file is read and checked on a worker thread, and the new
schedule (engine.core.maintenance.Schedule) replaces the engine's in one
assignment on the event loop, between batches. A refused file keeps the windows
in force. It also fills the status page's maintenance section (`status`). `MaintenanceCollector` gives the metrics: refusals by the window's
admdvs, and the windows in force on the hub's clock.
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.core.engine import Engine, now_text
from engine.core.maintenance import MaintenanceError, Schedule, read_schedule
from engine.hub.reload import ReloadRefused
from engine.hub.status import WINDOWS_MAX


class MaintenanceSource:
    """The maintenance file behind `engine.maintenance`, reloaded on SIGHUP or POST /admin/reload."""

    name = "maintenance"

    def __init__(self, path: str, engine: Engine):
        self.path = path
        self.engine = engine

    def load(self) -> Schedule:
        try:
            return read_schedule(self.path)
        except MaintenanceError as e:
            raise ReloadRefused(str(e)) from None

    def apply(self, loaded: Schedule) -> dict:
        self.engine.maintenance = loaded
        return {"windows": len(loaded), "in_force": len(loaded.in_force(now_text())), "file": self.path}

    def status(self) -> dict:
        """The status page's maintenance section (engine.hub.status.StatusSources): the windows in force now
        and the next ones, WINDOWS_MAX of each."""
        s = self.engine.maintenance.status(now_text())
        return {"in_force": s["in_force"][:WINDOWS_MAX], "next": s["next"][:WINDOWS_MAX], "file": self.path}


class MaintenanceCollector:
    """yidi_maintenance_refused_total{admdvs} and yidi_maintenance_windows_in_force, read from the
    engine when scraped (on the event loop, like every engine call)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        refused = CounterMetricFamily("yidi_maintenance_refused", "Requests refused E_MAINTENANCE (contract section "
                                      "12), by the admdvs of the window that refused them", labels=["admdvs"])
        for admdvs, n in sorted(self.engine.maintenance_refused.items()):
            refused.add_metric([admdvs], n)
        yield refused
        m = self.engine.maintenance
        yield GaugeMetricFamily("yidi_maintenance_windows_in_force", "Maintenance windows in force now on the hub's "
                                "clock (--maintenance)", value=0 if m is None else len(m.in_force(now_text())))
