"""The `yidi` command line."""
from __future__ import annotations

import argparse
import sys


def _store_arg(parser, required: bool, data_help: str) -> None:
    """--data DIR (the embedded store) or --store URL (PostgreSQL, several nodes: docs/store.md); `where` is the one
    given."""
    g = parser.add_mutually_exclusive_group(required=required)
    g.add_argument("--data", help=data_help)
    g.add_argument("--store", metavar="URL",
                   help="a PostgreSQL database instead of --data (postgresql://USER@HOST:PORT/DATABASE; several "
                        "nodes may share it)")


def _where(a: argparse.Namespace) -> str | None:
    return a.store or a.data


def _cmd_replay(a: argparse.Namespace) -> int:
    from engine.core.maintenance import MaintenanceError
    from engine.tools.replay import ReplayError, replay
    from engine.world.loader import WorldError

    if a.reference and _where(a):
        print("yidi: --reference keeps no store: drop --data or --store", file=sys.stderr)
        return 2
    try:
        stats = replay(a.world, a.inp, a.out, reference=a.reference, data_dir=_where(a),
                       accept_world_change=a.accept_world_change, maintenance_path=a.maintenance)
    except MaintenanceError as e:
        print(f"yidi: --maintenance {e}", file=sys.stderr)
        return 2
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2
    except ReplayError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from engine.store import StoreError

        if not isinstance(e, StoreError):
            raise
        print(f"yidi: store: {e}", file=sys.stderr)
        return 2
    print(
        f"replayed {stats['requests']} requests: world {stats['load_s']:.2f} s, "
        f"replay {stats['replay_s']:.2f} s",
        file=sys.stderr,
    )
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from engine.store.check import check_store

    return check_store(_where(a), out=lambda line: print(line, flush=True),
                       err=lambda line: print(line, file=sys.stderr, flush=True))


def _cmd_clear(a: argparse.Namespace) -> int:
    from engine.clearing.clearing import (
        ClearingError, clear, format_usage, parse_ratio_bp, prepay_usage, refused,
    )

    try:
        warn_bp = None if a.prepay_warn is None else parse_ratio_bp(a.prepay_warn)
        r = clear(_where(a), a.period, a.out, world_dir=a.world, warn_bp=warn_bp, force=a.force, dry_run=a.dry_run)
    except ClearingError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    c = r.closing
    if c.preview:
        how = "not closed (dry run: nothing written to the store); a close now would take"
    elif a.dry_run:
        how = f"already closed at {c.closed_at} (dry run: its files as closed); closed with"
    elif c.new:
        how = f"closed with --force, overriding: {c.forced};" if c.forced else "closed:"
    else:
        how = f"already closed at {c.closed_at}; files written again, unchanged:"
    print(f"period {c.period} {how} journal rows up to {c.last_seq}, {r.rows_cleared} cross-province "
          f"settlements and reversals in {r.pairs} pairs, in {r.seconds:.2f} s", file=sys.stderr)
    if c.preview and r.refusal:
        print(f"yidi: dry run; without it: {refused(c.period, r.refusal)}", file=sys.stderr)
    for path in r.files:
        print(path)
    if a.usage:
        for line in format_usage(prepay_usage(_where(a), prepay_fen=c.prepay_fen, warn_bp=c.warn_bp), c.warn_bp):
            print("pre-payment: " + line, file=sys.stderr)
    return 0


_RELOAD_HINT = ("yidi: a hub serving this file takes the change when it reloads: kill -HUP its process, or "
                "POST /admin/reload on its admin listener")


def _cmd_backup(a: argparse.Namespace) -> int:
    from engine.store.backup import BackupError, backup_store

    try:
        r = backup_store(a.data, a.out)
    except BackupError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    print(f"yidi: backed up {a.data} to {r.out_dir}: journal rows up to {r.journal_rows} (keyed tables folded up "
          f"to {r.folded_seq}), {r.copied_bytes / 1e6:.1f} MB in {r.seconds:.2f} s; check it with "
          f"`yidi check --data {r.out_dir}`", file=sys.stderr)
    for path in r.files:
        print(path)
    return 0


def _add_backup(sub) -> None:
    k = sub.add_parser("backup", help="copy the store, both files of one moment, while the hub runs (docs/store.md)")
    k.add_argument("--data", required=True, help="data folder of the store")
    k.add_argument("--out", required=True, help="a new or empty folder outside --data, in a folder that exists")
    k.set_defaults(fn=_cmd_backup)


def _cmd_keys(a: argparse.Namespace) -> int:
    from engine.hub.auth import KeysError, add_key, describe, read_keys, revoke_key

    try:
        if a.action == "add":
            if bool(a.fixmedins_code) == bool(a.admdvs):
                print("yidi: keys add needs exactly one of --fixmedins-code (a hospital system) and --admdvs "
                      "(a platform)", file=sys.stderr)
                return 2
            token = add_key(a.file, a.paasid, fixmedins_code=a.fixmedins_code or "", admdvs=a.admdvs or "")
            print(f"yidi: added {a.paasid} to {a.file}; its token, shown this once:", file=sys.stderr)
            print(token)
            print(_RELOAD_HINT, file=sys.stderr)
        elif a.action == "revoke":
            revoke_key(a.file, a.paasid)
            print(f"yidi: revoked {a.paasid} in {a.file}", file=sys.stderr)
            print(_RELOAD_HINT, file=sys.stderr)
        else:
            kf = read_keys(a.file)
            for w in kf.warnings:
                print(f"yidi: warning: {w}", file=sys.stderr)
            for c in kf.credentials:
                print(describe(c))
    except KeysError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    return 0


def _add_keys(sub) -> None:
    k = sub.add_parser("keys", help="manage the hub's credentials file (docs/contract.md section 10)")
    k.add_argument("action", choices=("add", "list", "revoke"))
    k.add_argument("--file", required=True, help="the keys file (paasid,token,fixmedins_code,admdvs)")
    k.add_argument("--paasid", help="the credential's paasid (add, revoke)")
    k.add_argument("--fixmedins-code", help="add: a hospital system's credential, for this institution only")
    k.add_argument("--admdvs", help="add: a platform's credential, for the institutions of this region")
    k.set_defaults(fn=_cmd_keys)


def _add_clear(sub) -> None:
    k = sub.add_parser("clear", help="close a monthly clearing period: statement, netting, report (section 8)")
    _store_arg(k, True, "data folder of the store")
    k.add_argument("--period", required=True, metavar="YYYY-MM")
    k.add_argument("--out", required=True, help="folder for statement-, netting- and report-YYYY-MM")
    k.add_argument("--world", help="world folder for prepay.csv (default: the one the store last started with)")
    k.add_argument("--prepay-warn", metavar="RATIO",
                   help="pre-payment warning threshold, 0.70 or 70%% (default 0.70; fixed at the first close)")
    k.add_argument("--usage", action="store_true", help="also print the pre-payment usage now")
    k.add_argument("--force", action="store_true",
                   help="close even a period that has not ended, or one after an earlier period still open")
    k.add_argument("--dry-run", action="store_true",
                   help="close nothing: write the files a close now would write, named *.dry-run.*")
    k.set_defaults(fn=_cmd_clear)


def _cmd_check_world(a: argparse.Namespace) -> int:
    from engine.world.loader import WorldError, load_world

    try:
        w = load_world(a.world)
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2
    print(
        f"world ok: {len(w.inst_code)} institutions, {len(w.cat_code)} catalogue rows, "
        f"{w.n_persons} persons, {len(w.policies)} policies, {len(w.fil_type)} filings, "
        f"{len(w.chr_dise)} chronic qualifications; loaded in {w.load_s:.2f} s"
    )
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from dataclasses import fields

    from engine.hub.limits import Limits
    from engine.hub.tls import TLSConfigError, load_server_tls

    if not a.tcp and not a.http:
        print("yidi: serve needs --tcp HOST:PORT, --http HOST:PORT or both", file=sys.stderr)
        return 2
    if a.keys and a.no_auth:
        print("yidi: --keys and --no-auth exclude each other: give one", file=sys.stderr)
        return 2
    if not a.keys and not a.no_auth:
        print("yidi: serve needs --keys FILE (the credentials: yidi keys add --file FILE ...), or --no-auth to "
              "check no credential at all", file=sys.stderr)
        return 2
    try:
        limits = Limits(**{f.name: getattr(a, f.name) for f in fields(Limits)})
    except ValueError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    try:  # before the store and the world: a bad file is refused in a moment
        tls = load_server_tls(a.tls_cert, a.tls_key, a.tls_client_ca)
    except TLSConfigError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    for warning in tls.warnings() if tls else ():
        print(f"yidi: warning: {warning}", file=sys.stderr, flush=True)
    keys, warnings = None, []
    if a.keys:
        from engine.hub.auth import KeysError, KeysSource

        try:
            keys, warnings = KeysSource.open(a.keys)
        except KeysError as e:
            print(f"yidi: --keys {e}", file=sys.stderr)
            return 2
        warnings = [f"--keys {w}" for w in warnings]
        if not len(keys.keyring):
            warnings.append(f"--keys {a.keys}: no credential: every request will be refused E_AUTH")
    else:
        warnings.append("--no-auth: no credential, signature, scope or sign-in is checked: anyone who reaches a "
                        "listener can settle as any institution (yidi_auth_disabled 1 on /metrics)")
    maintenance = None
    if a.maintenance:
        from engine.core.maintenance import MaintenanceError, read_schedule

        try:
            maintenance = (a.maintenance, read_schedule(a.maintenance))
        except MaintenanceError as e:
            print(f"yidi: --maintenance {e}", file=sys.stderr)
            return 2
    refusal = _listen_refusal(a)
    if refusal:
        print(f"yidi: {refusal}", file=sys.stderr)
        return 2
    from engine.hub.logs import HubLog
    from engine.hub.serve import serve  # the server's imports, once the options are known good
    from engine.store import StoreError
    from engine.world.loader import WorldError

    log = HubLog(a.log_file, a.log_level, a.request_log)
    try:
        log.start()
    except OSError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    try:
        try:
            if a.accept_world_change:  # recorded by one open of the store; serve's own open then finds it so
                from engine.store import open_store

                open_store(_where(a), a.world, accept_world_change=True).close()
            return serve(a.world, _where(a), a.tcp, a.http, limits, loop=a.loop, admin=a.admin, tls=tls, keys=keys,
                         warnings=warnings, maintenance=maintenance, log=log)
        finally:
            log.stop()  # what it holds is written before a refusal's line
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"yidi: store: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a listener that could not be opened after all (taken since _listen_refusal)
        print(f"yidi: {e}", file=sys.stderr)
        return 2


def _listen_refusal(a: argparse.Namespace) -> str:
    """Why a listener of `serve` cannot be opened (a bad address, a port taken, one port asked twice),
    found before the store and the world are opened; "" when none."""
    import socket

    from engine.hub.address import parse_address

    seen: dict[tuple[str, int], str] = {}
    for flag, text, default_host in (("--tcp", a.tcp, "0.0.0.0"), ("--http", a.http, "0.0.0.0"),
                                     ("--admin", a.admin, "127.0.0.1")):
        if not text:
            continue
        try:
            host, port = parse_address(text, default_host)
        except ValueError as e:
            return f"{flag}: {e}"
        if port == 0:
            continue
        if (host, port) in seen:
            return f"{flag} {text}: the same address as {seen[(host, port)]}"
        seen[(host, port)] = flag
        try:  # bound as the listeners bind (SO_REUSEADDR), then released at once
            for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                       flags=socket.AI_PASSIVE):
                with socket.socket(family, kind, proto) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind(sockaddr)
        except OSError as e:
            return f"{flag} {text}: cannot listen there ({e.strerror or e})"
    return ""


def _add_serve(sub) -> argparse.ArgumentParser:
    from dataclasses import fields

    from engine.hub.limits import Limits
    from engine.hub.admin import ADMIN_DEFAULT
    from engine.hub.logs import LOG_LEVELS, REQUEST_LOG_MODES

    s = sub.add_parser("serve", help="run the hub: framed TCP and HTTP (docs/contract.md section 7)")
    s.add_argument("--config", metavar="FILE",
                   help="a TOML file of these flags (key: the flag without its dashes, e.g. batch-max = 512); "
                        "a flag on the command line wins (deploy/yidi.toml)")
    s.add_argument("--world", required=True, help="world folder")
    _store_arg(s, True, "data folder of the durable store")
    s.add_argument("--tcp", metavar="HOST:PORT", help="framed MessagePack listener (port 0: any)")
    s.add_argument("--http", metavar="HOST:PORT", help="HTTP gateway (port 0: any; an empty HOST: every address)")
    s.add_argument("--admin", metavar="HOST:PORT", default=ADMIN_DEFAULT,
                   help=f"admin listener: /metrics and /healthz (default {ADMIN_DEFAULT})")
    s.add_argument("--keys", metavar="FILE",
                   help="the credentials file (paasid,token,fixmedins_code,admdvs; yidi keys): every request is "
                        "signed and acts within its credential (contract section 10); reloaded on SIGHUP")
    s.add_argument("--maintenance", metavar="FILE",
                   help="maintenance windows of insured regions (admdvs,begin,end,reason; contract section 12): "
                        "their persons' charges and queries are refused E_MAINTENANCE; reloaded on SIGHUP")
    s.add_argument("--no-auth", action="store_true",
                   help="check no credential at all (tests, a closed network): said at start and on /metrics")
    s.add_argument("--tls-cert", metavar="FILE",
                   help="PEM certificate (and chain) of the hub: every listener on TLS 1.2 or later")
    s.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert, unencrypted")
    s.add_argument("--tls-client-ca", metavar="FILE",
                   help="PEM CA certificates: the gateway and --tcp require a client certificate signed by one")
    s.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    s.add_argument("--accept-world-change", action="store_true",
                   help="start a store with a world of other persons or institutions than its own")
    s.add_argument("--log-file", metavar="FILE",
                   help="the hub's log, JSON lines, appended (default: stderr); reopened on SIGHUP, for rotation")
    s.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="the least level of the hub's events logged: start, stop, reload, store (default info)")
    s.add_argument("--request-log", choices=REQUEST_LOG_MODES, default="all",
                   help="which requests get a line in the log: every one, those refused (an err_code), or none "
                        "(default all)")
    for f in fields(Limits):
        s.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=f.default,
                       metavar=f.name.upper(), help=f"(default {f.default})")
    s.set_defaults(fn=_cmd_serve)
    return s


def _cmd_demo(a: argparse.Namespace) -> int:
    from engine.tools.demo import DemoOptions, run

    o = DemoOptions(scale=a.scale, seed=a.seed, provinces=a.provinces, catalogue_per_province=a.catalogue,
                    persons=a.persons, day=a.day, cache_dir=a.cache, data_dir=a.data, store=a.store,
                    report_dir=a.report,
                    connections=a.connections, in_flight=a.in_flight, keep_replies=a.keep_replies,
                    progress=False if a.no_progress else None, loop=a.loop, flow=a.flow)
    try:
        o.check()
    except ValueError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    return run(o)


def _cmd_gen_world(a: argparse.Namespace) -> int:
    import json

    from engine.tools.synth import gen_world

    s = gen_world(a.out, seed=a.seed, provinces=a.provinces, catalogue_per_province=a.catalogue,
                  persons=a.persons)
    print(json.dumps(s, indent=1, ensure_ascii=False))
    return 0


def _cmd_gen_requests(a: argparse.Namespace) -> int:
    from engine.tools.synth import gen_requests, write_requests_jsonl

    if a.stepwise_share is not None and a.flow != "mixed":
        print("yidi: --stepwise-share is for --flow mixed", file=sys.stderr)
        return 2
    n = write_requests_jsonl(a.out, gen_requests(a.world, a.n, seed=a.seed, start=a.start, days=a.days, flow=a.flow,
                                                 stepwise_share=a.stepwise_share))
    print(f"wrote {n} requests ({a.flow}) to {a.out}", file=sys.stderr)
    return 0


def _add_demo(sub) -> None:
    from engine.tools import demo

    d = demo.DemoOptions()
    s = sub.add_parser("demo", help="a national day: world, in-process hub, framed-TCP replay, summary and report")
    s.add_argument("--scale", type=float, default=1.0,
                   help=f"the day's size: 1.0 = about {demo.DAY_SETTLEMENTS:,} settlements (0.01 = 1,300)")
    s.add_argument("--seed", type=int, default=d.seed, help=f"world and day seed (default {d.seed})")
    s.add_argument("--provinces", type=int, default=d.provinces, help=f"(default {d.provinces})")
    s.add_argument("--catalogue", type=int, default=d.catalogue_per_province,
                   help=f"catalogue rows per province (default {d.catalogue_per_province:,})")
    s.add_argument("--persons", type=int, default=d.persons, help=f"(default {d.persons:,})")
    s.add_argument("--day", default=d.day, help=f"the simulated day (default {d.day})")
    s.add_argument("--cache", default=d.cache_dir, help=f"where worlds are cached (default {d.cache_dir})")
    s.add_argument("--data", help="keep the store in this new folder (default: a temporary one, removed)")
    s.add_argument("--store", metavar="URL", help="the store in this empty PostgreSQL database instead (kept)")
    s.add_argument("--report", default=d.report_dir, help=f"report folder (default ./{d.report_dir})")
    s.add_argument("--connections", type=int, default=d.connections,
                   help=f"framed connections per province platform, each signed in (default {d.connections})")
    s.add_argument("--in-flight", type=int, default=d.in_flight,
                   help=f"requests in flight in all, the day sent in order (default {d.in_flight}; 1: the hub sees "
                        "the stream's order)")
    s.add_argument("--keep-replies", action="store_true",
                   help="also write requests.jsonl and replies.jsonl to the report folder")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--loop", choices=("uvloop", "asyncio"), default=d.loop)
    s.add_argument("--flow", choices=("oneshot", "stepwise", "mixed"), default=d.flow,
                   help=f"how hospitals send the day's visits (default {d.flow}): oneshot, each bill in one "
                        "settlement (section 7); stepwise, registration, uploads, discharge and settlement "
                        "(section 11); mixed, half of the visits each way")
    s.set_defaults(fn=_cmd_demo)

    g = sub.add_parser("gen-world", help="write a synthetic national world folder (deterministic from --seed)")
    g.add_argument("--out", required=True, help="world folder to write")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--provinces", type=int, default=d.provinces)
    g.add_argument("--catalogue", type=int, default=d.catalogue_per_province, help="catalogue rows per province")
    g.add_argument("--persons", type=int, default=d.persons, help=f"up to {demo.PERSONS_MAX:,}")
    g.set_defaults(fn=_cmd_gen_world)

    q = sub.add_parser("gen-requests", help="write a synthetic request stream (JSON lines) against a world")
    q.add_argument("--world", required=True, help="world folder")
    q.add_argument("--n", type=int, required=True, help="number of requests")
    q.add_argument("--out", required=True, help="requests, one JSON envelope per line")
    q.add_argument("--seed", type=int, default=d.seed)
    q.add_argument("--start", default=d.day, help=f"first day (default {d.day})")
    q.add_argument("--days", type=int, default=1)
    q.add_argument("--flow", choices=("oneshot", "stepwise", "mixed"), default="oneshot",
                   help="how visits are sent: oneshot, a settlement with its fee lines inline (section 7; the "
                        "default, for compatibility: the same stream as before for the same seed); stepwise, as "
                        "hospital systems send them (section 11: register, upload, discharge, settle); mixed, a "
                        "share of visits each way")
    q.add_argument("--stepwise-share", type=float, default=None,
                   help="with --flow mixed: the share of visits sent step-wise (default 0.5)")
    q.set_defaults(fn=_cmd_gen_requests)


_LIGHT_COMMANDS = ("replay", "check", "check-world", "clear", "backup", "keys")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (and for `serve`, its --config file: engine.tools.config.ConfigError when refused)."""
    p = argparse.ArgumentParser(prog="yidi", description="Cross-region medical insurance settlement engine")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("replay", help="replay a request stream (docs/contract.md section 9)")
    r.add_argument("--world", required=True, help="world folder")
    r.add_argument("--in", dest="inp", required=True, help="requests, one JSON envelope per line")
    r.add_argument("--out", required=True, help="replies, one JSON line each")
    r.add_argument("--reference", action="store_true", help="use the plain-Python reference (slow; the oracle)")
    _store_arg(r, False, "keep the durable store in this folder (seeded when new, continued otherwise)")
    r.add_argument("--accept-world-change", action="store_true",
                   help="continue a store with a world of other persons or institutions than its own")
    r.add_argument("--maintenance", metavar="FILE",
                   help="maintenance windows (admdvs,begin,end,reason; contract section 12) on each request's "
                        "inf_time")
    r.set_defaults(fn=_cmd_replay)

    k = sub.add_parser("check", help="verify a store: ledger, accounts, persons against the journal")
    _store_arg(k, True, "data folder of the store")
    k.set_defaults(fn=_cmd_check)

    c = sub.add_parser("check-world", help="load and validate a world folder")
    c.add_argument("--world", required=True)
    c.set_defaults(fn=_cmd_check_world)

    _add_clear(sub)
    _add_backup(sub)
    _add_keys(sub)
    # serve, demo, gen-world and gen-requests read their defaults from modules that
    # import asyncio, uvloop and the rest of the server (about 0.3 s): their
    # parsers are built only when one of them (or the command list) is asked for.
    args = sys.argv[1:] if argv is None else argv
    cmd = next((x for x in args if not x.startswith("-")), None)
    if cmd not in _LIGHT_COMMANDS:
        serve_parser = _add_serve(sub)
        _add_demo(sub)
        if cmd == "serve":
            from engine.tools.config import apply_config, config_path

            path = config_path(serve_parser, args[args.index("serve") + 1:])
            if path is not None:  # the file's values become the flags' defaults: the command line wins
                apply_config(serve_parser, path)

    a = p.parse_args(argv)
    if getattr(a, "action", None) in ("add", "revoke") and not a.paasid:
        p.error(f"keys {a.action} needs --paasid")
    return a


def main(argv: list[str] | None = None) -> int:
    from engine.tools.config import ConfigError

    try:
        a = parse_args(argv)
    except ConfigError as e:
        print(f"yidi: --config {e}", file=sys.stderr)
        return 2
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
