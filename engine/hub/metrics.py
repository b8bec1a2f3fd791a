"""The hub's Prometheus metrics (served at GET /metrics by engine.hub.admin; docs/server.md)."""
from __future__ import annotations

import collections
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.clearing.clearing import prepay_collector
from engine.hub.maintenance import MaintenanceCollector


class Metrics:
    """Prometheus metrics of one hub, in a registry of its own (several hubs may share a process)."""

    LATENCY_BUCKETS_S = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .2, .5, 1, 2, 5)
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

    def __init__(self, store, *, queue_depth: Callable[[], int], connections: Callable[[], int],
                 up: Callable[[], int], partial_bytes: Callable[[], int] = lambda: 0,
                 held_bytes: Callable[[], int] = lambda: 0):
        """`store` is the hub's DurableStore (engine.hub.hub); the callables read the hub when scraped."""
        self.registry = r = CollectorRegistry()
        self.requests = Counter("yidi_requests", "Requests answered, by transport, infno and err_code "
                                "(err_code empty on success)", ["transport", "infno", "err_code"], registry=r)
        self.latency = Histogram("yidi_request_latency_seconds", "From a request's last byte read to its "
                                 "reply released", ["transport"], buckets=self.LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("yidi_batch_size", "Requests per engine batch and store commit",
                                    buckets=self.BATCH_BUCKETS, registry=r)
        self.engine_s = Histogram("yidi_engine_batch_seconds", "Engine.handle_batch time per batch",
                                  buckets=self.LATENCY_BUCKETS_S, registry=r)
        self.commit_s = Histogram("yidi_commit_seconds", "store.write time per batch",
                                  buckets=self.LATENCY_BUCKETS_S, registry=r)
        self.changes = Counter("yidi_committed", "Settlements and reversals made durable", ["kind"], registry=r)
        self.busy = Counter("yidi_busy", "Requests refused with E_BUSY before reaching the engine",
                            ["transport"], registry=r)
        self.busy_reply_s = Histogram("yidi_busy_reply_seconds", "From an E_BUSY request's frame read to "
                                      "its reply handed to the socket (framed TCP)", buckets=self.LATENCY_BUCKETS_S,
                                      registry=r)
        self.closed = Counter("yidi_connections_closed", "Connections refused or closed by a bound of the hub "
                              "(docs/server.md, \"Bounds and what a misbehaving client gets\")",
                              ["transport", "reason"], registry=r)
        self.paused = Counter("yidi_reads_paused", "Times a TCP connection stopped being read, by the bound "
                              "that stopped it", ["reason"], registry=r)
        self.auth_refused = Counter("yidi_auth_refused", "Requests refused E_AUTH by a transport before anything "
                                    "else was read (contract section 10), by reason "
                                    "(engine.hub.auth.REFUSED_REASONS)", ["transport", "reason"], registry=r)
        self.reloads = Counter("yidi_reloads", "Reloads (SIGHUP, POST /admin/reload) by part and outcome "
                               "(ok, refused: the state in force kept)", ["part", "outcome"], registry=r)
        self._auth_disabled = Gauge("yidi_auth_disabled", "1 when the hub runs with --no-auth: no credential, "
                                    "signature, scope or sign-in is checked", registry=r)
        self._credentials = Gauge("yidi_auth_credentials", "Credentials in force (the keys file)", registry=r)
        Gauge("yidi_partial_frame_bytes", "Bytes read and not yet cut into whole frames or bodies, over every "
              "connection (bounded: partial_frame_bytes_total_max)", registry=r).set_function(partial_bytes)
        Gauge("yidi_held_reply_bytes", "Request bodies and encoded replies TCP connections hold before their "
              "sockets take them (bounded per connection: reply_bytes_per_connection_max)",
              registry=r).set_function(held_bytes)
        Gauge("yidi_queue_depth", "Requests admitted, waiting for a batch", registry=r).set_function(queue_depth)
        Gauge("yidi_tcp_connections", "Open framed TCP connections", registry=r).set_function(connections)
        Gauge("yidi_up", "1 while the hub answers, 0 after a fail-stop or while draining",
              registry=r).set_function(up)
        self._store_gauges(store)
        r.register(MaintenanceCollector(store.engine))  # section 12

    def auth(self, keyring) -> None:
        """Say whether credentials are checked: `keyring` is the hub's engine.hub.auth.Keyring, None
        under --no-auth (yidi_auth_disabled 1)."""
        self._auth_disabled.set(1 if keyring is None else 0)
        self._credentials.set_function(lambda: 0 if keyring is None else len(keyring))

    def _store_gauges(self, store) -> None:
        """The gauges read from the store when scraped."""
        r = self.registry
        Gauge("yidi_fold_seconds", "Seconds spent folding the journal into the keyed tables since start "
              "(in the background, beside the commits)", registry=r).set_function(lambda: store.fold_s_total)
        Gauge("yidi_unfolded_rows", "Committed journal rows not folded yet, indexed in RAM "
              "(at most two generations of fold_rows)", registry=r).set_function(store.unfolded_rows)
        if hasattr(store, "round_trips"):  # a store on a database server (engine.store.pg)
            for name, what, attr in (
                    ("yidi_store_round_trips_total", "Round trips of the batches to the database (lock and head,"
                     " then rows and commit), the catch-ups' apart", "round_trips"),
                    ("yidi_store_statements_total", "Statements that wrote the batches' rows", "statements"),
                    ("yidi_store_catch_ups_total", "Batches that first caught up on other nodes' batches (one"
                     " more round trip each)", "catch_ups"),
                    ("yidi_store_caught_up_rows_total", "Rows of other nodes' batches applied to this node's engine",
                     "caught_up_rows"),
                    ("yidi_store_busy_batches_total", "Batches answered E_BUSY: the database unavailable",
                     "busy_batches")):
                Gauge(name, what, registry=r).set_function(lambda attr=attr: getattr(store, attr))
        # Pre-payment usage by insured province (engine.clearing), read from the store's
        # journal when scraped; threshold from YIDI_PREPAY_WARN (default 0.70).
        # The status page (engine.hub.status) reads the same monitor.
        self.prepay = None
        if store.data_dir is not None:
            self.prepay = prepay_collector(store.data_dir, store.engine.world.prepay_fen)
            r.register(self.prepay)

    def observe_batch(self, size: int, engine_s: float, commit_s: float, changes: list,
                      counts: collections.Counter) -> None:
        """A durable batch: its size, its times, its changes by kind, its replies by label."""
        self.batch_size.observe(size)
        self.engine_s.observe(engine_s)
        self.commit_s.observe(commit_s)
        for kind in ("settle", "reverse"):
            k = sum(1 for c in changes if c.kind == kind)
            if k:
                self.changes.labels(kind).inc(k)
        for labels, k in counts.items():
            self.requests.labels(*labels).inc(k)

    def totals(self) -> tuple[dict[str, int], int, int]:
        """Since start: replies by err_code ("" for success), settlements and reversals made durable
        (engine.hub.series reads them once a second)."""
        codes: dict[str, int] = {}
        for s in self.requests.collect()[0].samples:
            if s.name.endswith("_total"):
                code = s.labels["err_code"]
                codes[code] = codes.get(code, 0) + int(s.value)
        kinds = {s.labels["kind"]: int(s.value) for s in self.changes.collect()[0].samples
                 if s.name.endswith("_total")}
        return codes, kinds.get("settle", 0), kinds.get("reverse", 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
